namespace Isr.Vmm;

/// <summary>A descriptor cannot be run (or resumed) with this site's QEMU.</summary>
public sealed class DescriptorMismatchException(IReadOnlyList<DescriptorDifference> differences)
    : Exception("The VM descriptor does not match this site:" + Environment.NewLine
        + string.Join(Environment.NewLine, differences.Select(d => "  - " + d.Message)))
{
    public IReadOnlyList<DescriptorDifference> Differences { get; } = differences;
}
