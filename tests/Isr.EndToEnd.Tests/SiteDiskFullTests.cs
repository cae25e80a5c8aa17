using Isr.Testing;

namespace Isr.EndToEnd.Tests;

/// <summary>ISR_HOME on a small real file system that fills up while the VM runs: the suspend fails saying where and
/// what was kept, the VM goes on running, and once there is room the suspend succeeds and the next resume continues
/// the guest's RAM state.</summary>
public sealed class SiteDiskFullTests
{
    [Fact]
    public async Task A_suspend_on_a_full_site_disk_names_the_path_keeps_the_VM_running_and_succeeds_once_there_is_room()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite();
        using var fs = new SmallFileSystem(128L << 20, at: site.Home);
        try
        {
            Directory.CreateDirectory(site.Store);
            await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
            var console = Path.Combine(site.Root, "console-1.log");
            await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console);
            var before = (await SerialConsole.WaitForTicksAsync(console, 2, TimeSpan.FromSeconds(120)))[^1];

            var filler = fs.Fill(leave: 256 * 1024);
            var (code, _, stderr) = await site.IsrAsync("suspend", "box");
            Assert.NotEqual(0, code);
            Assert.Contains($"the site's disk is full at {Path.Combine(site.Home, "cache")} while saving the memory image of 'box'", stderr);
            Assert.Contains("Nothing was committed", stderr);
            Assert.Contains("the VM goes on running", stderr);

            Assert.Equal("running", (await site.IsrJsonAsync("stat", "box")).GetProperty("session").GetProperty("state").GetString());
            int seen = SerialConsole.Ticks(console).Count;
            var later = (await SerialConsole.WaitForTicksAsync(console, seen + 1, TimeSpan.FromSeconds(120)))[^1];
            Assert.True(later.Counter > before.Counter); // the guest went on after the failed suspend

            File.Delete(filler);
            var suspended = await site.IsrJsonAsync("suspend", "box");
            Assert.Equal(2, suspended.GetProperty("committed").GetProperty("version").GetInt64());
            var last = SerialConsole.Ticks(console)[^1];

            var console2 = Path.Combine(site.Root, "console-2.log");
            var resumed = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console2);
            Assert.False(resumed.GetProperty("coldBoot").GetBoolean());
            var after = (await SerialConsole.WaitForTicksAsync(console2, 1, TimeSpan.FromSeconds(120)))[0];
            Assert.Equal(last.Seed, after.Seed);   // the same boot's RAM: nothing of the running state was lost
            Assert.InRange(after.Counter, last.Counter + 1, last.Counter + 2);
            await site.IsrJsonAsync("suspend", "box");
        }
        finally
        {
            await site.DisposeAsync(); // the daemon holds files on the mount: stop it before unmounting
        }
    }
}
