using System.Buffers.Binary;
using System.Text;
using static Isr.BlockDevice.NbdConstants;

namespace Isr.BlockDevice;

/// <summary>What option haggling settled for the transmission phase.</summary>
internal sealed record NbdSession(bool StructuredReplies, bool BaseAllocation, ushort TransmissionFlags);

/// <summary>
/// Fixed newstyle option haggling for our single export. Returns null when the client aborted, asked for an
/// export we do not have via NBD_OPT_EXPORT_NAME (which cannot be answered with an error), or broke protocol.
/// Runs on the connection's own thread with blocking I/O.
/// </summary>
internal sealed class NbdHandshake
{
    private readonly NbdInput _input;
    private readonly Stream _stream;
    private readonly IBlockDevice _device;
    private readonly string _exportName;
    private readonly NbdServerOptions _options;
    private readonly Action<string>? _log;
    private bool _structured;
    private bool _baseAllocation;

    public NbdHandshake(NbdInput input, Stream stream, IBlockDevice device, string exportName, NbdServerOptions options)
    {
        _input = input;
        _stream = stream;
        _device = device;
        _exportName = exportName;
        _options = options;
        _log = options.Log;
    }

    private ushort TransmissionFlags
    {
        get
        {
            ushort flags = TxHasFlags | TxSendFlush | TxSendFua | TxSendTrim | TxSendWriteZeroes;
            if (_structured) flags |= TxSendDf; // DF only means something with structured replies
            if (_options.ReadOnly) flags |= TxReadOnly;
            return flags;
        }
    }

