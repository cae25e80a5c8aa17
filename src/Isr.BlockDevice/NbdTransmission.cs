using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using static Isr.BlockDevice.NbdConstants;

namespace Isr.BlockDevice;

/// <summary>
/// The transmission phase of one connection. The connection thread parses requests with blocking reads and
/// starts a handler for each without awaiting it, so requests run concurrently (bounded by
/// <see cref="InFlightLimiter"/>) and reply as they complete, in any order. A handler whose device call
/// completes synchronously finishes on the connection thread and its reply is written inline. Every handler
/// ends in exactly one <see cref="NbdReplyWriter.Send"/> (which releases its limiter slot) or, if the
/// connection is being torn down, one direct release. Device failures become error replies, never crashes.
/// </summary>
internal sealed class NbdTransmission
{
    private readonly IBlockDevice _device;
    private readonly NbdSession _session;
    private readonly NbdInput _input;
    private readonly InFlightLimiter _limiter;
    private readonly NbdReplyWriter _writer;
    private readonly Action<string>? _log;
    private readonly long _size;
    private readonly int _maxPayload;
    private readonly bool _readOnly;
    private readonly CancellationTokenSource _abort;
    private readonly Action _closeTransport;
    private int _aborted;

    private NbdTransmission(IBlockDevice device, NbdSession session, NbdInput input, Stream stream,
        NbdServerOptions options, CancellationTokenSource abort, Action closeTransport)
    {
        _device = device;
        _session = session;
        _input = input;
        _limiter = new InFlightLimiter(options.MaxInFlightRequests, options.MaxInFlightBytes);
        _writer = new NbdReplyWriter(stream, _limiter, e => Abort($"reply write failed: {e.Message}"));
        _log = options.Log;
        _size = device.Size;
        _maxPayload = options.MaxPayloadSize;
        _readOnly = options.ReadOnly;
        _abort = abort;
        _closeTransport = closeTransport;
    }

    /// <summary>
    /// Serves requests on the calling (connection) thread until the client disconnects, breaks protocol, or
    /// <paramref name="ct"/> fires; returns once every started request has replied or been dropped.
    /// </summary>
    public static void Run(IBlockDevice device, NbdSession session, NbdInput input, Stream stream,
        NbdServerOptions options, Action closeTransport, CancellationToken ct)
    {
        using var abort = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var transmission = new NbdTransmission(device, session, input, stream, options, abort, closeTransport);
        using var registration = ct.Register(() => transmission.Abort(null));
        try
        {
            transmission.ReadLoop();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            transmission.Abort(Volatile.Read(ref transmission._aborted) == 0 ? $"connection lost: {e.Message}" : null);
        }
        finally
        {
            // Outstanding requests finish (or observe the abort) before the stream and buffers go away.
            transmission._limiter.Drain();
            transmission._writer.Stop();
        }
    }

    /// <summary>Hard disconnect: cancel device calls, drop pending replies, close the transport to unblock I/O.</summary>
    private void Abort(string? reason)
    {
        if (Interlocked.Exchange(ref _aborted, 1) != 0) return;
        if (reason is not null) _log?.Invoke($"nbd: {reason}; disconnecting client");
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
        _writer.Fail();
        _limiter.Cancel();
        try
        {
            _closeTransport();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
        }
    }

