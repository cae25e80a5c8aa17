using System.Net.Sockets;

namespace Isr.BlockDevice;

/// <summary>
/// Serves one <see cref="IBlockDevice"/> as a single NBD export (fixed newstyle, structured replies,
/// base:allocation) to any number of clients. Each connection is independent: a misbehaving client is
/// disconnected without affecting the others.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly IBlockDevice _device;
    private readonly string _exportName;
    private readonly NbdServerOptions _options;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly object _gate = new();
    private readonly HashSet<Task> _running = [];
    private bool _disposed;

    public NbdServer(IBlockDevice device, string exportName, NbdServerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(exportName);
        _options = options ?? new NbdServerOptions();
        if (System.Text.Encoding.UTF8.GetByteCount(exportName) > NbdConstants.MaxStringLength)
            throw new ArgumentException("Export names are limited to 4096 bytes.", nameof(exportName));
        if (_options.MaxPayloadSize < 512 || _options.MinimumBlockSize < 1 || _options.MinimumBlockSize > 65536 ||
            !System.Numerics.BitOperations.IsPow2(_options.MinimumBlockSize))
            throw new ArgumentException("MaxPayloadSize must be >= 512 and MinimumBlockSize a power of two <= 64 KiB.", nameof(options));
        _device = device;
        _exportName = exportName;
    }

    /// <summary>
    /// Listens on a Unix domain socket until <paramref name="ct"/> is cancelled or the server is disposed, then
    /// closes every connection and removes the socket file. The socket is already listening when this method
    /// returns its task, so clients may connect immediately. A leftover socket file nobody listens on is replaced.
    /// </summary>
    public Task ServeAsync(string unixSocketPath, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrEmpty(unixSocketPath);
        ObjectDisposedException.ThrowIf(_disposed, this);
        RemoveStaleSocket(unixSocketPath);
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(unixSocketPath));
            listener.Listen(128);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _options.Log?.Invoke("nbd: listening");
        return Track(AcceptLoopAsync(listener, unixSocketPath, ct));
    }

    /// <summary>
    /// Runs one client over an already connected stream (handshake, then transmission) until the client leaves,
    /// breaks protocol, or <paramref name="ct"/> fires. Client-side problems are logged, not thrown. The caller
    /// owns <paramref name="stream"/>, but the server disposes it to abort the connection (that is the only way
    /// to interrupt a blocking read); the stream must support blocking Read and Write.
    /// </summary>
    public Task ServeConnectionAsync(Stream stream, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Track(RunConnectionAsync(stream, stream.Dispose, ct));
    }

    private async Task RunConnectionAsync(Stream stream, Action closeTransport, CancellationToken ct)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown.Token);
        await NbdConnection.RunAsync(stream, closeTransport, _device, _exportName, _options, linked.Token).ConfigureAwait(false);
    }

    private async Task AcceptLoopAsync(Socket listener, string path, CancellationToken ct)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown.Token);
        var connections = new HashSet<Task>();
        try
        {
            while (!linked.IsCancellationRequested)
            {
                Socket client;
                try
                {
                    client = await listener.AcceptAsync(linked.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                catch (SocketException e)
                {
                    // E.g. EMFILE: keep serving existing clients, retry shortly.
                    _options.Log?.Invoke($"nbd: accept failed: {e.Message}");
                    await Task.Delay(100, linked.Token).ConfigureAwait(false);
                    continue;
                }
                Task connection = ServeSocketAsync(client, linked.Token);
                lock (connections) connections.Add(connection);
                _ = connection.ContinueWith(t => { lock (connections) connections.Remove(t); },
                    CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
        }
        catch (OperationCanceledException) when (linked.IsCancellationRequested)
        {
        }
        finally
        {
            listener.Dispose();
            try
            {
                File.Delete(path);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
            linked.Cancel();
            Task[] remaining;
            lock (connections) remaining = [.. connections];
            await Task.WhenAll(remaining).ConfigureAwait(false);
        }
    }

    private async Task ServeSocketAsync(Socket client, CancellationToken ct)
    {
        using var stream = new NetworkStream(client, ownsSocket: true);
        _options.Log?.Invoke("nbd: client connected");
        await RunConnectionAsync(stream, () =>
        {
            // Shutdown wakes a thread blocked in recv/send on this socket; Dispose alone may not.
            try
            {
                client.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
            stream.Dispose();
        }, ct).ConfigureAwait(false);
    }

    private static void RemoveStaleSocket(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) return;
        // Only replace what looks like a dead socket: an empty file that refuses connections.
        if (info.Length != 0) throw new IOException($"'{path}' exists and is not a socket.");
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            File.Delete(path);
            return;
        }
        throw new IOException($"Another server is already listening on '{path}'.");
    }

    private Task Track(Task task)
    {
        lock (_gate) _running.Add(task);
        _ = task.ContinueWith(t => { lock (_gate) _running.Remove(t); },
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return task;
    }

    /// <summary>Stops listening, disconnects every client (in-flight requests finish or are cancelled) and waits.</summary>
    public async ValueTask DisposeAsync()
    {
        Task[] running;
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            running = [.. _running];
        }
        _shutdown.Cancel();
        try
        {
            await Task.WhenAll(running).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        _shutdown.Dispose();
    }
}
