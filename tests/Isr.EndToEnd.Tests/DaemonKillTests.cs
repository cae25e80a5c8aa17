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
        var (console, qemu) = await RunningBox.StartAsync(site);

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

/// <summary>Parcel "box" created in the site's store and resumed (a boot) until the guest ticks.</summary>
internal static class RunningBox
{
    /// <returns>The serial console's file and QEMU's PID.</returns>
    public static async Task<(string Console, int Qemu)> StartAsync(TestSite site)
    {
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        var console = Path.Combine(site.Root, "console-1.log");
        var session = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console);
        await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));
        return (console, session.GetProperty("qemuPid").GetInt32());
    }
}

/// <summary>One daemon per site directory: a second `isr daemon` for it is refused while the first runs a VM, which goes
/// on (a second one used to take over the socket and stop that VM as an orphan).</summary>
public sealed class DaemonInstanceTests
{
    [Fact]
    public async Task A_second_daemon_for_the_site_is_refused_and_the_running_VM_goes_on()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite();
        var (console, qemu) = await RunningBox.StartAsync(site);
        int? daemon = await site.DaemonPidAsync();

        var (code, stdout, stderr) = await site.IsrAsync("daemon", "--service");
        Assert.True(code == 5, $"a second daemon should be refused as a conflict: {code} {stdout} {stderr}");
        Assert.Contains($"another site daemon (pid {daemon}) already serves", stderr);
        Assert.Equal(daemon, await site.DaemonPidAsync());
        Assert.False(TestSite.ProcessGone(qemu), "the running VM's QEMU was stopped");
        int ticks = SerialConsole.Ticks(console).Count;
        await SerialConsole.WaitForTicksAsync(console, ticks + 2, TimeSpan.FromSeconds(120));

        var suspended = await site.IsrJsonAsync("suspend", "box");
        Assert.True(suspended.GetProperty("memoryImageBytes").GetInt64() > 0);
        Assert.Equal(2, suspended.GetProperty("committed").GetProperty("version").GetInt64());
    }

    /// <summary>The first daemon is hung (SIGSTOP: it holds the lock and its socket accepts, but nothing answers): the
    /// second is refused all the same, without the PID it could not learn, instead of waiting on it for ever.</summary>
    [Fact]
    public async Task A_second_daemon_is_refused_even_when_the_first_one_hangs()
    {
        await using var site = new TestSite();
        await using var first = site.IsrStart(["daemon", "--service"]);
        int pid = await site.WaitForDaemonAsync();
        Signal("STOP", pid);
        try
        {
            await using var second = site.IsrStart(["daemon", "--service"]);
            var (code, _, stderr) = await second.ExitAsync(TimeSpan.FromSeconds(60));
            Assert.True(code == 5, $"a second daemon should be refused as a conflict: {code} {stderr}");
            Assert.Contains("another site daemon already serves", stderr);
        }
        finally
        {
            Signal("CONT", pid);
        }
    }

    private static void Signal(string signal, int pid)
    {
        using var kill = System.Diagnostics.Process.Start("kill", [$"-{signal}", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }
}

/// <summary>The daemon dies during `isr sync` (the VM keeps running through a sync) at its kill points: the next
/// commands recover with no duplicate version and nothing the guest flushed lost.</summary>
public sealed class SyncKillTests
{
    /// <summary>Killed after the memory image, before any version is prepared: nothing is pending; the disk is kept.</summary>
    [Fact]
    public async Task Sync_killed_after_the_memory_image_keeps_the_flushed_disk()
    {
        await using var site = new TestSite();
        var (console, marker) = await KillDuringSyncAsync(site, "session.after-memory-image");
        Assert.False(File.Exists(Path.Combine(site.Home, "parcels", "box", "pending-commit.json")));
        await KeepAndBootAsync(site, marker, version: 2);
    }

    /// <summary>Killed once the version is durable as pending: `isr checkin` commits it once; anything the guest flushed
    /// after the sync froze the disk stays as local changes on top of it, not dropped.</summary>
    [Fact]
    public async Task Sync_killed_after_the_pending_commit_commits_it_once_and_keeps_later_flushes()
    {
        await using var site = new TestSite();
        var (console, marker) = await KillDuringSyncAsync(site, "session.after-pending-commit");
        var (code, stdout, _) = await site.IsrAsync("status", "--json");
        Assert.Equal(10, code);
        Assert.Contains("suspended here but not checked in", JsonDocument.Parse(stdout).RootElement[0].GetProperty("advice").GetString());
        Assert.Equal(2, (await site.IsrJsonAsync("checkin", "box", "--store", site.Store)).GetProperty("version").GetInt64());
        Assert.Equal(2, await VersionCountAsync(site));

        var console2 = Path.Combine(site.Root, "console-2.log");
        var (resumeCode, resumeOut, resumeErr) = await site.IsrAsync("resume", "box", "--headless", "--serial", console2, "--json");
        if (resumeCode == 0)
        {
            // Nothing was flushed after the sync froze the disk: version 2 resumes from its memory image where the guest was.
            var first = (await SerialConsole.WaitForTicksAsync(console2, 1, TimeSpan.FromSeconds(120)))[0];
            Assert.Equal(marker.Seed, first.Seed);
            Assert.InRange(first.Counter, marker.Counter + 1, marker.Counter + 2);
            using var json = JsonDocument.Parse(resumeOut);
            site.TrackQemu(json.RootElement);
            await site.IsrJsonAsync("suspend", "box");
            Assert.Equal(3, await VersionCountAsync(site));
        }
        else
        {
            // The guest flushed after the freeze: those chunks are kept on top of version 2, and the user is told.
            Assert.Contains("not in version 2", resumeErr);
            Assert.Contains("the site daemon was killed", resumeErr);
            await KeepAndBootAsync(site, marker, version: 3);
        }
    }

    private static async Task<(string Console, Tick Marker)> KillDuringSyncAsync(TestSite site, string step)
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        var console = Path.Combine(site.Root, "console-1.log");
        var session = await site.IsrJsonKillingAtAsync(step, "resume", "box", "--headless", "--serial", console);
        int qemu = session.GetProperty("qemuPid").GetInt32();
        await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));
        var (code, _, stderr) = await site.IsrAsync("sync", "box");
        Assert.True(code != 0, $"sync should fail when the daemon dies: {stderr}");
        Assert.Contains($"killed at {step}", site.DaemonLog());
        var (_, stat, _) = await site.IsrAsync("stat", "box", "--json"); // the next command: a new daemon stops the orphan
        Assert.Contains("the site daemon was killed", JsonDocument.Parse(stat).RootElement.GetProperty("interrupted").GetString());
        Assert.True(TestSite.ProcessGone(qemu), "the orphaned QEMU still runs");
        return (console, SerialConsole.Ticks(console)[^1]);
    }

    /// <summary>`isr suspend` keeps the flushed disk as a version without a memory image; the resume boots from it.</summary>
    private static async Task KeepAndBootAsync(TestSite site, Tick marker, long version)
    {
        var kept = await site.IsrJsonAsync("suspend", "box");
        Assert.Equal(0, kept.GetProperty("memoryImageBytes").GetInt64());
        Assert.Equal(version, kept.GetProperty("committed").GetProperty("version").GetInt64());
        Assert.Equal(version, await VersionCountAsync(site));
        var image = await ParcelInspector.ExportDiskAsync(site.Store, "box", TestSite.Password, site.Root);
        Assert.Contains($"counter={marker.Counter} seed={marker.Seed} boot={marker.Boot}", await ParcelInspector.ReadGuestFileAsync(image, "/ticks"));
    }

    private static async Task<int> VersionCountAsync(TestSite site) =>
        (await site.IsrJsonAsync("ls", "-l", "--store", site.Store))[0].GetProperty("versions").GetArrayLength();
}