    public NbdSession? Negotiate()
    {
        var greeting = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, InitMagic);
        BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), OptionMagic);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), FlagFixedNewstyle | FlagNoZeroes);
        _stream.Write(greeting);

        if (!_input.Fill(4)) return null;
        uint clientFlags = BinaryPrimitives.ReadUInt32BigEndian(_input.Span);
        _input.Consume(4);
        if ((clientFlags & ~(ClientFlagFixedNewstyle | ClientFlagNoZeroes)) != 0)
        {
            _log?.Invoke($"nbd: client sent unknown handshake flags 0x{clientFlags:x}; dropping");
            return null;
        }
        bool noZeroes = (clientFlags & ClientFlagNoZeroes) != 0;

        while (true)
        {
            if (!_input.Fill(16)) return null;
            ulong magic = BinaryPrimitives.ReadUInt64BigEndian(_input.Span);
            uint option = BinaryPrimitives.ReadUInt32BigEndian(_input.Span[8..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(_input.Span[12..]);
            _input.Consume(16);
            if (magic != OptionMagic)
            {
                _log?.Invoke("nbd: bad option magic; dropping client");
                return null;
            }
            if (length > MaxOptionLength)
            {
                // Too large to be any option we know; not worth reading.
                _log?.Invoke($"nbd: option {option} with {length} bytes of data; dropping client");
                return null;
            }
            byte[] data = _input.ReadArray((int)length);

            switch (option)
            {
                case OptExportName:
                {
                    string name = DecodeString(data);
                    if (!IsOurExport(name))
                    {
                        _log?.Invoke($"nbd: client asked for unknown export '{name}' via EXPORT_NAME; dropping");
                        return null;
                    }
                    var reply = new byte[noZeroes ? 10 : 134];
                    BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)_device.Size);
                    BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), TransmissionFlags);
                    _stream.Write(reply);
                    return new NbdSession(_structured, _baseAllocation, TransmissionFlags);
                }
                case OptAbort:
                    try
                    {
                        Reply(option, RepAck, []);
                    }
                    catch (IOException)
                    {
                        // The client may close without waiting for our ACK; that is allowed.
                    }
                    return null;
                case OptList:
                    if (length != 0)
                    {
                        Error(option, RepErrInvalid, "NBD_OPT_LIST takes no data");
                        break;
                    }
                    Reply(option, RepServer, ServerEntry());
                    Reply(option, RepAck, []);
                    break;
                case OptInfo:
                case OptGo:
                    if (Info(option, data) && option == OptGo)
                        return new NbdSession(_structured, _baseAllocation, TransmissionFlags);
                    break;
                case OptStructuredReply:
                    if (length != 0)
                    {
                        Error(option, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
                        break;
                    }
                    _structured = true;
                    Reply(option, RepAck, []);
                    break;
                case OptListMetaContext:
                case OptSetMetaContext:
                    MetaContext(option, data);
                    break;
                default:
                    // Includes STARTTLS: this server speaks plain NBD over a local Unix socket.
                    Error(option, RepErrUnsup, $"option {option} is not supported");
                    break;
            }
        }
    }

    /// <summary>The empty name is the spec's "default export", which is ours.</summary>
    private bool IsOurExport(string name) => name.Length == 0 || name == _exportName;

    private bool Info(uint option, byte[] data)
    {
        // u32 name length | name | u16 request count | u16 requests...
        if (data.Length < 6)
        {
            Error(option, RepErrInvalid, "truncated INFO/GO request");
            return false;
        }
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 6)
        {
            Error(option, RepErrInvalid, "export name overruns the option");
            return false;
        }
        string name = DecodeString(data.AsSpan(4, (int)nameLength));
        int pos = 4 + (int)nameLength;
        int requestCount = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(pos));
        pos += 2;
        if (data.Length != pos + 2 * requestCount)
        {
            Error(option, RepErrInvalid, "information request list has the wrong length");
            return false;
        }
        if (!IsOurExport(name))
        {
            _log?.Invoke($"nbd: client asked for unknown export '{name}'");
            Error(option, RepErrUnknown, $"no export named '{name}'");
            return false;
        }
        bool wantName = false, wantDescription = false;
        for (int i = 0; i < requestCount; i++)
        {
            ushort info = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(pos + 2 * i));
            wantName |= info == InfoName;
            wantDescription |= info == InfoDescription;
        }

        var export = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(export, InfoExport);
        BinaryPrimitives.WriteUInt64BigEndian(export.AsSpan(2), (ulong)_device.Size);
        BinaryPrimitives.WriteUInt16BigEndian(export.AsSpan(10), TransmissionFlags);
        Reply(option, RepInfo, export);

        // Always sent (minimum 1 is safe for clients that did not ask); the preferred size steers QEMU's I/O.
        var blockSize = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(blockSize, InfoBlockSize);
        int max = _options.MaxPayloadSize;
        uint preferred = (uint)Math.Clamp(_device.PreferredBlockSize, Math.Max(512, _options.MinimumBlockSize), max);
        BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(2), (uint)_options.MinimumBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(6), preferred);
        BinaryPrimitives.WriteUInt32BigEndian(blockSize.AsSpan(10), (uint)max);
        Reply(option, RepInfo, blockSize);

        if (wantName)
            Reply(option, RepInfo, InfoString(InfoName, _exportName));
        if (wantDescription && !string.IsNullOrEmpty(_options.Description))
            Reply(option, RepInfo, InfoString(InfoDescription, _options.Description));

        Reply(option, RepAck, []);
        return true;
    }

    private void MetaContext(uint option, byte[] data)
    {
        if (!_structured)
        {
            Error(option, RepErrInvalid, "negotiate structured replies first");
            return;
        }
        // u32 name length | name | u32 query count | (u32 query length | query)...
        var queries = new List<string>();
        string? name = null;
        int pos = 0;
        bool valid = TryReadString(data, ref pos, out name) && data.Length - pos >= 4;
        if (valid)
        {
            uint count = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(pos));
            pos += 4;
            for (uint i = 0; i < count && valid; i++)
            {
                valid = TryReadString(data, ref pos, out var query);
                if (valid) queries.Add(query!);
            }
            valid &= pos == data.Length;
        }
        if (!valid)
        {
            Error(option, RepErrInvalid, "malformed meta context request");
            return;
        }
        if (!IsOurExport(name!))
        {
            Error(option, RepErrUnknown, $"no export named '{name}'");
            return;
        }

        bool match;
        if (option == OptSetMetaContext)
        {
            // Replaces the previous selection; only an exact name selects a context.
            _baseAllocation = match = queries.Contains(BaseAllocation);
        }
        else
        {
            // Listing: no query means "everything", and a bare namespace lists its contexts.
            match = queries.Count == 0 || queries.Contains(BaseAllocation) || queries.Contains("base:");
        }
        if (match)
        {
            var context = new byte[4 + BaseAllocation.Length];
            uint id = option == OptSetMetaContext ? BaseAllocationContextId : 0; // LIST ids are reserved as 0
            BinaryPrimitives.WriteUInt32BigEndian(context, id);
            Encoding.ASCII.GetBytes(BaseAllocation, context.AsSpan(4));
            Reply(option, RepMetaContext, context);
        }
        Reply(option, RepAck, []);
    }

    private static bool TryReadString(byte[] data, ref int pos, out string? value)
    {
        value = null;
        if (data.Length - pos < 4) return false;
        uint length = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(pos));
        if (length > MaxStringLength || length > data.Length - pos - 4) return false;
        value = DecodeString(data.AsSpan(pos + 4, (int)length));
        pos += 4 + (int)length;
        return true;
    }

    private byte[] ServerEntry()
    {
        byte[] name = Encoding.UTF8.GetBytes(_exportName);
        byte[] description = Encoding.UTF8.GetBytes(_options.Description ?? "");
        var entry = new byte[4 + name.Length + description.Length];
        BinaryPrimitives.WriteUInt32BigEndian(entry, (uint)name.Length);
        name.CopyTo(entry, 4);
        description.CopyTo(entry, 4 + name.Length);
        return entry;
    }

    private static byte[] InfoString(ushort type, string value)
    {
        byte[] text = Encoding.UTF8.GetBytes(value);
        var info = new byte[2 + text.Length];
        BinaryPrimitives.WriteUInt16BigEndian(info, type);
        text.CopyTo(info, 2);
        return info;
    }

    private static string DecodeString(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);

    private void Error(uint option, uint error, string message) => Reply(option, error, Encoding.UTF8.GetBytes(message));

    private void Reply(uint option, uint type, byte[] data)
    {
        var reply = new byte[20 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(reply, OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), type);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), (uint)data.Length);
        data.CopyTo(reply, 20);
        _stream.Write(reply);
    }
}
