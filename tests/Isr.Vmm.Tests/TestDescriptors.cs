namespace Isr.Vmm.Tests;

internal static class TestDescriptors
{
    public static VmDescriptor Sample(long memoryBytes = 256L * 1024 * 1024) => new()
    {
        Vmm = "qemu",
        VmmVersion = "7.2.22",
        MachineType = "pc-q35-7.2",
        Accelerator = "tcg",
        CpuModel = "qemu64",
        MemoryBytes = memoryBytes,
        CpuCount = 2,
        Devices =
        [
            new("video0", VmDeviceKind.Display, "VGA", 0x2),
            new("net0", VmDeviceKind.Network, "virtio-net-pci", 0x3, "52:54:00:12:34:56"),
            new("disk0", VmDeviceKind.Disk, "virtio-blk-pci", 0x4),
            new("serial0", VmDeviceKind.Serial, "isa-serial"),
        ],
    };

    public static SiteCapabilities Site(string version = "7.2.22", params string[] accelerators) => new()
    {
        Vmm = "qemu",
        VmmVersion = version,
        MachineTypes =
        [
            new($"pc-q35-{version[..version.LastIndexOf('.')]}", "q35", false, false),
            new($"pc-i440fx-{version[..version.LastIndexOf('.')]}", "pc", true, false),
            new("pc-q35-7.2", null, false, false),
        ],
        Accelerators = accelerators.Length == 0 ? ["tcg"] : accelerators,
        CpuModels = ["qemu64", "max", "host", "Skylake-Client"],
        DeviceTypes = ["VGA", "virtio-net-pci", "virtio-blk-pci", "isa-serial"],
        DisplayBackends = ["none"],
    };
}
