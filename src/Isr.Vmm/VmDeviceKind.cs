namespace Isr.Vmm;

/// <summary>What a guest-visible device is for; decides which host backend it is wired to.</summary>
public enum VmDeviceKind
{
    /// <summary>The parcel disk (backed by the site's block backend, normally our NBD server).</summary>
    Disk,
    /// <summary>A NIC; backed by QEMU user-mode networking so the guest has outbound network anywhere.</summary>
    Network,
    /// <summary>An ISA serial port (COM1); backed by a file or nothing, per site.</summary>
    Serial,
    /// <summary>The display adapter; shown headless, over VNC or in a window, per site.</summary>
    Display,
}
