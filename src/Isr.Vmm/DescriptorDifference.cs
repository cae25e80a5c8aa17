namespace Isr.Vmm;

/// <summary>Which descriptor property a difference concerns, so callers can filter (e.g. a fresh boot ignores the version).</summary>
public enum DescriptorField
{
    FormatVersion,
    Vmm,
    VmmVersion,
    MachineType,
    Accelerator,
    CpuModel,
    Memory,
    CpuCount,
    Devices,
}

public enum DifferenceSeverity
{
    /// <summary>Saved state must not be loaded (QEMU might accept it and corrupt the guest).</summary>
    Blocking,
    /// <summary>Worth telling the user, but resuming is expected to work (e.g. a stable point release).</summary>
    Warning,
}

/// <summary>One human-readable difference found by <see cref="DescriptorCheck"/>.</summary>
public sealed record DescriptorDifference(DescriptorField Field, DifferenceSeverity Severity, string Message)
{
    public bool IsBlocking => Severity == DifferenceSeverity.Blocking;

    public override string ToString() => Message;
}
