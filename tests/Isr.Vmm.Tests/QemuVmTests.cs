using System.Diagnostics;
using System.Security.Cryptography;

namespace Isr.Vmm.Tests;

[Collection(QemuCollection.Name)]
public class QemuVmTests
{
    private static async Task WaitForStatusAsync(QemuVm vm, string status, CancellationToken ct)
    {
        while (await vm.QueryStatusAsync(ct) != status)
            await Task.Delay(20, ct);
    }

    [Theory]
    [InlineData("q35")]
    [InlineData("pc")]
    public async Task Save_quit_start_incoming_load_continue_runs_again(string machine)
    {
        await using var env = new QemuTestEnvironment();
        var descriptor = await env.DescriptorAsync(machine: machine);
        var disk = new QemuDiskBackend.Null(64L * 1024 * 1024);

        // Suspend.
        var source = await env.StartAsync(descriptor, env.SiteOptions(disk), incoming: false);
        var events = new List<string>();
        source.EventReceived += (_, e) => { lock (events) events.Add(e.Name); };
        await WaitForStatusAsync(source, "running", env.Token);
        var saved = new MemoryStream();
        await source.SaveStateAsync((s, ct) => s.CopyToAsync(saved, ct), env.Token);
        Assert.Equal("postmigrate", await source.QueryStatusAsync(env.Token));
        Assert.Equal(0, await source.QuitAsync());
        Assert.Equal(QemuExitReason.Quit, source.ExitReason);
        lock (events)
            Assert.Contains("STOP", events);
        Assert.True(saved.Length > 0);

        // Resume with the same descriptor.
        var target = await env.StartAsync(descriptor, env.SiteOptions(disk), incoming: true);
        Assert.Equal("inmigrate", await target.QueryStatusAsync(env.Token));
        var bytes = saved.ToArray();
        await target.LoadStateAsync(async (s, ct) =>
        {
            // Written in pieces, as a fetcher would.
            for (var offset = 0; offset < bytes.Length; offset += 1 << 20)
                await s.WriteAsync(bytes.AsMemory(offset, Math.Min(1 << 20, bytes.Length - offset)), ct);
        }, env.Token);
        Assert.Equal("paused", await target.QueryStatusAsync(env.Token));
        await target.ContinueAsync(env.Token);
        Assert.Equal("running", await target.QueryStatusAsync(env.Token));
        await target.PauseAsync(env.Token);
        Assert.Equal("paused", await target.QueryStatusAsync(env.Token));
        Assert.Equal(0, await target.QuitAsync());
    }

    [Fact]
    public async Task Garbage_state_stream_fails_with_qemus_message_and_exit_is_observed()
    {
        await using var env = new QemuTestEnvironment();
        var descriptor = await env.DescriptorAsync(withDisk: false);
        var vm = await env.StartAsync(descriptor, env.SiteOptions(), incoming: true);
        QemuExitedEventArgs? exitedEvent = null;
        vm.ProcessExited += (_, e) => exitedEvent = e;

        var e = await Assert.ThrowsAsync<QemuVmException>(() => vm.LoadStateAsync(async (s, ct) =>
        {
            var junk = RandomNumberGenerator.GetBytes(1 << 20);
            for (var i = 0; i < 16; i++)
                await s.WriteAsync(junk, ct);
        }, env.Token));

        Assert.True(vm.HasExited);
        Assert.Equal(QemuExitReason.Crashed, vm.ExitReason);
        Assert.NotEqual(0, await vm.Exited);
        Assert.NotEqual(0, e.ExitCode);
        Assert.Contains("loading VM state failed", e.Message);
        Assert.Contains("migration", e.StderrTail, StringComparison.OrdinalIgnoreCase); // QEMU's own explanation
        Assert.NotNull(exitedEvent);
        Assert.Equal(QemuExitReason.Crashed, exitedEvent!.Reason);
    }

    [Fact]
    public async Task Qemu_killed_from_outside_is_reported_as_crashed()
    {
        await using var env = new QemuTestEnvironment();
        var vm = await env.StartAsync(await env.DescriptorAsync(withDisk: false), env.SiteOptions(), incoming: false);

        using (var p = Process.GetProcessById(vm.ProcessId)) // the QEMU this test started
            p.Kill();
        await vm.Exited.WaitAsync(env.Token);

        Assert.Equal(QemuExitReason.Crashed, vm.ExitReason);
        await Assert.ThrowsAsync<QemuVmException>(() => vm.SaveStateAsync((s, ct) => s.CopyToAsync(Stream.Null, ct), env.Token));
    }

    [Fact]
    public async Task Kill_is_reported_as_killed()
    {
        await using var env = new QemuTestEnvironment();
        var vm = await env.StartAsync(await env.DescriptorAsync(withDisk: false), env.SiteOptions(), incoming: false);

        await vm.KillAsync();

        Assert.Equal(QemuExitReason.Killed, vm.ExitReason);
    }

    [Fact]
    public async Task Descriptor_this_site_cannot_run_is_refused_before_starting_qemu()
    {
        await using var env = new QemuTestEnvironment();
        var descriptor = await env.DescriptorAsync(withDisk: false);

        var e = await Assert.ThrowsAsync<DescriptorMismatchException>(() =>
            env.StartAsync(descriptor with { MachineType = "pc-q35-1.0-none", CpuModel = "no-such-cpu" }, env.SiteOptions(), incoming: true));

        Assert.Equal([DescriptorField.MachineType, DescriptorField.CpuModel], e.Differences.Select(d => d.Field));
        var other = descriptor with { VmmVersion = "1.0.0" };
        await Assert.ThrowsAsync<DescriptorMismatchException>(() => env.StartAsync(other, env.SiteOptions(), incoming: true));
        // A fresh boot does not depend on the QEMU version that wrote the descriptor.
        var fresh = await env.StartAsync(other, env.SiteOptions(), incoming: false);
        await fresh.QuitAsync();
    }

    [Fact]
    public async Task Qemu_startup_failure_reports_qemus_message()
    {
        await using var env = new QemuTestEnvironment();
        var descriptor = await env.DescriptorAsync();
        var missing = Path.Combine(env.Directory, "missing.img");

        var e = await Assert.ThrowsAsync<QemuVmException>(() =>
            env.StartAsync(descriptor, env.SiteOptions(new QemuDiskBackend.RawFile(missing)), incoming: false));

        Assert.Contains("missing.img", e.Message);
        Assert.NotNull(e.ExitCode);
    }
}
