using System.Buffers;

namespace Isr.BlockDevice;

/// <summary>
/// Buffered, blocking reader over the client stream, used only by the connection's own thread. Small headers
/// come from one large receive (a pipelined client sends many per syscall); large WRITE payloads bypass the
/// buffer and land directly in their own buffer.
/// </summary>
internal sealed class NbdInput : IDisposable
{
    private readonly Stream _stream;
    private byte[] _buffer;
    private int _start;
    private int _end;

    public NbdInput(Stream stream, int bufferSize = 128 * 1024)
    {
        _stream = stream;
        _buffer = ArrayPool<byte>.Shared.Rent(bufferSize);
    }

    public int Buffered => _end - _start;

    public ReadOnlySpan<byte> Span => _buffer.AsSpan(_start, _end - _start);

    /// <summary>Ensures <paramref name="count"/> bytes are buffered. False on a clean end of stream at a message boundary.</summary>
    public bool Fill(int count)
    {
        if (Buffered >= count) return true;
        if (_buffer.Length - _start < count)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, Buffered);
            _end -= _start;
            _start = 0;
        }
        while (Buffered < count)
        {
            int n = _stream.Read(_buffer, _end, _buffer.Length - _end);
            if (n == 0)
            {
                if (Buffered == 0) return false;
                throw new EndOfStreamException("Client closed the connection in the middle of a message.");
            }
            _end += n;
        }
        return true;
    }

    public void Consume(int count)
    {
        _start += count;
        if (_start == _end) _start = _end = 0;
    }

    public void ReadExactly(Span<byte> destination)
    {
        int take = Math.Min(Buffered, destination.Length);
        _buffer.AsSpan(_start, take).CopyTo(destination);
        Consume(take);
        if (take < destination.Length) _stream.ReadExactly(destination[take..]);
    }

    public byte[] ReadArray(int count)
    {
        var data = count == 0 ? [] : new byte[count];
        ReadExactly(data);
        return data;
    }

    /// <summary>Discards a payload we will not use (e.g. the data of a rejected WRITE).</summary>
    public void Skip(long count)
    {
        while (count > 0)
        {
            if (Buffered == 0 && !Fill(1))
                throw new EndOfStreamException("Client closed the connection in the middle of a payload.");
            int take = (int)Math.Min(count, Buffered);
            Consume(take);
            count -= take;
        }
    }

    public void Dispose()
    {
        var buffer = Interlocked.Exchange(ref _buffer, []);
        if (buffer.Length > 0) ArrayPool<byte>.Shared.Return(buffer);
    }
}
