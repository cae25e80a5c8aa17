namespace Isr.Vmm.Tests;

/// <summary>Tests that start real QEMU processes run one at a time (TCG is CPU-hungry and timing-sensitive).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class QemuCollection
{
    public const string Name = "Real QEMU";
}
