namespace Isr.Vmm.Tests;

[Collection(QemuCollection.Name)]
public class QemuProbeTests
{
    [Fact]
    public async Task Probe_resolves_machine_aliases_to_versioned_types()
    {
        var qemu = QemuTestEnvironment.RequireQemu();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));

        var caps = await qemu.GetCapabilitiesAsync(cts.Token);
        var series = string.Join('.', caps.VmmVersion.Split('.').Take(2));

        Assert.Matches(@"^\d+\.\d+\.\d+$", caps.VmmVersion);
        Assert.Equal($"pc-q35-{series}", await qemu.ResolveMachineAsync("q35", cts.Token));
        Assert.Equal($"pc-i440fx-{series}", await qemu.ResolveMachineAsync("pc", cts.Token));
        Assert.Equal("pc-q35-7.2", caps.ResolveMachine("pc-q35-7.2")?.Name); // versioned names resolve to themselves
        Assert.Null(caps.ResolveMachine("no-such-machine"));
    }

    [Fact]
    public async Task Probe_reports_accelerators_cpu_models_and_devices()
    {
        var qemu = QemuTestEnvironment.RequireQemu();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));

        var caps = await qemu.GetCapabilitiesAsync(cts.Token);

        Assert.Equal("qemu", caps.Vmm);
        Assert.Contains("tcg", caps.Accelerators);
        if (!File.Exists("/dev/kvm"))
            Assert.DoesNotContain("kvm", caps.Accelerators); // compiled in is not enough
        Assert.Contains("qemu64", caps.CpuModels);
        Assert.Contains("virtio-blk-pci", caps.DeviceTypes);
        Assert.Contains("virtio-net-pci", caps.DeviceTypes);
        Assert.Contains("isa-serial", caps.DeviceTypes);
        Assert.Contains("VGA", caps.DeviceTypes);
        Assert.Contains("none", caps.DisplayBackends);
        // Cached per process: a second call does not start another QEMU.
        Assert.Same(caps, await qemu.GetCapabilitiesAsync(cts.Token));
    }

    [Fact]
    public async Task Accelerator_probe_sees_the_boot_sector_run_and_kvm_is_offered_only_if_it_runs_code()
    {
        var qemu = QemuTestEnvironment.RequireQemu();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));

        // The probe's own code path, under the accelerator that always works here: it must see the guest's byte.
        Assert.True(await QemuInstallation.RunsGuestCodeAsync(qemu.BinaryPath, "tcg", cts.Token));
        var caps = await qemu.GetCapabilitiesAsync(cts.Token);
        bool kvmRuns = File.Exists("/dev/kvm") && await QemuInstallation.RunsGuestCodeAsync(qemu.BinaryPath, "kvm", cts.Token);
        Assert.Equal(kvmRuns, caps.Accelerators.Contains("kvm"));
    }

    [Fact]
    public async Task Factory_builds_a_descriptor_this_site_can_resume()
    {
        var qemu = QemuTestEnvironment.RequireQemu();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var caps = await qemu.GetCapabilitiesAsync(cts.Token);

        var d = await VmDescriptorFactory.CreateAsync(qemu, 256L * 1024 * 1024, "q35", cancellationToken: cts.Token);

        Assert.Equal(caps.VmmVersion, d.VmmVersion);
        Assert.StartsWith("pc-q35-", d.MachineType);
        Assert.Equal("qemu64", d.CpuModel);
        Assert.Equal(["VGA", "virtio-net-pci", "virtio-blk-pci", "isa-serial", "virtio-serial-pci"], d.Devices.Select(x => x.Driver));
        Assert.Empty(DescriptorCheck.Compare(d, caps));
        await Assert.ThrowsAsync<ArgumentException>(() => VmDescriptorFactory.CreateAsync(qemu, 256L << 20, cpuModel: "host", cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ArgumentException>(() => VmDescriptorFactory.CreateAsync(qemu, 256L << 20, machine: "no-such", cancellationToken: cts.Token));
    }
}
