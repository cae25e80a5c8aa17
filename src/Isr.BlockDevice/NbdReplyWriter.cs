using System.Buffers;

namespace Isr.BlockDevice;

/// <summary>
/// Serializes replies onto the client stream with blocking writes. Requests complete concurrently and out of
/// order; each reply (possibly several structured chunks in one buffer) reaches the wire unbroken.
/// A reply completed on the connection thread is written inline when nothing is queued (no thread hop:
/// lowest latency). Replies completed elsewhere (e.g. thread-pool continuations of async device calls) go
/// to a dedicated writer thread, so a client that stops reading blocks only its own threads.
/// Each reply owns a pooled buffer and an <see cref="InFlightLimiter"/> slot, both released once written or dropped.
/// </summary>
internal sealed class NbdReplyWriter
{
    private readonly record struct Reply(byte[] Buffer, int Length, long Charge);

    private const int CoalesceLimit = 64 * 1024;

    private readonly Stream _stream;
    private readonly InFlightLimiter _limiter;
    private readonly Action<Exception> _onFailure;
    private readonly int _connectionThreadId;
    private readonly object _gate = new();
    private readonly Queue<Reply> _queue = new();
    private readonly Thread _thread;
    private bool _writing;
    private bool _stopping;
    private bool _failed;

    public NbdReplyWriter(Stream stream, InFlightLimiter limiter, Action<Exception> onFailure)
    {
        _stream = stream;
        _limiter = limiter;
        _onFailure = onFailure;
        _connectionThreadId = Environment.CurrentManagedThreadId;
        _thread = new Thread(WriterLoop) { IsBackground = true, Name = "nbd-reply-writer" };
        _thread.Start();
    }

    /// <summary>Queues (or writes) a reply; takes ownership of the pooled <paramref name="buffer"/> and the limiter charge.</summary>
    public void Send(byte[] buffer, int length, long charge)
    {
        var reply = new Reply(buffer, length, charge);
        lock (_gate)
        {
            if (_failed)
            {
                Drop(reply);
                return;
            }
            if (_writing || _queue.Count > 0 || Environment.CurrentManagedThreadId != _connectionThreadId)
            {
                _queue.Enqueue(reply);
                Monitor.PulseAll(_gate);
                return;
            }
            _writing = true;
        }
        Write(reply);
    }

    /// <summary>Drops all queued and future replies (the connection is being torn down).</summary>
    public void Fail()
    {
        lock (_gate)
        {
            _failed = true;
            while (_queue.TryDequeue(out var reply)) Drop(reply);
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Stops the writer thread once the queue is empty and waits for it.</summary>
    public void Stop()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        _thread.Join();
    }

    private void WriterLoop()
    {
        var batch = new List<Reply>();
        byte[] scratch = ArrayPool<byte>.Shared.Rent(CoalesceLimit);
        try
        {
            while (true)
            {
                lock (_gate)
                {
                    while (_writing || _queue.Count == 0)
                    {
                        if (_stopping && _queue.Count == 0 && !_writing) return;
                        Monitor.Wait(_gate);
                    }
                    while (_queue.TryDequeue(out var reply)) batch.Add(reply);
                    _writing = true;
                }
                WriteBatch(batch, scratch);
                batch.Clear();
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    /// <summary>Small replies (write acks, holes, errors) are coalesced into one write; big ones go out directly.</summary>
    private void WriteBatch(List<Reply> batch, byte[] scratch)
    {
        int used = 0;
        Exception? failure = null;
        foreach (var reply in batch)
        {
            try
            {
                if (failure is null)
                {
                    if (used > 0 && used + reply.Length > CoalesceLimit)
                    {
                        _stream.Write(scratch, 0, used);
                        used = 0;
                    }
                    if (reply.Length <= CoalesceLimit / 4)
                    {
                        reply.Buffer.AsSpan(0, reply.Length).CopyTo(scratch.AsSpan(used));
                        used += reply.Length;
                    }
                    else
                    {
                        if (used > 0)
                        {
                            _stream.Write(scratch, 0, used);
                            used = 0;
                        }
                        _stream.Write(reply.Buffer, 0, reply.Length);
                    }
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        }
        try
        {
            if (failure is null && used > 0) _stream.Write(scratch, 0, used);
        }
        catch (Exception e)
        {
            failure = e;
        }
        // Coalesced replies count as sent only now; release everything together.
        foreach (var reply in batch) Drop(reply);
        Finish(failure);
    }

    private void Write(Reply reply)
    {
        Exception? failure = null;
        try
        {
            _stream.Write(reply.Buffer, 0, reply.Length);
        }
        catch (Exception e)
        {
            failure = e;
        }
        Drop(reply);
        Finish(failure);
    }

    private void Finish(Exception? failure)
    {
        lock (_gate)
        {
            _writing = false;
            Monitor.PulseAll(_gate);
        }
        if (failure is not null)
        {
            Fail();
            _onFailure(failure);
        }
    }

    private void Drop(Reply reply)
    {
        ArrayPool<byte>.Shared.Return(reply.Buffer);
        _limiter.Release(reply.Charge);
    }
}
