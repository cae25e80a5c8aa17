using System.Text.Json.Serialization;

namespace Isr.Vmm;

/// <summary>What a guest-visible device is for; decides which host backend it is wired to.</summary>
[JsonConverter(typeof(CamelCaseEnumConverter<VmDeviceKind>))]
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
    /// <summary>A virtio-serial controller with the port org.qemu.guest_agent.0, backed by a unix socket in QEMU's
    /// runtime directory: how the site talks to a qemu-guest-agent in the guest (to set its clock after a resume).</summary>
    GuestAgent,
}
