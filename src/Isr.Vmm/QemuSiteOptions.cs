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

    /// <summary>
    /// Instead of <see cref="SerialLogPath"/>: a two-way console through the FIFOs BASE.in (to the guest) and BASE.out
    /// (from it), made by the caller, so that scripts can talk to the guest (QEMU 7.2's file backend has no input).
    /// </summary>
    public string? SerialPipeBase { get; init; }

    public QemuDisplayMode Display { get; init; } = QemuDisplayMode.Headless;

    /// <summary>For <see cref="QemuDisplayMode.Vnc"/>: serve VNC on this unix socket (preferred: only this user can reach it).</summary>
    public string? VncSocketPath { get; init; }

    /// <summary>
    /// For <see cref="QemuDisplayMode.Vnc"/> without a socket path: display number N, i.e. 127.0.0.1:5900+N. Null (the
    /// default) lets QEMU take the first free one from 0 to 99; <see cref="QemuVm.Vnc"/> tells which it took.
    /// </summary>
    public int? VncDisplayNumber { get; init; }

    /// <summary>For <see cref="QemuDisplayMode.Window"/>: QEMU display backend name ("gtk" or "sdl"; both need the
    /// Debian package qemu-system-gui).</summary>
    public string WindowBackend { get; init; } = "gtk";

    /// <summary>
    /// For <see cref="QemuDisplayMode.Window"/>: closing the window does nothing (<c>window-close=off</c>) instead of
    /// quitting QEMU, which would end the VM like pulling its plug. False keeps QEMU's own behaviour.
    /// </summary>
    public bool IgnoreWindowClose { get; init; }

    /// <summary>
    /// For <see cref="QemuDisplayMode.Window"/>: which desktop the window opens on, as environment variables set for
    /// QEMU over this process's own (DISPLAY, XAUTHORITY, WAYLAND_DISPLAY, XDG_RUNTIME_DIR). A long-lived process that
    /// starts VMs for several terminals passes the caller's here; null inherits this process's environment.
    /// </summary>
    public IReadOnlyDictionary<string, string>? WindowEnvironment { get; init; }

    /// <summary>Unix socket QEMU listens on for the guest agent's port (descriptors with a guest-agent device);
    /// <see cref="QemuVm.StartAsync"/> puts it in the VM's private runtime directory.</summary>
    public string? GuestAgentSocketPath { get; init; }

    /// <summary>Window title and VNC desktop name (QEMU <c>-name</c>); host-side only. Null leaves QEMU's default.</summary>
    public string? Title { get; init; }

    /// <summary>How long QEMU may take to open its QMP socket.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Appended verbatim after the derived arguments. Tests only (e.g. preloading guest RAM).</summary>
    internal IReadOnlyList<string> ExtraArgumentsForTesting { get; init; } = [];
}
