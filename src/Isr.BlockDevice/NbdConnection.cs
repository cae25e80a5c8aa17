using System.Net.Sockets;

namespace Isr.BlockDevice;

/// <summary>
/// One client, start to finish, on a dedicated thread with blocking I/O. Blocking reads let the kernel wake
/// the very thread that handles the request, with no epoll-to-thread-pool hop: at queue depth 1 (a VM
/// reading holes, say) that hop is a large part of each request's latency. A connection costs two threads
/// (this one and its reply writer), which is cheap for the handful of clients a VM opens.
/// </summary>
internal static class NbdConnection
{
    /// <param name="closeTransport">Closes the underlying transport; called to abort (unblocks pending reads and writes).</param>
    public static Task RunAsync(Stream stream, Action closeTransport, IBlockDevice device, string exportName,
        NbdServerOptions options, CancellationToken ct)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                Run(stream, closeTransport, device, exportName, options, ct);
            }
            catch (Exception e)
            {
                // A bug must cost one connection, never the server.
                options.Log?.Invoke($"nbd: connection failed unexpectedly: {e}");
            }
            finally
            {
                done.TrySetResult();
            }
        })
        {
            IsBackground = true,
            Name = "nbd-connection",
        };
        thread.Start();
        return done.Task;
    }

    private static void Run(Stream stream, Action closeTransport, IBlockDevice device, string exportName,
        NbdServerOptions options, CancellationToken ct)
    {
        int closed = 0;
        void Close()
        {
            if (Interlocked.Exchange(ref closed, 1) != 0) return;
            try
            {
                closeTransport();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
            {
            }
        }

        using var input = new NbdInput(stream);
        NbdSession? session;
        bool timedOut = false;
        using (new Timer(_ => { timedOut = true; Close(); }, null, options.HandshakeTimeout, Timeout.InfiniteTimeSpan))
        using (ct.Register(Close))
        {
            try
            {
                session = new NbdHandshake(input, stream, device, exportName, options).Negotiate();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
            {
                options.Log?.Invoke(timedOut ? "nbd: handshake timed out; dropping client" : $"nbd: handshake failed: {e.Message}");
                return;
            }
        }
        if (session is null || Volatile.Read(ref closed) != 0 || ct.IsCancellationRequested) return;
        options.Log?.Invoke($"nbd: client attached (structured replies: {session.StructuredReplies}, base:allocation: {session.BaseAllocation})");
        NbdTransmission.Run(device, session, input, stream, options, Close, ct);
    }
}
