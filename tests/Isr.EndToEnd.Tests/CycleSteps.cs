using Isr.Client.Homes;

namespace Isr.EndToEnd.Tests;

/// <summary>The steps of seed 000's cycle that several end-to-end tests share: work at one site and check in, resume at
/// another exactly where the guest stopped, and find every write in the newest version.</summary>
public static class CycleSteps
{
    public static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(120);

    /// <summary>Creates parcel "box" from the test guest at <paramref name="site"/> and boots it until it ticks.</summary>
    public static async Task<string> CreateAndBootAsync(TestSite site)
    {
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage("disk.qcow2"));
        var console = Path.Combine(site.Root, $"console-{site.Name}.log");
        await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console);
        await WaitForTicksAsync(site, console, 3);
        return console;
    }

    /// <summary>Waits for the guest's ticks; a guest that does not get there fails with the site daemon's log.</summary>
    public static async Task<IReadOnlyList<Tick>> WaitForTicksAsync(TestSite site, string console, int count)
    {
        try { return await SerialConsole.WaitForTicksAsync(console, count, GuestTimeout); }
        catch (TimeoutException e)
        {
            var log = site.DaemonLog();
            throw new TimeoutException($"{e.Message}\ndaemon log (tail):\n{log[Math.Max(0, log.Length - 4000)..]}", e);
        }
    }

    /// <summary>Suspends (kept at the site) and checks in as <paramref name="version"/>; returns the guest's last tick.</summary>
    public static async Task<Tick> SuspendAndCheckInAsync(TestSite site, string console, long version)
    {
        var suspended = await site.IsrJsonAsync("suspend", "box");
        Assert.False(suspended.TryGetProperty("committed", out _)); // kept at the site until check-in
        var last = SerialConsole.Ticks(console)[^1];
        var checkin = await site.IsrJsonAsync("checkin", "box");
        Assert.Equal(version, checkin.GetProperty("version").GetInt64());
        Assert.True(checkin.GetProperty("lockReleased").GetBoolean());
        return last;
    }

    /// <summary>Resumes at <paramref name="site"/> and checks the guest continues from <paramref name="before"/>: same
    /// memory (seed), same boot, the counter one or two ticks on. Returns the console file.</summary>
    public static async Task<string> ResumeWhereItStoppedAsync(TestSite site, Tick before)
    {
        var console = Path.Combine(site.Root, $"console-{site.Name}.log");
        var (resumed, progress) = await site.IsrJsonAndStderrAsync("resume", "box", "--headless", "--serial", console);
        Assert.False(resumed.GetProperty("coldBoot").GetBoolean());
        // Under --json the progress lines are JSON on stderr, the guest's start among them: a script can act on it then.
        Assert.Contains("{\"progress\":\"the VM runs\"}", progress.Split('\n').Select(line => line.Trim()));
        var first = (await WaitForTicksAsync(site, console, 2))[0];
        Assert.Equal(before.Seed, first.Seed);
        Assert.Equal(before.Boot, first.Boot);
        Assert.InRange(first.Counter, before.Counter + 1, before.Counter + 2);
        return console;
    }

    /// <summary>Reads the newest version's disk back through the server and requires every tick in <paramref name="writes"/>.</summary>
    public static async Task AssertNewestHoldsAsync(ServerParcelHome home, string scratch, params Tick[] writes)
    {
        var image = await ParcelInspector.ExportDiskAsync(home, "box", TestSite.Password, scratch);
        var ticks = await ParcelInspector.ReadGuestFileAsync(image, "/ticks");
        foreach (var w in writes) Assert.Contains($"counter={w.Counter} seed={w.Seed}", ticks);
        File.Delete(image);
    }
}
