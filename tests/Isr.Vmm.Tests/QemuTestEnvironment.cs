namespace Isr.Vmm.Tests;

/// <summary>
/// Per-test scratch space and guards for real-QEMU tests: a short private directory for sockets,
/// a hard timeout for the whole test, and every started VM killed (by its PID) on dispose.
/// </summary>
internal sealed class QemuTestEnvironment : IAsyncDisposable
{
    private readonly RuntimeDirectory _dir = RuntimeDirectory.Create("test");
    private readonly CancellationTokenSource _timeout;
    private readonly List<QemuVm> _vms = [];
    private int _counter;

    public QemuTestEnvironment(TimeSpan? timeout = null)
    {
        _timeout = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(120));
        Installation = RequireQemu();
    }

    public QemuInstallation Installation { get; }

    /// <summary>Cancelled when the test's time is up.</summary>
    public CancellationToken Token => _timeout.Token;

    public string Directory => _dir.Path;

    /// <summary>
    /// These tests must never pass silently without QEMU: CI installs it, and a missing binary
    /// there is a setup error to fix.
    /// </summary>
    public static QemuInstallation RequireQemu()
    {
        try
        {
            return QemuInstallation.Locate();
        }
        catch (QemuNotFoundException e)
        {
            throw new Xunit.Sdk.XunitException(
                "This test needs a real QEMU: qemu-system-x86_64 must be installed (apt-get install qemu-system-x86). " + e.Message);
        }
    }

    public QemuSiteOptions SiteOptions(QemuDiskBackend? disk = null) => new()
    {
        QmpSocketPath = Path.Combine(_dir.Path, $"qmp{Interlocked.Increment(ref _counter)}.sock"),
        Disk = disk,
        SerialLogPath = Path.Combine(_dir.Path, "serial.log"),
    };

    public Task<VmDescriptor> DescriptorAsync(long memoryMiB = 128, string machine = "q35", bool withDisk = true) =>
        VmDescriptorFactory.CreateAsync(Installation, memoryMiB * 1024 * 1024, machine, cpus: 1, accelerator: "tcg", withDisk: withDisk, cancellationToken: Token);

    public async Task<QemuVm> StartAsync(VmDescriptor descriptor, QemuSiteOptions site, bool incoming)
    {
        var vm = await QemuVm.StartAsync(descriptor, site, incoming, Token);
        lock (_vms)
            _vms.Add(vm);
        return vm;
    }

    public async ValueTask DisposeAsync()
    {
        List<QemuVm> vms;
        lock (_vms)
            vms = [.. _vms];
        foreach (var vm in vms)
            await vm.DisposeAsync(); // kills by PID if still running
        _dir.Delete();
        _timeout.Dispose();
    }
}
