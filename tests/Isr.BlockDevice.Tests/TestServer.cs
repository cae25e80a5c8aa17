using System.Collections.Concurrent;

namespace Isr.BlockDevice.Tests;

/// <summary>An NbdServer listening on a socket in a private temp directory, torn down with the test.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    public const string Export = "disk";

    private readonly CancellationTokenSource _cts = new();
    private readonly Task _serving;

    public TestServer(IBlockDevice device, NbdServerOptions? options = null)
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("isr-nbd-").FullName;
        SocketPath = Path.Combine(Directory, "nbd.sock");
        Device = device;
        Server = new NbdServer(device, Export, (options ?? new NbdServerOptions()) with { Log = LogLines.Enqueue });
        _serving = Server.ServeAsync(SocketPath, _cts.Token);
    }

    public string Directory { get; }
    public string SocketPath { get; }
    public IBlockDevice Device { get; }
    public NbdServer Server { get; }
    public ConcurrentQueue<string> LogLines { get; } = new();

    public string Uri => $"nbd+unix:///{Export}?socket={SocketPath}";

    public async ValueTask DisposeAsync()
    {
        _cts.Cancel();
        await _serving.WaitAsync(TimeSpan.FromSeconds(20));
        await Server.DisposeAsync();
        Assert.False(File.Exists(SocketPath), "socket file should be removed on shutdown");
        System.IO.Directory.Delete(Directory, recursive: true);
    }
}

/// <summary>Wraps a device so tests can hold chosen reads, or make operations fail.</summary>
internal sealed class ControllableDevice(IBlockDevice inner) : IBlockDevice
{
    private readonly ConcurrentDictionary<long, TaskCompletionSource> _gates = new();

    public long Size => inner.Size;
    public int PreferredBlockSize => inner.PreferredBlockSize;
    public long FailAtOffset { get; set; } = -1;

    /// <summary>Reads at <paramref name="offset"/> wait until the returned source is completed.</summary>
    public TaskCompletionSource Gate(long offset) =>
        _gates.GetOrAdd(offset, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        if (_gates.TryGetValue(offset, out var gate)) await gate.Task.WaitAsync(ct);
        if (offset == FailAtOffset) throw new IOException("injected read failure");
        await inner.ReadAsync(offset, buffer, ct);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken ct) =>
        offset == FailAtOffset ? throw new InvalidOperationException("injected write failure") : inner.WriteAsync(offset, data, fua, ct);

    public ValueTask WriteZeroesAsync(long offset, long length, bool fua, CancellationToken ct) => inner.WriteZeroesAsync(offset, length, fua, ct);
    public ValueTask TrimAsync(long offset, long length, CancellationToken ct) => inner.TrimAsync(offset, length, ct);
    public ValueTask FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
    public ValueTask<IReadOnlyList<Extent>> MapAsync(long offset, long length, CancellationToken ct) => inner.MapAsync(offset, length, ct);
}