    private void ReadLoop()
    {
        while (true)
        {
            if (!_input.Fill(RequestHeaderSize))
            {
                _log?.Invoke("nbd: client closed the connection");
                return;
            }
            ReadOnlySpan<byte> header = _input.Span;
            uint magic = BinaryPrimitives.ReadUInt32BigEndian(header);
            ushort flags = BinaryPrimitives.ReadUInt16BigEndian(header[4..]);
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(header[6..]);
            ulong handle = BinaryPrimitives.ReadUInt64BigEndian(header[8..]);
            ulong offset = BinaryPrimitives.ReadUInt64BigEndian(header[16..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(header[24..]);
            _input.Consume(RequestHeaderSize);

            if (magic != RequestMagic)
            {
                // We cannot find the next request boundary; the only safe answer is a hard disconnect.
                Abort($"bad request magic 0x{magic:x8}");
                return;
            }
            if (type == CmdDisc)
            {
                _log?.Invoke("nbd: client disconnected (NBD_CMD_DISC)");
                return; // Run drains outstanding requests before the stream closes.
            }

            uint error = Validate(type, flags, offset, length, out string? reason);
            if (error != 0)
            {
                _log?.Invoke($"nbd: rejecting command {type} at {offset}+{length}: {reason}");
                if (type == CmdWrite)
                {
                    if (length > _maxPayload)
                    {
                        // Skipping gigabytes is no better than making the client reconnect.
                        _limiter.Acquire(0);
                        SendError(handle, error, reason, 0);
                        _limiter.Drain();
                        Abort("oversized write");
                        return;
                    }
                    _input.Skip(length);
                }
                _limiter.Acquire(0);
                SendError(handle, error, reason, 0);
                continue;
            }

            if (type == CmdWrite)
            {
                _limiter.Acquire(length);
                byte[] payload = ArrayPool<byte>.Shared.Rent((int)Math.Max(length, 1));
                try
                {
                    _input.ReadExactly(payload.AsSpan(0, (int)length));
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(payload);
                    _limiter.Release(length);
                    throw;
                }
                _ = HandleWriteAsync(handle, (long)offset, (int)length, (flags & CmdFlagFua) != 0, payload);
                continue;
            }

            long charge = type == CmdRead ? length : 0;
            _limiter.Acquire(charge);
            _ = type switch
            {
                CmdRead => HandleReadAsync(handle, (long)offset, (int)length, flags),
                CmdBlockStatus => HandleBlockStatusAsync(handle, (long)offset, length, flags),
                _ => HandleCommandAsync(handle, type, (long)offset, length, flags),
            };
        }
    }

    /// <summary>Checks a request against the spec and the export; 0 when it may proceed.</summary>
    private uint Validate(ushort type, ushort flags, ulong offset, uint length, out string? reason)
    {
        ushort allowed = CmdFlagFua; // the spec requires FUA to be accepted on every command
        bool inBounds = offset <= (ulong)_size && length <= (ulong)_size - offset;
        reason = null;
        switch (type)
        {
            case CmdRead:
                if (_session.StructuredReplies) allowed |= CmdFlagDf;
                if (length > _maxPayload) { reason = "read larger than the maximum block size"; return EInval; }
                if (!inBounds) { reason = "read beyond the end of the export"; return EInval; }
                break;
            case CmdWrite:
                if (length > _maxPayload) { reason = "write larger than the maximum block size"; return EInval; }
                if (_readOnly) { reason = "export is read-only"; return EPerm; }
                if (!inBounds) { reason = "write beyond the end of the export"; return ENoSpc; }
                break;
            case CmdFlush:
                if (offset != 0 || length != 0) { reason = "flush offset and length must be zero"; return EInval; }
                break;
            case CmdTrim:
                if (_readOnly) { reason = "export is read-only"; return EPerm; }
                if (!inBounds) { reason = "trim beyond the end of the export"; return EInval; }
                break;
            case CmdWriteZeroes:
                allowed |= CmdFlagNoHole;
                if (_readOnly) { reason = "export is read-only"; return EPerm; }
                if (!inBounds) { reason = "write beyond the end of the export"; return ENoSpc; }
                break;
            case CmdBlockStatus:
                allowed |= CmdFlagReqOne;
                if (!_session.BaseAllocation) { reason = "no metadata context was negotiated"; return EInval; }
                if (length == 0) { reason = "block status length must be nonzero"; return EInval; }
                if (!inBounds) { reason = "block status beyond the end of the export"; return EInval; }
                break;
            default:
                reason = $"unknown command {type}";
                return EInval;
        }
        if ((flags & ~allowed) != 0)
        {
            reason = $"unsupported flags 0x{flags:x} for command {type}";
            return EInval;
        }
        return 0;
    }

    private async Task HandleReadAsync(ulong handle, long offset, int length, ushort flags)
    {
        try
        {
            if (_session.StructuredReplies && length > 0 && (flags & CmdFlagDf) == 0)
                await SparseReadAsync(handle, offset, length).ConfigureAwait(false);
            else
                await DenseReadAsync(handle, offset, length).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Unexpected(e, length);
        }
    }

    /// <summary>All bytes in one reply: a simple reply, or one OFFSET_DATA chunk (zero-length reads get NONE).</summary>
    private async Task DenseReadAsync(ulong handle, long offset, int length)
    {
        CancellationToken ct = _abort.Token;
        bool structured = _session.StructuredReplies;
        int headerSize = structured ? StructuredHeaderSize + 8 : SimpleReplySize;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(headerSize + length);
        try
        {
            if (length > 0) await _device.ReadAsync(offset, buffer.AsMemory(headerSize, length), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            SendDeviceError(handle, CmdRead, e, length);
            return;
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
        if (!structured)
        {
            WriteSimpleReply(buffer, 0, handle);
        }
        else if (length == 0)
        {
            WriteChunkHeader(buffer, ReplyFlagDone, ReplyTypeNone, handle, 0);
            headerSize = StructuredHeaderSize;
        }
        else
        {
            WriteChunkHeader(buffer, ReplyFlagDone, ReplyTypeOffsetData, handle, (uint)(8 + length));
            BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(StructuredHeaderSize), (ulong)offset);
        }
        _writer.Send(buffer, headerSize + length, length);
    }

    /// <summary>
    /// Structured read that answers zero extents with OFFSET_HOLE chunks, so sparse regions cost neither a
    /// device read nor wire bytes. All chunks are laid out in one buffer and sent with one write.
    /// </summary>
    private async Task SparseReadAsync(ulong handle, long offset, int length)
    {
        CancellationToken ct = _abort.Token;
        IReadOnlyList<Extent>? map = null;
        try
        {
            map = await _device.MapAsync(offset, length, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            _log?.Invoke($"nbd: map failed at {offset}+{length}, reading as data: {e.Message}");
        }

        const int MaxChunks = 256; // beyond this, chunk overhead beats skipping holes
        Extent[] runs = ArrayPool<Extent>.Shared.Rent(MaxChunks);
        int count = Coalesce(map, length, runs);
        if (count == 0 || (count == 1 && !runs[0].IsZero))
        {
            ArrayPool<Extent>.Shared.Return(runs);
            await DenseReadAsync(handle, offset, length).ConfigureAwait(false);
            return;
        }

        long total = 0;
        for (int i = 0; i < count; i++)
            total += runs[i].IsZero ? StructuredHeaderSize + 12 : StructuredHeaderSize + 8 + runs[i].Length;
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)total);

        int pos = 0, dataRuns = 0;
        long at = offset;
        ValueTask first = default;
        ValueTask[]? more = null;
        for (int i = 0; i < count; i++)
        {
            ushort chunkFlags = i == count - 1 ? ReplyFlagDone : (ushort)0;
            int runLength = (int)runs[i].Length;
            if (runs[i].IsZero)
            {
                WriteChunkHeader(buffer.AsSpan(pos), chunkFlags, ReplyTypeOffsetHole, handle, 12);
                BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(pos + StructuredHeaderSize), (ulong)at);
                BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(pos + StructuredHeaderSize + 8), (uint)runLength);
                pos += StructuredHeaderSize + 12;
            }
            else
            {
                WriteChunkHeader(buffer.AsSpan(pos), chunkFlags, ReplyTypeOffsetData, handle, (uint)(8 + runLength));
                BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(pos + StructuredHeaderSize), (ulong)at);
                pos += StructuredHeaderSize + 8;
                // Data runs are independent: read them concurrently.
                ValueTask read = StartRead(at, buffer.AsMemory(pos, runLength), ct);
                if (dataRuns == 0) first = read;
                else (more ??= new ValueTask[count])[dataRuns - 1] = read;
                dataRuns++;
                pos += runLength;
            }
            at += runLength;
        }
        ArrayPool<Extent>.Shared.Return(runs);