/// <summary>`isr checkin --background` is cut short by a daemon kill: the next daemon (started by `isr status`) takes
/// it up by itself; it commits once and the site then says it is safe to leave.</summary>
public sealed class BackgroundCheckinRestartTests
{
    [Fact]
    public async Task Background_checkin_killed_is_taken_up_by_the_next_daemon()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        await a.LoginAsync(server, "--keep-keys", "0"); // no daemon yet: the resume below starts it, with the kill point
        await b.LoginAsync(server);
        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage());
        var console = Path.Combine(a.Root, "console-a.log");
        const string step = "checkin.after-commit";
        await a.IsrJsonKillingAtAsync(step, "resume", "box", "--headless", "--serial", console); // the daemon inherits the kill point
        await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));
        await a.IsrJsonAsync("suspend", "box");
        int daemon = (await a.DaemonPidAsync())!.Value;
        await a.IsrJsonAsync("checkin", "box", "--background");
        for (int i = 0; i < 600 && !TestSite.ProcessGone(daemon); i++) await Task.Delay(100);
        Assert.True(TestSite.ProcessGone(daemon), "the daemon did not reach the kill point");
        Assert.Contains($"killed at {step}", a.DaemonLog());

        JsonElement status = default;
        for (int poll = 0; poll < 1200 && !(status.ValueKind == JsonValueKind.Object && status.GetProperty("safeToLeave").GetBoolean()); poll++)
        {
            if (poll > 0) await Task.Delay(250);
            var (_, statusOut, _) = await a.IsrAsync("status", "--json");
            status = JsonDocument.Parse(statusOut).RootElement[0];
            // No `isr checkin` again: from the first status on, the daemon that status started runs the check-in.
            Assert.Equal(JsonValueKind.Object, status.GetProperty("backgroundCheckin").ValueKind);
            Assert.NotEqual("failed", status.GetProperty("backgroundCheckin").GetProperty("state").GetString());
        }
        Assert.True(status.GetProperty("safeToLeave").GetBoolean(), status.ToString());
        Assert.Contains("safe to leave", status.GetProperty("advice").GetString());
        Assert.Equal(2, status.GetProperty("backgroundCheckin").GetProperty("result").GetProperty("version").GetInt64());
        Assert.Contains("taking up the background check-in of 'box'", a.DaemonLog());
        Assert.Equal(2, (await b.IsrJsonAsync("ls", "-l"))[0].GetProperty("versions").GetArrayLength());
    }
}
