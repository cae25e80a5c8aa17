using System.Diagnostics;
using System.Text.Json;

namespace Isr.EndToEnd.Tests;

/// <summary>QEMU dies mid-session: the disk the guest wrote is kept; suspend stores it as a version without a memory
/// image, says so, and the next resume boots from that disk.</summary>
public sealed class VmExitTests
{
    [Fact]
    public async Task A_crashed_QEMU_keeps_the_disk_and_the_next_resume_boots_from_it()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite();
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        var console = Path.Combine(site.Root, "console-1.log");
        var session = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console);
        var ticks = await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));

        using (var qemu = Process.GetProcessById(session.GetProperty("qemuPid").GetInt32())) qemu.Kill();
        JsonElement stopped = default;
        for (int i = 0; i < 60; i++)
        {
            stopped = (await site.IsrJsonAsync("stat", "box")).GetProperty("session");
            if (stopped.GetProperty("state").GetString()!.StartsWith("QEMU stopped unexpectedly", StringComparison.Ordinal)) break;
            await Task.Delay(500);
        }
        Assert.StartsWith("QEMU stopped unexpectedly", stopped.GetProperty("state").GetString());

        var suspended = await site.IsrJsonAsync("suspend", "box");
        Assert.StartsWith("QEMU stopped unexpectedly", suspended.GetProperty("stoppedBecause").GetString());
        Assert.Equal(0, suspended.GetProperty("memoryImageBytes").GetInt64());
        Assert.Equal(2, suspended.GetProperty("committed").GetProperty("version").GetInt64());

        var console2 = Path.Combine(site.Root, "console-2.log");
        var resumed = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console2);
        Assert.True(resumed.GetProperty("coldBoot").GetBoolean());
        var after = (await SerialConsole.WaitForTicksAsync(console2, 1, TimeSpan.FromSeconds(120)))[0];
        Assert.Equal(ticks[0].Boot + 1, after.Boot);    // a reboot, from the kept disk: its boot count went on
        Assert.NotEqual(ticks[0].Seed, after.Seed);
        await site.IsrJsonAsync("suspend", "box");
        var image = await ParcelInspector.ExportDiskAsync(site.Store, "box", TestSite.Password, site.Root);
        Assert.Contains($"counter={ticks[2].Counter} seed={ticks[2].Seed}", await ParcelInspector.ReadGuestFileAsync(image, "/ticks"));
    }
}
