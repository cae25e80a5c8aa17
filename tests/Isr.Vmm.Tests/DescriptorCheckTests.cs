namespace Isr.Vmm.Tests;

public class DescriptorCheckTests
{
    [Fact]
    public void Same_qemu_same_machine_is_resumable()
    {
        Assert.Empty(DescriptorCheck.Compare(TestDescriptors.Sample(), TestDescriptors.Site()));
    }

    [Fact]
    public void Missing_machine_type_blocks()
    {
        var d = TestDescriptors.Sample() with { MachineType = "pc-q35-9.9" };

        var diff = Assert.Single(DescriptorCheck.Compare(d, TestDescriptors.Site()));
        Assert.True(diff.IsBlocking);
        Assert.Equal(DescriptorField.MachineType, diff.Field);
        Assert.Equal("machine type pc-q35-9.9 is not provided by qemu 7.2.22 here", diff.Message);
    }

    [Fact]
    public void Machine_alias_in_descriptor_blocks()
    {
        var d = TestDescriptors.Sample() with { MachineType = "q35" };

        var diff = Assert.Single(DescriptorCheck.Compare(d, TestDescriptors.Site()));
        Assert.Contains("alias", diff.Message);
    }

    [Fact]
    public void Unavailable_accelerator_blocks()
    {
        var d = TestDescriptors.Sample() with { Accelerator = "kvm" };

        var diff = Assert.Single(DescriptorCheck.Compare(d, TestDescriptors.Site()));
        Assert.Equal("accelerator kvm not available here (tcg only)", diff.Message);
        Assert.Empty(DescriptorCheck.Compare(d, TestDescriptors.Site("7.2.22", "tcg", "kvm")));
    }

    [Fact]
    public void Different_release_series_blocks_resume()
    {
        var diffs = DescriptorCheck.Compare(TestDescriptors.Sample(), TestDescriptors.Site("8.0.0"));

        var diff = Assert.Single(diffs);
        Assert.Equal(DescriptorField.VmmVersion, diff.Field);
        Assert.True(diff.IsBlocking);
        Assert.Equal("QEMU version 7.2.22 vs 8.0.0 here differs: migration stream may be incompatible", diff.Message);
        Assert.False(DescriptorCheck.IsResumable(diffs));
    }

    [Fact]
    public void Point_release_difference_is_only_a_warning()
    {
        var diffs = DescriptorCheck.Compare(TestDescriptors.Sample() with { VmmVersion = "7.2.1" }, TestDescriptors.Site());

        var diff = Assert.Single(diffs);
        Assert.Equal(DifferenceSeverity.Warning, diff.Severity);
        Assert.True(DescriptorCheck.IsResumable(diffs));
    }

    [Theory]
    [InlineData("host")]
    [InlineData("max")]
    public void Host_dependent_cpu_models_block(string model)
    {
        var diff = Assert.Single(DescriptorCheck.Compare(TestDescriptors.Sample() with { CpuModel = model }, TestDescriptors.Site()));
        Assert.Equal(DescriptorField.CpuModel, diff.Field);
        Assert.True(diff.IsBlocking);
    }

    [Fact]
    public void Unknown_device_driver_blocks()
    {
        var d = TestDescriptors.Sample();
        d = d with { Devices = [.. d.Devices, new VmDevice("snd0", VmDeviceKind.Display, "intel-hda", 0x5)] };

        var diff = Assert.Single(DescriptorCheck.Compare(d, TestDescriptors.Site()));
        Assert.Equal("device intel-hda (snd0) is not provided by qemu 7.2.22 here", diff.Message);
    }

    [Fact]
    public void Descriptor_vs_descriptor_reports_every_difference()
    {
        var a = TestDescriptors.Sample();
        var b = a with
        {
            MemoryBytes = 512L * 1024 * 1024,
            MachineType = "pc-i440fx-7.2",
            Accelerator = "kvm",
            VmmVersion = "8.0.0",
            CpuCount = 1,
            Devices = [.. a.Devices.Take(3)],
        };

        var diffs = DescriptorCheck.Compare(a, b);

        Assert.Equal(
        [
            "QEMU version 7.2.22 vs 8.0.0 differs: migration stream may be incompatible",
            "machine type pc-q35-7.2 vs pc-i440fx-7.2",
            "accelerator tcg vs kvm",
            "RAM 256 MiB vs 512 MiB",
            "2 vs 1 vCPUs",
            "device #4: isa-serial 'serial0' vs (none)",
        ], diffs.Select(x => x.Message));
        Assert.All(diffs, x => Assert.True(x.IsBlocking));
        Assert.Empty(DescriptorCheck.Compare(a, a with { Devices = [.. a.Devices] }));
    }

    [Fact]
    public void Moved_pci_device_is_a_difference()
    {
        var a = TestDescriptors.Sample();
        var b = a with { Devices = [.. a.Devices.Select(x => x.Kind == VmDeviceKind.Disk ? x with { PciSlot = 0x5 } : x)] };

        var diff = Assert.Single(DescriptorCheck.Compare(a, b));
        Assert.Equal("device #3: virtio-blk-pci 'disk0' at PCI slot 0x4 vs virtio-blk-pci 'disk0' at PCI slot 0x5", diff.Message);
    }
}
