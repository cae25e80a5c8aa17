namespace Isr.Vmm;

/// <summary>
/// What this site's QEMU can run; compared against a stored <see cref="VmDescriptor"/> before resuming.
/// </summary>
public sealed record SiteCapabilities
{
    public required string Vmm { get; init; }

    /// <summary>"major.minor.micro" from QMP <c>query-version</c>.</summary>
    public required string VmmVersion { get; init; }

    /// <summary>Distribution package string (e.g. "Debian 1:7.2+dfsg-7+deb12u18"), for messages only.</summary>
    public string Package { get; init; } = "";

    public required IReadOnlyList<QemuMachineType> MachineTypes { get; init; }

    /// <summary>Accelerators usable right now (compiled in and, for kvm, /dev/kvm accessible).</summary>
    public required IReadOnlyList<string> Accelerators { get; init; }

    public required IReadOnlyList<string> CpuModels { get; init; }

    /// <summary>Concrete QOM types implementing "device" (i.e. valid <c>-device</c> drivers).</summary>
    public required IReadOnlyList<string> DeviceTypes { get; init; }

    /// <summary>Display backends from <c>-display help</c> (gtk/sdl need the qemu-system-gui package).</summary>
    public required IReadOnlyList<string> DisplayBackends { get; init; }

    /// <summary>The versioned machine type for a name or alias, or null if QEMU has neither.</summary>
    public QemuMachineType? ResolveMachine(string nameOrAlias) =>
        MachineTypes.FirstOrDefault(m => m.Name == nameOrAlias)
        ?? MachineTypes.FirstOrDefault(m => m.Alias == nameOrAlias);
}
