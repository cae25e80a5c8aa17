namespace Isr.Vmm;

/// <summary>Creates the descriptor of a new VM from what this site's QEMU actually provides.</summary>
public static class VmDescriptorFactory
{
    /// <summary>Default vCPU model: exists under TCG and KVM alike and does not depend on the host CPU.</summary>
    public const string DefaultCpuModel = "qemu64";

    /// <summary>Fixed MAC (QEMU's conventional default) so the guest sees the same NIC everywhere.</summary>
    public const string DefaultMacAddress = "52:54:00:12:34:56";

    // Fixed layout on bus 0, identical for q35 and i440fx: slot 0 is the host bridge, slot 1 the
    // PIIX3 on i440fx, slot 0x1f the ICH9 on q35. VGA at 2 matches QEMU's own placement.
    public const int DisplaySlot = 0x2;
    public const int NetworkSlot = 0x3;
    public const int DiskSlot = 0x4;
    public const int GuestAgentSlot = 0x5;

    /// <param name="qemu">The site's QEMU; asked for its version and to resolve <paramref name="machine"/>.</param>
    /// <param name="memoryBytes">Guest RAM; a whole number of MiB.</param>
    /// <param name="machine">Machine type or alias ("q35", "pc"); stored resolved (e.g. pc-q35-7.2).</param>
    /// <param name="cpus">vCPU count.</param>
    /// <param name="cpuModel">Named CPU model; host-dependent models are refused.</param>
    /// <param name="accelerator">"tcg" or "kvm"; null picks kvm when usable here, else tcg.</param>
    /// <param name="withDisk">False leaves out the disk (diskless test VMs).</param>
    public static async Task<VmDescriptor> CreateAsync(
        QemuInstallation qemu,
        long memoryBytes,
        string machine = "q35",
        int cpus = 1,
        string cpuModel = DefaultCpuModel,
        string? accelerator = null,
        bool withDisk = true,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(qemu);
        if (memoryBytes <= 0 || memoryBytes % (1024 * 1024) != 0)
            throw new ArgumentOutOfRangeException(nameof(memoryBytes), "Memory must be a positive whole number of MiB.");
        ArgumentOutOfRangeException.ThrowIfLessThan(cpus, 1);
        if (cpuModel is "host" or "max")
            throw new ArgumentException($"CPU model '{cpuModel}' depends on the host; saved state would not be portable.", nameof(cpuModel));

        var caps = await qemu.GetCapabilitiesAsync(cancellationToken).ConfigureAwait(false);
        var resolved = caps.ResolveMachine(machine)
            ?? throw new ArgumentException($"QEMU {caps.VmmVersion} has no machine type or alias '{machine}'.", nameof(machine));
        if (!caps.CpuModels.Contains(cpuModel))
            throw new ArgumentException($"QEMU {caps.VmmVersion} has no CPU model '{cpuModel}'.", nameof(cpuModel));
        var accel = accelerator ?? (caps.Accelerators.Contains("kvm") ? "kvm" : "tcg");
        if (!caps.Accelerators.Contains(accel))
            throw new ArgumentException($"Accelerator '{accel}' is not available here ({string.Join(", ", caps.Accelerators)}).", nameof(accelerator));

        var devices = new List<VmDevice>
        {
            new("video0", VmDeviceKind.Display, "VGA", DisplaySlot),
            new("net0", VmDeviceKind.Network, "virtio-net-pci", NetworkSlot, DefaultMacAddress),
        };
        if (withDisk)
            devices.Add(new("disk0", VmDeviceKind.Disk, "virtio-blk-pci", DiskSlot));
        devices.Add(new("serial0", VmDeviceKind.Serial, "isa-serial"));
        // Since descriptors had it: older parcels lack it and keep their device model (no agent, clock not set).
        devices.Add(new("agent0", VmDeviceKind.GuestAgent, "virtio-serial-pci", GuestAgentSlot));

        return new VmDescriptor
        {
            Vmm = caps.Vmm,
            VmmVersion = caps.VmmVersion,
            MachineType = resolved.Name,
            Accelerator = accel,
            CpuModel = cpuModel,
            MemoryBytes = memoryBytes,
            CpuCount = cpus,
            Devices = devices,
        };
    }
}
