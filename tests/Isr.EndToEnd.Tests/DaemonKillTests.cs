using System.Text.Json;

namespace Isr.EndToEnd.Tests;

/// <summary>The site daemon is SIGKILLed while the VM runs: its QEMU lives on without its disk server. The next command
/// finds that QEMU by its recorded PID, stops it, says what happened, and the disk the guest flushed is kept.</summary>
public sealed class DaemonKillTests
{
    [Fact]
    public async Task Daemon_killed_while_the_VM_runs_stops_the_orphan_and_keeps_the_flushed_disk()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite();
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        var console = Path.Combine(site.Root, "console-1.log");
        var session = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console);
        int qemu = session.GetProperty("qemuPid").GetInt32();
        await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));

        await site.KillDaemonAsync();
        var (code, stdout, stderr) = await site.IsrAsync("status", "--json");
        Assert.True(code == 10, $"status should say it is not safe to leave: {code} {stdout} {stderr}");
        var advice = JsonDocument.Parse(stdout).RootElement[0].GetProperty("advice").GetString()!;
        Assert.Contains("the site daemon was killed while the VM of 'box' ran", advice);
        Assert.Contains($"QEMU (pid {qemu})", advice);
        Assert.Contains("'isr suspend box' checks it in as a version without a memory image", advice);
        Assert.True(TestSite.ProcessGone(qemu), "the orphaned QEMU still runs");
        // Every tick line the guest printed was written and synced (FLUSH acknowledged) before it was printed.
        var marker = SerialConsole.Ticks(console)[^1];

        var kept = await site.IsrJsonAsync("suspend", "box");
        Assert.Contains("the site daemon was killed", kept.GetProperty("stoppedBecause").GetString());
        Assert.Equal(0, kept.GetProperty("memoryImageBytes").GetInt64());
        Assert.Equal(2, kept.GetProperty("committed").GetProperty("version").GetInt64());

        var console2 = Path.Combine(site.Root, "console-2.log");
        var resumed = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console2);
        Assert.True(resumed.GetProperty("coldBoot").GetBoolean());
        var after = (await SerialConsole.WaitForTicksAsync(console2, 1, TimeSpan.FromSeconds(120)))[0];
        Assert.Equal(marker.Boot + 1, after.Boot); // booted from the kept disk
        await site.IsrJsonAsync("suspend", "box");
        var image = await ParcelInspector.ExportDiskAsync(site.Store, "box", TestSite.Password, site.Root);
        Assert.Contains($"counter={marker.Counter} seed={marker.Seed} boot={marker.Boot}", await ParcelInspector.ReadGuestFileAsync(image, "/ticks"));
    }
}