        Exception? failure = null;
        for (int i = 0; i < dataRuns; i++)
        {
            try
            {
                await (i == 0 ? first : more![i - 1]).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                failure ??= e; // keep awaiting: every read must finish before the buffer goes back
            }
        }
        if (failure is not null)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            if (ct.IsCancellationRequested) throw new OperationCanceledException(ct);
            SendDeviceError(handle, CmdRead, failure, length);
            return;
        }
        _writer.Send(buffer, pos, length);
    }

    private ValueTask StartRead(long offset, Memory<byte> destination, CancellationToken ct)
    {
        try
        {
            return _device.ReadAsync(offset, destination, ct);
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>
    /// Merges a device map into runs of alternating kind covering exactly <paramref name="length"/> bytes.
    /// Returns 0 when the map is unusable (missing, inconsistent, or too fragmented): read it all as data.
    /// </summary>
    private static int Coalesce(IReadOnlyList<Extent>? map, long length, Extent[] runs)
    {
        if (map is null) return 0;
        int count = 0;
        long covered = 0;
        for (int i = 0; i < map.Count && covered < length; i++)
        {
            long runLength = Math.Min(map[i].Length, length - covered);
            if (runLength <= 0) continue;
            covered += runLength;
            if (count > 0 && runs[count - 1].IsZero == map[i].IsZero)
                runs[count - 1] = runs[count - 1] with { Length = runs[count - 1].Length + runLength };
            else if (count == runs.Length)
                return 0;
            else
                runs[count++] = new Extent(runLength, map[i].IsZero);
        }
        return covered == length ? count : 0;
    }

    private async Task HandleWriteAsync(ulong handle, long offset, int length, bool fua, byte[] payload)
    {
        CancellationToken ct = _abort.Token;
        try
        {
            try
            {
                await _device.WriteAsync(offset, payload.AsMemory(0, length), fua, ct).ConfigureAwait(false);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(payload);
            }
            SendSuccess(handle, length);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            SendDeviceError(handle, CmdWrite, e, length);
        }
        catch (Exception e)
        {
            Unexpected(e, length);
        }
    }

    private async Task HandleCommandAsync(ulong handle, ushort type, long offset, uint length, ushort flags)
    {
        CancellationToken ct = _abort.Token;
        bool fua = (flags & CmdFlagFua) != 0;
        try
        {
            switch (type)
            {
                case CmdFlush:
                    await _device.FlushAsync(ct).ConfigureAwait(false);
                    break;
                case CmdTrim:
                    if (length > 0) await _device.TrimAsync(offset, length, ct).ConfigureAwait(false);
                    // Trim has no durability flag of its own; FUA means the discard must be persisted.
                    if (fua) await _device.FlushAsync(ct).ConfigureAwait(false);
                    break;
                case CmdWriteZeroes:
                    if (length > 0) await _device.WriteZeroesAsync(offset, length, fua, ct).ConfigureAwait(false);
                    break;
            }
            SendSuccess(handle, 0);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            SendDeviceError(handle, type, e, 0);
        }
        catch (Exception e)
        {
            Unexpected(e, 0);
        }
    }

    private async Task HandleBlockStatusAsync(ulong handle, long offset, uint length, ushort flags)
    {
        CancellationToken ct = _abort.Token;
        try
        {
            IReadOnlyList<Extent>? map = null;
            try
            {
                map = await _device.MapAsync(offset, length, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                // The spec allows answering "allocated, contents unknown" instead of failing.
                _log?.Invoke($"nbd: map failed at {offset}+{length}: {e.Message}");
            }
            bool one = (flags & CmdFlagReqOne) != 0;

            // First pass counts descriptors; second writes them (no intermediate list).
            int count = WriteDescriptors(map, length, one, Span<byte>.Empty);
            int payload = 4 + 8 * count;
            byte[] buffer = ArrayPool<byte>.Shared.Rent(StructuredHeaderSize + payload);
            WriteChunkHeader(buffer, ReplyFlagDone, ReplyTypeBlockStatus, handle, (uint)payload);
            BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(StructuredHeaderSize), BaseAllocationContextId);
            WriteDescriptors(map, length, one, buffer.AsSpan(StructuredHeaderSize + 4, 8 * count));
            _writer.Send(buffer, StructuredHeaderSize + payload, 0);
        }
        catch (Exception e)
        {
            Unexpected(e, 0);
        }
    }

    /// <summary>Writes (or, with an empty span, counts) merged base:allocation descriptors covering the request.</summary>
    private static int WriteDescriptors(IReadOnlyList<Extent>? map, uint length, bool one, Span<byte> output)
    {
        bool write = !output.IsEmpty;
        int count = 0;
        long covered = 0;
        uint pendingLength = 0, pendingFlags = 0;
        int mapCount = map?.Count ?? 0;
        for (int i = 0; i <= mapCount && covered < length; i++)
        {
            long runLength;
            uint state;
            if (i < mapCount)
            {
                runLength = Math.Min(map![i].Length, length - covered);
                state = map[i].IsZero ? StateHole | StateZero : 0;
            }
            else
            {
                runLength = length - covered; // device under-reported: the rest is "unknown" (0)
                state = 0;
            }
            if (runLength <= 0) continue;
            covered += runLength;
            if (pendingLength > 0 && state == pendingFlags)
            {
                pendingLength += (uint)runLength;
                continue;
            }
            if (pendingLength > 0)
            {
                if (write) WriteDescriptor(output, count, pendingLength, pendingFlags);
                count++;
                if (one) return count;
            }
            pendingLength = (uint)runLength;
            pendingFlags = state;
        }
        if (pendingLength > 0)
        {
            if (write) WriteDescriptor(output, count, pendingLength, pendingFlags);
            count++;
        }
        return count;
    }

    private static void WriteDescriptor(Span<byte> output, int index, uint length, uint flags)
    {
        BinaryPrimitives.WriteUInt32BigEndian(output[(8 * index)..], length);
        BinaryPrimitives.WriteUInt32BigEndian(output[(8 * index + 4)..], flags);
    }

    private void SendSuccess(ulong handle, long charge)
    {
        byte[] reply = ArrayPool<byte>.Shared.Rent(SimpleReplySize);
        WriteSimpleReply(reply, 0, handle);
        _writer.Send(reply, SimpleReplySize, charge);
    }

    private void SendDeviceError(ulong handle, ushort type, Exception e, long charge)
    {
        _log?.Invoke($"nbd: device error on command {type}: {e.GetType().Name}: {e.Message}");
        SendError(handle, EIo, "I/O error", charge);
    }

    /// <summary>Error reply: structured (with a message) when negotiated, as READ then requires; else simple.</summary>
    private void SendError(ulong handle, uint error, string? message, long charge)
    {
        if (!_session.StructuredReplies)
        {
            byte[] simple = ArrayPool<byte>.Shared.Rent(SimpleReplySize);
            WriteSimpleReply(simple, error, handle);
            _writer.Send(simple, SimpleReplySize, charge);
            return;
        }
        byte[] text = message is null ? [] : Encoding.UTF8.GetBytes(message);
        int messageLength = Math.Min(text.Length, 1024);
        int size = StructuredHeaderSize + 6 + messageLength;
        byte[] reply = ArrayPool<byte>.Shared.Rent(size);
        WriteChunkHeader(reply, ReplyFlagDone, ReplyTypeError, handle, (uint)(6 + messageLength));
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(StructuredHeaderSize), error);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(StructuredHeaderSize + 4), (ushort)messageLength);
        text.AsSpan(0, messageLength).CopyTo(reply.AsSpan(StructuredHeaderSize + 6));
        _writer.Send(reply, size, charge);
    }

    /// <summary>A handler ended without a reply (abort, or a bug): free its slot; a bug costs this connection only.</summary>
    private void Unexpected(Exception e, long charge)
    {
        _limiter.Release(charge);
        if (e is OperationCanceledException && _abort.IsCancellationRequested) return;
        Abort($"request handler failed: {e}");
    }

    private static void WriteSimpleReply(Span<byte> buffer, uint error, ulong handle)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], error);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], handle);
    }

    private static void WriteChunkHeader(Span<byte> buffer, ushort flags, ushort type, ulong handle, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[4..], flags);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], handle);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[16..], length);
    }
}
