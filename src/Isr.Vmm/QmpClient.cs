using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Isr.Vmm;

/// <summary>
/// QEMU Machine Protocol client over a unix socket: newline-delimited JSON, one reader loop that
/// routes replies to callers by request id and everything else to the event stream.
/// Safe to call from several threads at once.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<long, Pending> _pending = new();
    private readonly CancellationTokenSource _shutdown = new();
    // Bounded and dropping the oldest: nobody is obliged to read events, and they must never
    // block reply routing or grow memory without limit.
    private readonly Channel<QmpEvent> _events = Channel.CreateBounded<QmpEvent>(
        new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest, SingleWriter = true });
    private Task _readLoop = Task.CompletedTask;
    private long _nextId;
    private volatile Exception? _closed;

    private sealed record Pending(string Command, TaskCompletionSource<JsonElement> Completion);

    private QmpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: false, bufferSize: 64 * 1024);
    }

    /// <summary>The "QMP" member of QEMU's greeting (version and capabilities).</summary>
    public JsonElement Greeting { get; private set; }

    /// <summary>Events in arrival order. Completes when the connection closes.</summary>
    public ChannelReader<QmpEvent> Events => _events.Reader;

    /// <summary>
    /// Raised on the reader loop for every event, before it is queued on <see cref="Events"/>.
    /// Handlers must be quick and must not wait for QMP replies (that would deadlock the loop).
    /// </summary>
    public event EventHandler<QmpEvent>? EventReceived;

    /// <summary>Completes when the connection has closed, for whatever reason.</summary>
    public Task Completion => _readLoop;

    public bool IsConnected => _closed is null;

    /// <summary>Connects, reads the greeting and leaves negotiation mode with <c>qmp_capabilities</c>.</summary>
    public static async Task<QmpClient> ConnectAsync(string socketPath, CancellationToken cancellationToken = default)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        QmpClient? client = null;
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
            client = new QmpClient(socket);
            string? greetingLine;
            try
            {
                greetingLine = await client._reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                throw new QmpConnectionClosedException("QMP connection failed before the greeting: " + e.Message, e);
            }
            if (greetingLine is null)
                throw new QmpConnectionClosedException("QMP connection closed before the greeting.");
            using (var greeting = JsonDocument.Parse(greetingLine))
            {
                if (!greeting.RootElement.TryGetProperty("QMP", out var qmp))
                    throw new InvalidDataException($"Not a QMP greeting: {greetingLine}");
                client.Greeting = qmp.Clone();
            }
            client._readLoop = Task.Run(client.ReadLoopAsync, CancellationToken.None);
            await client.ExecuteAsync("qmp_capabilities", null, cancellationToken).ConfigureAwait(false);
            return client;
        }
        catch
        {
            if (client is not null)
                await client.DisposeAsync().ConfigureAwait(false);
            else
                socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs a command and returns its "return" value.
    /// Throws <see cref="QmpErrorException"/> on an error reply and
    /// <see cref="QmpConnectionClosedException"/> if the connection closes first.
    /// Cancelling stops waiting; QEMU may still execute the command.
    /// </summary>
    public async Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(command);
        var id = Interlocked.Increment(ref _nextId);
        var pending = new Pending(command, new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously));
        _pending[id] = pending;
        // Checked after registering: the close path sets _closed before failing what is pending,
        // so one of the two always sees the other.
        if (_closed is { } closedReason)
        {
            _pending.TryRemove(id, out _);
            throw new QmpConnectionClosedException($"QMP connection is closed; cannot run '{command}'.", closedReason);
        }

        using var registration = cancellationToken.Register(() =>
        {
            if (_pending.TryRemove(id, out var p))
                p.Completion.TrySetCanceled(cancellationToken);
        });

        var payload = Serialize(command, arguments, id);
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _stream.WriteAsync(payload, cancellationToken).ConfigureAwait(false);
            await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            _pending.TryRemove(id, out _);
            throw new QmpConnectionClosedException($"QMP connection failed while sending '{command}'.", e);
        }
        finally
        {
            _writeLock.Release();
        }

        return await pending.Completion.Task.ConfigureAwait(false);
    }

    private static byte[] Serialize(string command, JsonObject? arguments, long id)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("execute", command);
            if (arguments is not null)
            {
                writer.WritePropertyName("arguments");
                arguments.WriteTo(writer);
            }
            writer.WriteNumber("id", id);
            writer.WriteEndObject();
        }
        return [.. buffer.WrittenSpan, (byte)'\n'];
    }

    private async Task ReadLoopAsync()
    {
        Exception reason = new QmpConnectionClosedException("QMP connection closed by QEMU.");
        try
        {
            while (await _reader.ReadLineAsync(_shutdown.Token).ConfigureAwait(false) is { } line)
            {
                if (line.Length > 0)
                    Dispatch(line);
            }
        }
        catch (OperationCanceledException) when (_shutdown.IsCancellationRequested)
        {
            reason = new QmpConnectionClosedException("QMP client was disposed.");
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            reason = new QmpConnectionClosedException("QMP connection failed: " + e.Message, e);
        }
        finally
        {
            _closed = reason;
            foreach (var id in _pending.Keys)
            {
                if (_pending.TryRemove(id, out var p))
                    p.Completion.TrySetException(new QmpConnectionClosedException(
                        $"QMP connection closed before '{p.Command}' was answered.", reason));
            }
            _events.Writer.TryComplete();
        }
    }

    private void Dispatch(string line)
    {
        JsonElement root;
        try
        {
            root = JsonElement.Parse(line);
        }
        catch (JsonException)
        {
            return; // QEMU only sends JSON; a garbled line cannot be routed anywhere useful.
        }
        if (root.ValueKind != JsonValueKind.Object)
            return;

        if (root.TryGetProperty("event", out var eventName))
        {
            var evt = new QmpEvent(
                eventName.GetString() ?? "",
                root.TryGetProperty("data", out var data) ? data : default,
                ParseTimestamp(root));
            try
            {
                EventReceived?.Invoke(this, evt);
            }
            catch
            {
                // A faulty subscriber must not stop reply routing for everyone else.
            }
            _events.Writer.TryWrite(evt);
            return;
        }

        if (!TryTakePending(root, out var pending))
            return;
        if (root.TryGetProperty("return", out var ret))
        {
            pending.Completion.TrySetResult(ret);
        }
        else if (root.TryGetProperty("error", out var error))
        {
            var cls = error.TryGetProperty("class", out var c) ? c.GetString() ?? "" : "";
            var desc = error.TryGetProperty("desc", out var d) ? d.GetString() ?? "" : "";
            pending.Completion.TrySetException(new QmpErrorException(pending.Command, cls, desc));
        }
    }

    private bool TryTakePending(JsonElement root, out Pending pending)
    {
        if (root.TryGetProperty("id", out var idElement) && idElement.TryGetInt64(out var id))
            return _pending.TryRemove(id, out pending!);

        // QEMU omits the id only when it could not parse the request at all; if exactly one
        // request is outstanding, that must be the one.
        if (_pending.Count == 1)
        {
            foreach (var key in _pending.Keys)
                if (_pending.TryRemove(key, out pending!))
                    return true;
        }
        pending = null!;
        return false;
    }

    private static DateTimeOffset ParseTimestamp(JsonElement root)
    {
        if (root.TryGetProperty("timestamp", out var ts)
            && ts.TryGetProperty("seconds", out var s) && s.TryGetInt64(out var seconds)
            && ts.TryGetProperty("microseconds", out var us) && us.TryGetInt64(out var micros))
            return DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks(micros * 10);
        return DateTimeOffset.UtcNow;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_shutdown.IsCancellationRequested)
            _shutdown.Cancel();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        await _stream.DisposeAsync().ConfigureAwait(false);
        try
        {
            await _readLoop.ConfigureAwait(false);
        }
        catch
        {
            // The loop records its own failure; disposal just waits for it to stop.
        }
        _reader.Dispose();
        // _writeLock is left undisposed on purpose: a racing ExecuteAsync must get a
        // QmpConnectionClosedException, not an ObjectDisposedException from the lock.
    }
}
