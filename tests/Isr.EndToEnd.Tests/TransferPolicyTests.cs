namespace Isr.EndToEnd.Tests;

/// <summary>
/// The proactive and baseline policies with real QEMU and the real CLI: a site whose cache was emptied hoards the parcel
/// (no password), then resumes it with copy-in; the guest continues where it stopped and nothing comes from the home.
/// </summary>
public sealed class TransferPolicyTests
{
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Hoard_then_baseline_resume_continues_the_guest_without_fetching_from_the_home()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        TestEnvironment.RequireProgram("qemu-img");
        await using var site = new TestSite();
        await site.IsrJsonAsync("create", "box", "--from", TestEnvironment.GuestImage("disk.qcow2"), "--store", site.Store, "--memory", "256M");
        var firstConsole = Path.Combine(site.Root, "console-1.log");
        await site.IsrJsonAsync("resume", "box", "--store", site.Store, "--headless", "--serial", firstConsole);
        await SerialConsole.WaitForTicksAsync(firstConsole, 3, GuestTimeout);
        var suspended = await site.IsrJsonAsync("suspend", "box");
        Assert.Equal(2, suspended.GetProperty("committed").GetProperty("version").GetInt64());
        var before = SerialConsole.Ticks(firstConsole)[^1];

        // Forget every cached blob, as at a site that never ran the parcel (the incoming directory stays).
        var cache = Path.Combine(site.Home, "cache");
        foreach (var fanout in Directory.EnumerateDirectories(cache, "??")) Directory.Delete(fanout, recursive: true);

        // Hoard needs no password: run it without one.
        var env = new Dictionary<string, string> { ["ISR_HOME"] = site.Home, ["DISPLAY"] = "" };
        var (code, stdout, stderr) = await TestEnvironment.RunIsrAsync(["hoard", "box", "--store", site.Store, "--json"], env, TimeSpan.FromMinutes(3));
        Assert.True(code == 0, $"hoard exited {code}: {stderr}");
        var hoard = System.Text.Json.JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(2, hoard.GetProperty("version").GetInt64());
        Assert.Equal(hoard.GetProperty("blobs").GetInt32(), hoard.GetProperty("fetched").GetInt32());
        Assert.True(hoard.GetProperty("bytesFetched").GetInt64() > 1 << 20);

        // Resumable: a second run (rate-limited, to exercise the option) finds everything cached.
        var again = await site.IsrJsonAsync("hoard", "box", "--store", site.Store, "--bwlimit", "50M");
        Assert.Equal(0, again.GetProperty("fetched").GetInt32());
        Assert.Equal(hoard.GetProperty("blobs").GetInt32(), again.GetProperty("alreadyCached").GetInt32());

        var secondConsole = Path.Combine(site.Root, "console-2.log");
        var resumed = await site.IsrJsonAsync("resume", "box", "--policy", "baseline", "--headless", "--serial", secondConsole);
        Assert.False(resumed.GetProperty("coldBoot").GetBoolean());
        var after = (await SerialConsole.WaitForTicksAsync(secondConsole, 3, GuestTimeout))[0];
        Assert.Equal(before.Seed, after.Seed);           // same RAM: the guest continued
        Assert.Equal(before.Boot, after.Boot);
        Assert.InRange(after.Counter, before.Counter + 1, before.Counter + 2);

        var stat = await site.IsrJsonAsync("stat", "box");
        var session = stat.GetProperty("session");
        var transfers = session.GetProperty("transfers");
        Assert.Equal("baseline", transfers.GetProperty("policy").GetString());
        Assert.Equal(0, session.GetProperty("homeBytes").GetInt64());
        Assert.Equal(0, transfers.GetProperty("copyInBytes").GetInt64());
        Assert.Equal(0, transfers.GetProperty("totalHomeBytes").GetInt64());
        Assert.True(session.GetProperty("cacheBytes").GetInt64() > 1 << 20, "the memory image came from the cache");
        Assert.True(session.GetProperty("resumeSeconds").GetDouble() > 0);
        Assert.True(transfers.GetProperty("touchedChunks").GetInt64() > 0, "the guest's disk reads are recorded");

        // The next version carries the working set recorded since this resume.
        var third = await site.IsrJsonAsync("suspend", "box");
        Assert.Equal(3, third.GetProperty("committed").GetProperty("version").GetInt64());
        var record = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(
            Directory.EnumerateFiles(Path.Combine(site.Store, "parcels", "box", "versions")).Order().Last())).RootElement;
        Assert.Equal(64, record.GetProperty("workingSetTag").GetString()!.Length);

        // At a site with an empty cache, a demand resume replays that working set ahead of the guest.
        foreach (var fanout in Directory.EnumerateDirectories(cache, "??")) Directory.Delete(fanout, recursive: true);
        var thirdConsole = Path.Combine(site.Root, "console-3.log");
        var replayed = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", thirdConsole);
        // The working set's head was planned from the recorded touch times before cont (a fast link may need none of it).
        Assert.Contains(replayed.GetProperty("trace").EnumerateArray(), s => s.GetProperty("step").GetString()!.StartsWith("working-set head fetched"));
        var continued = (await SerialConsole.WaitForTicksAsync(thirdConsole, 2, GuestTimeout))[0];
        Assert.Equal(before.Seed, continued.Seed);
        var demand = (await site.IsrJsonAsync("stat", "box")).GetProperty("session");
        var replay = demand.GetProperty("transfers");
        Assert.Equal("demand", replay.GetProperty("policy").GetString());
        Assert.True(replay.GetProperty("workingSetReplayed").GetInt64() > 0);
        Assert.True(replay.GetProperty("prefetchChunks").GetInt64() + replay.GetProperty("prefetchBytes").GetInt64() > 0);
        Assert.True(demand.GetProperty("homeBytes").GetInt64() > 0, "the memory image came from the home");
        await site.IsrJsonAsync("suspend", "box");
    }
}
