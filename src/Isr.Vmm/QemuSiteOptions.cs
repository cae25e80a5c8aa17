namespace Isr.Vmm;

/// <summary>
/// Host-side choices for running a <see cref="VmDescriptor"/> at this site: sockets, files, how the
/// display is shown. By design nothing here alters the guest-visible machine, so the same
/// descriptor gives the same migratable machine at every site.
/// </summary>
public sealed record QemuSiteOptions
{
    /// <summary>QEMU binary; null means <see cref="QemuInstallation.DefaultBinaryName"/> on PATH.</summary>
    public string? QemuBinaryPath { get; init; }

    /// <summary>Unix socket QEMU creates for QMP (must be short: socket paths are limited to ~107 bytes).</summary>
    public required string QmpSocketPath { get; init; }

    /// <summary>Backend for the descriptor's disk device; required iff the descriptor has one.</summary>
    public QemuDiskBackend? Disk { get; init; }

    public DiskErrorPolicy DiskErrorPolicy { get; init; } = DiskErrorPolicy.Stop;

    /// <summary>File receiving the guest's serial console output; null discards it.</summary>
    public string? SerialLogPath { get; init; }

    public QemuDisplayMode Display { get; init; } = QemuDisplayMode.Headless;

    /// <summary>For <see cref="QemuDisplayMode.Vnc"/>: serve VNC on this unix socket (preferred: only this user can reach it).</summary>
    public string? VncSocketPath { get; init; }

    /// <summary>For <see cref="QemuDisplayMode.Vnc"/> without a socket path: display number N, i.e. 127.0.0.1:5900+N.</summary>
    public int VncDisplayNumber { get; init; }

    /// <summary>For <see cref="QemuDisplayMode.Window"/>: QEMU display backend name.</summary>
    public string WindowBackend { get; init; } = "gtk";

    /// <summary>How long QEMU may take to open its QMP socket.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Appended verbatim after the derived arguments. Tests only (e.g. preloading guest RAM).</summary>
    internal IReadOnlyList<string> ExtraArgumentsForTesting { get; init; } = [];
}
