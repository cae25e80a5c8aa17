namespace Isr.Vmm;

/// <summary>
/// One guest-visible device. Everything here is part of the migrated machine state's shape,
/// so it is fixed in the descriptor (including the PCI slot) instead of being left to QEMU's
/// automatic placement, which could differ between sites or QEMU versions.
/// </summary>
/// <param name="Id">QEMU id (qdev id; the backend gets the same id in its own namespace).</param>
/// <param name="Kind">What the device is for.</param>
/// <param name="Driver">QEMU device driver, e.g. <c>virtio-blk-pci</c>.</param>
/// <param name="PciSlot">Slot on bus 0 (function 0) for PCI devices; null for ISA devices.</param>
/// <param name="MacAddress">NIC MAC address; fixed so the guest sees the same NIC after resume.</param>
public sealed record VmDevice(
    string Id,
    VmDeviceKind Kind,
    string Driver,
    int? PciSlot = null,
    string? MacAddress = null);
