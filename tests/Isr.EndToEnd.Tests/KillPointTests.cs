using System.Text.Json;

namespace Isr.EndToEnd.Tests;

/// <summary>The client is SIGKILLed at each step of a check-in (deterministic kill points, not sleeps): the next
/// check-in completes it, with no duplicate version, nothing lost, and the parcel resumable at another site.</summary>
public sealed class KillPointTests
{
    [Fact]
    public async Task Checkin_killed_at_every_step_completes_once_on_retry()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        foreach (var site in new[] { a, b }) await site.LoginAsync(server);
        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage());
        var console = Path.Combine(a.Root, "console-a.log");
        await a.IsrJsonAsync("resume", "box", "--headless", "--serial", console);
        await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));
        await a.IsrJsonAsync("suspend", "box");
        var before = SerialConsole.Ticks(console)[^1];

        var (unsafeCode, unsafeOut, _) = await a.IsrAsync("status", "--json");
        Assert.Equal(10, unsafeCode); // suspended but not checked in: not safe to leave
        Assert.True(JsonDocument.Parse(unsafeOut).RootElement[0].GetProperty("pendingCheckin").GetBoolean());

        // A running site daemon checks in for the CLI, else the CLI does it itself: each of them is killed at each step.
        await a.KillDaemonAsync();
        foreach (var step in new[] { "checkin.after-upload", "checkin.after-commit", "checkin.after-journal" })
        {
            await using (var daemon = a.IsrStart(["daemon"], new() { ["ISR_KILL_AT"] = step }))
            {
                await a.WaitForDaemonAsync();
                var (viaDaemon, _, viaDaemonErr) = await a.IsrAsync("checkin", "box");
                Assert.True(viaDaemon == 1, $"the daemon should have died under the check-in at {step}: {viaDaemon} {viaDaemonErr}");
                Assert.Contains("the site daemon closed the connection without an answer", viaDaemonErr);
                var (daemonCode, _, daemonErr) = await daemon.ExitAsync(TimeSpan.FromSeconds(30));
                Assert.True(daemonCode == 137, $"expected the daemon's SIGKILL at {step}, got {daemonCode}: {daemonErr}");
                Assert.Contains($"killed at {step}", daemonErr);
            }
            var (code, _, stderr) = await a.IsrKilledAtAsync(step, "checkin", "box");
            Assert.True(code == 137, $"expected a SIGKILL at {step}, got {code}: {stderr}");
            Assert.Contains($"killed at {step}", stderr);
        }
        // The last try runs in the background with the site wipe configured: the CLI returns, `isr status` follows it.
        File.WriteAllText(Path.Combine(a.Home, "config.json"), "{\"wipeAfterCheckin\": true, \"wipeCache\": true}");
        Assert.Equal("uploading", (await a.IsrJsonAsync("checkin", "box", "--background")).GetProperty("state").GetString());
        JsonElement status = default;
        for (int poll = 0; poll < 1200 && !(status.ValueKind == JsonValueKind.Object && status.GetProperty("safeToLeave").GetBoolean()); poll++)
        {
            if (poll > 0) await Task.Delay(250);
            var (statusCode, statusOut, _) = await a.IsrAsync("status", "--json");
            status = JsonDocument.Parse(statusOut).RootElement[0];
            Assert.Equal(status.GetProperty("safeToLeave").GetBoolean() ? 0 : 10, statusCode);
            Assert.NotEqual("failed", status.GetProperty("backgroundCheckin").GetProperty("state").GetString());
        }
        var done = status.GetProperty("backgroundCheckin").GetProperty("result");
        Assert.True(status.GetProperty("safeToLeave").GetBoolean(), status.ToString());
        Assert.Contains("safe to leave", status.GetProperty("advice").GetString());
        Assert.Equal(2, done.GetProperty("version").GetInt64());
        Assert.True(done.GetProperty("lockReleased").GetBoolean());
        // Wiped: nothing left at site A that the password could open; the cache holds no blob.
        Assert.False(Directory.Exists(Path.Combine(a.Home, "parcels", "box")));
        Assert.False(File.Exists(Path.Combine(a.Home, "login.json")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(a.Home, "cache"), "*", SearchOption.AllDirectories));
        await AssertOneVersionThatContinuesAtAsync(b, before); // six interrupted check-ins and one complete one
    }

    /// <summary>The server holds exactly one new version (v2), and site B resumes it where the guest stopped.</summary>
    private static async Task AssertOneVersionThatContinuesAtAsync(TestSite b, Tick before)
    {
        var versions = (await b.IsrJsonAsync("ls", "-l"))[0].GetProperty("versions").EnumerateArray().ToList();
        Assert.Equal(2, versions.Count);
        var consoleB = Path.Combine(b.Root, "console-b.log");
        await b.IsrJsonAsync("resume", "box", "--headless", "--serial", consoleB);
        var first = (await SerialConsole.WaitForTicksAsync(consoleB, 1, TimeSpan.FromSeconds(120)))[0];
        Assert.Equal(before.Seed, first.Seed);
        Assert.InRange(first.Counter, before.Counter + 1, before.Counter + 2);
        await b.IsrJsonAsync("suspend", "box");
    }

    /// <summary>The daemon dies while suspending, after the version is durable as pending but before QEMU quits, and
    /// the site then loses power (QEMU killed too): the next check-in commits that version once, and another site
    /// resumes it where the guest stopped.</summary>
    [Fact]
    public async Task Suspend_killed_after_the_pending_commit_is_checked_in_by_the_next_command()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        // No daemon at login (it keeps keys): the resume below must start it, with the kill point.
        await a.LoginAsync(server, "--keep-keys", "0");
        await b.LoginAsync(server);
        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage());
        var console = Path.Combine(a.Root, "console-a.log");
        const string step = "session.after-pending-commit";
        await a.IsrJsonKillingAtAsync(step, "resume", "box", "--headless", "--serial", console); // starts the daemon with it
        await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));

        var (code, _, stderr) = await a.IsrAsync("suspend", "box");
        Assert.True(code != 0, $"suspend should fail when the daemon dies: {stderr}");
        Assert.Contains($"killed at {step}", a.DaemonLog());
        var before = SerialConsole.Ticks(console)[^1];
        a.KillQemus();

        var done = await a.IsrJsonAsync("checkin", "box");
        Assert.Equal(2, done.GetProperty("version").GetInt64());
        await AssertOneVersionThatContinuesAtAsync(b, before);
    }

    /// <summary>The daemon dies while suspending after the memory image is saved but before any version is prepared,
    /// and QEMU is killed: nothing is pending, the disk the guest flushed is kept; the next resume boots from it, and
    /// the next suspend and check-in commit it once.</summary>
    [Fact]
    public async Task Suspend_killed_after_the_memory_image_keeps_the_flushed_disk()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        await a.LoginAsync(server, "--keep-keys", "0"); // the resume below starts the daemon, with the kill point
        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage());
        var console = Path.Combine(a.Root, "console-1.log");
        const string step = "session.after-memory-image";
        await a.IsrJsonKillingAtAsync(step, "resume", "box", "--headless", "--serial", console);
        var ticks = await SerialConsole.WaitForTicksAsync(console, 3, TimeSpan.FromSeconds(120));

        var (code, _, stderr) = await a.IsrAsync("suspend", "box");
        Assert.True(code != 0, $"suspend should fail when the daemon dies: {stderr}");
        Assert.Contains($"killed at {step}", a.DaemonLog());
        a.KillQemus();

        var console2 = Path.Combine(a.Root, "console-2.log");
        var resumed = await a.IsrJsonAsync("resume", "box", "--headless", "--serial", console2);
        Assert.True(resumed.GetProperty("coldBoot").GetBoolean()); // version 1 has no memory image: it boots the kept disk
        var after = (await SerialConsole.WaitForTicksAsync(console2, 1, TimeSpan.FromSeconds(120)))[0];
        Assert.Equal(ticks[0].Boot + 1, after.Boot); // the boot count the guest flushed before the kill is still on the disk
        await a.IsrJsonAsync("suspend", "box");
        var done = await a.IsrJsonAsync("checkin", "box");
        Assert.Equal(2, done.GetProperty("version").GetInt64());
    }
}
