namespace Isr.BlockDevice;

/// <summary>
/// Bounds the requests and payload bytes a connection holds at once. The connection thread blocks in
/// <see cref="Acquire"/> when full (so it stops reading from the client); each reply sent or dropped releases.
/// </summary>
internal sealed class InFlightLimiter
{
    private readonly object _gate = new();
    private readonly int _maxCount;
    private readonly long _maxBytes;
    private int _count;
    private long _bytes;
    private bool _cancelled;

    public InFlightLimiter(int maxCount, long maxBytes)
    {
        _maxCount = Math.Max(1, maxCount);
        _maxBytes = Math.Max(1, maxBytes);
    }

    /// <summary>Reserves one request slot and <paramref name="bytes"/>. An oversized request still runs, alone.</summary>
    public void Acquire(long bytes)
    {
        lock (_gate)
        {
            while (_count >= _maxCount || (_count > 0 && _bytes + bytes > _maxBytes))
            {
                if (_cancelled) throw new OperationCanceledException("Connection aborted.");
                Monitor.Wait(_gate);
            }
            _count++;
            _bytes += bytes;
        }
    }

    /// <summary>Returns one request slot and its bytes.</summary>
    public void Release(long bytes)
    {
        lock (_gate)
        {
            _count--;
            _bytes -= bytes;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Wakes a blocked <see cref="Acquire"/> with an exception; used when the connection aborts.</summary>
    public void Cancel()
    {
        lock (_gate)
        {
            _cancelled = true;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Blocks until every acquired slot has been released.</summary>
    public void Drain()
    {
        lock (_gate)
        {
            while (_count > 0) Monitor.Wait(_gate);
        }
    }
}
