using System.Text.Json;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// A resume at site B while site A checks the parcel in waits for A's commit, showing A's progress (PROTOCOL.md,
/// Locks). The wait's rules run against the real isr-server on a virtual clock (minutes of waiting in no real time);
/// the whole story runs with real QEMU, A's upload held at a pause point until the test lets it go.
/// </summary>
public sealed class CheckinWaitTests(CheckinWaitTests.TwoSites sites) : IClassFixture<CheckinWaitTests.TwoSites>
{
    /// <summary>A clock that jumps: a timer set for T fires at once and moves the clock on by T.</summary>
    private sealed class JumpingClock : TimeProvider
    {
        private long _ticks = DateTimeOffset.UtcNow.UtcTicks;
        public TimeSpan Jumped { get; private set; }
        public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _ticks), TimeSpan.Zero);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Interlocked.Add(ref _ticks, dueTime.Ticks);
            Jumped += dueTime;
            return System.CreateTimer(callback, state, TimeSpan.Zero, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Two sites logged in to a real server, and a parcel "box" made at site A from a small blank disk (set up
    /// once: each test starts from a lock site A has just taken).</summary>
    public sealed class TwoSites : IAsyncLifetime
    {
        public TestSite A { get; } = new("site-a");
        public TestSite B { get; } = new("site-b");
        public TestServer Server { get; private set; } = null!;
        public ServerParcelHome HomeA { get; private set; } = null!;
        public ServerParcelHome HomeB { get; private set; } = null!;
        public string SiteA => new SiteDirectory(A.Home).Identity.Id;
        public string SiteB => new SiteDirectory(B.Home).Identity.Id;

        public async Task InitializeAsync()
        {
            Server = await TestServer.StartAsync(A.Root, TestSite.Password);
            foreach (var site in new[] { A, B }) await site.LoginAsync(Server);
            var blank = Path.Combine(A.Root, "blank.raw");
            File.WriteAllBytes(blank, new byte[1 << 20]);
            await A.IsrOkAsync("create", "box", "--from", blank);
            HomeA = new ServerParcelHome(new SiteDirectory(A.Home).Login!);
            HomeB = new ServerParcelHome(new SiteDirectory(B.Home).Login!);
        }

        /// <summary>Ends whatever lock an earlier test left, then takes a new one for site A.</summary>
        public async Task<string> FreshLockAtAAsync()
        {
            await HomeB.BreakLockAsync("box", default);
            return await LockAtAAsync();
        }

        public async Task<string> LockAtAAsync() => await HomeA.AcquireLockAsync("box", SiteA, "site-a", default);

        public async Task DisposeAsync()
        {
            HomeA?.Dispose();
            HomeB?.Dispose();
            if (Server is not null) await Server.DisposeAsync();
            await A.DisposeAsync();
            await B.DisposeAsync();
        }
    }

    private static readonly TimeSpan Stale = TimeSpan.FromMinutes(2);

    [Fact]
    public async Task Waits_while_the_holder_checks_in_and_returns_once_it_lets_go()
    {
        var token = await sites.FreshLockAtAAsync();
        await sites.HomeA.ReportCheckinAsync("box", token, 40 << 20, 120 << 20, default);
        var seen = new List<LockInfo>();
        await CheckinWait.WaitAsync(sites.HomeB, "box", sites.SiteB, Stale, new InlineProgress<LockInfo>(holder =>
        {
            seen.Add(holder);
            // A's commit lands and its lock goes while B waits (inline: B's next poll sees it)
            if (seen.Count == 2) sites.HomeA.ReleaseLockAsync("box", token, default).AsTask().GetAwaiter().GetResult();
        }), new JumpingClock(), default);
        Assert.Equal(2, seen.Count);
        Assert.All(seen, h => Assert.Equal(("site-a", 40L << 20, (long?)(120L << 20)), (h.SiteName, h.Checkin!.Sent, h.Checkin.Total)));
        Assert.Null(await sites.HomeB.GetLockAsync("box", default));
        await sites.HomeB.AcquireLockAsync("box", sites.SiteB, "site-b", default); // B takes it now
    }

    [Fact]
    public async Task A_check_in_that_stops_reporting_is_given_up_with_the_lock_held_message()
    {
        var token = await sites.FreshLockAtAAsync();
        await sites.HomeA.ReportCheckinAsync("box", token, 1 << 20, null, default); // then site A is lost
        var clock = new JumpingClock();
        int reports = 0;
        var refused = await Assert.ThrowsAsync<ParcelLockedException>(() => CheckinWait.WaitAsync(sites.HomeB, "box", sites.SiteB, Stale,
            new InlineProgress<LockInfo>(_ => reports++), clock, default));
        Assert.True(reports > 1, $"it waited first ({reports} polls)");
        Assert.InRange(clock.Jumped, Stale - TimeSpan.FromSeconds(5), Stale + TimeSpan.FromSeconds(5)); // about the stale period, polled at most 5 s apart
        Assert.Contains("locked by site 'site-a'", refused.Message);
        Assert.Contains("reported no progress for", refused.Message);
        Assert.Contains("isr lock PARCEL --break", refused.Message);
        Assert.Equal("site-a", refused.Holder!.SiteName);
        Assert.NotNull(await sites.HomeB.GetLockAsync("box", default)); // waiting changed nothing
    }

    [Fact]
    public async Task A_holder_that_is_not_checking_in_is_refused_at_once()
    {
        var token = await sites.FreshLockAtAAsync(); // its VM runs there
        int reports = 0;
        var progress = new InlineProgress<LockInfo>(_ => reports++);
        var refused = await Assert.ThrowsAsync<ParcelLockedException>(() =>
            CheckinWait.WaitAsync(sites.HomeB, "box", sites.SiteB, Stale, progress, new JumpingClock(), default));
        Assert.DoesNotContain("progress", refused.Message);
        Assert.Contains("--break", refused.Message);

        // a check-in that failed, then a resume at A again (it takes the lock again): refused at once too
        await sites.HomeA.ReportCheckinAsync("box", token, 5, 10, default);
        Assert.Equal(token, await sites.LockAtAAsync());
        await Assert.ThrowsAsync<ParcelLockedException>(() =>
            CheckinWait.WaitAsync(sites.HomeB, "box", sites.SiteB, Stale, progress, new JumpingClock(), default));
        Assert.Equal(0, reports);
        // the holder's own site never waits for itself
        await CheckinWait.WaitAsync(sites.HomeA, "box", sites.SiteA, Stale, progress, new JumpingClock(), default);
    }

    [Fact]
    public async Task The_reporter_sends_progress_and_keeps_beating_while_the_upload_is_held()
    {
        var token = await sites.FreshLockAtAAsync();
        await using (var reporter = new CheckinReporter(sites.HomeA, "box", token))
        {
            reporter.Total(120);
            reporter.Sent(40);
            var first = await PollAsync(sites.HomeB, c => c.Sent == 40 && c.Total == 120);
            // no new bytes (the upload is held), yet the reports go on: B can tell A is alive
            var later = await PollAsync(sites.HomeB, c => c.Updated > first.Updated);
            Assert.Equal((40L, (long?)120L, first.Started), (later.Sent, later.Total, later.Started));
        }
        await sites.HomeA.ReleaseLockAsync("box", token, default);
        var late = await Assert.ThrowsAsync<ServerException>(() => sites.HomeA.ReportCheckinAsync("box", token, 1, 2, default).AsTask());
        Assert.Equal("forbidden", late.Code); // a report after the lock is let go is refused
    }

    [Fact]
    public async Task The_cli_under_json_prints_the_wait_on_stderr_and_ctrl_c_changes_nothing()
    {
        var token = await sites.FreshLockAtAAsync();
        await sites.HomeA.ReportCheckinAsync("box", token, 3 << 20, 9 << 20, default);
        await using (var resume = sites.B.IsrStart(["resume", "box", "--headless", "--json", "--stale-after", "3600"]))
        {
            var line = await resume.WaitForStderrAsync("{\"waiting\":", TimeSpan.FromMinutes(2));
            var waiting = JsonDocument.Parse(line).RootElement.GetProperty("waiting");
            Assert.Equal(("site-a", 3L << 20, 9L << 20), (waiting.GetProperty("site").GetString(), waiting.GetProperty("sent").GetInt64(),
                waiting.GetProperty("total").GetInt64()));
            await resume.InterruptAsync();
            var (code, stdout, stderr) = await resume.ExitAsync(TimeSpan.FromMinutes(1));
            Assert.True(code == 130, $"exit {code}: {stderr}");
            Assert.Equal("", stdout);
        }
        var holder = (await sites.HomeB.GetLockAsync("box", default))!; // still A's, still checking in
        Assert.Equal(("site-a", 3L << 20), (holder.SiteName, holder.Checkin!.Sent));
        var shown = await sites.B.IsrOkAsync("lock", "box");
        Assert.Contains("locked by site 'site-a'", shown);
        Assert.Contains("; checking it in: 3.0 MiB of 9.0 MiB sent, last report ", shown);
    }

    /// <summary>The whole story with real QEMU and the CLI: A checks in, its upload held before the commit; B's resume
    /// waits, saying so with A's progress; once A is let go and commits, B resumes that new version where A's guest stopped.</summary>
    [Fact]
    public async Task Resume_at_site_B_waits_for_site_As_check_in_and_resumes_what_it_committed()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        foreach (var site in new[] { a, b }) await site.LoginAsync(server);
        var consoleA = await CycleSteps.CreateAndBootAsync(a);
        var timeout = TimeSpan.FromMinutes(3);

        // While A's VM runs, B is refused at once: nothing is on its way.
        var (running, _, runningErr) = await b.IsrAsync("resume", "box", "--headless");
        Assert.Equal(5, running);
        Assert.Contains("locked by site 'site-a'", runningErr);
        Assert.DoesNotContain("waiting", runningErr);

        await a.IsrJsonAsync("suspend", "box");
        var last = SerialConsole.Ticks(consoleA)[^1];
        // The site daemon runs the check-in the CLI asks for: the daemon is the one that pauses once its blobs are up.
        var release = Path.Combine(a.Root, "release-checkin");
        await a.KillDaemonAsync();
        await using var daemonA = a.IsrStart(["daemon"], new() { ["ISR_PAUSE_AT"] = $"checkin.after-upload:{release}" });
        await a.WaitForDaemonAsync();
        await using var checkin = a.IsrStart(["checkin", "box"]);
        await daemonA.WaitForStderrAsync("paused at checkin.after-upload", timeout);

        // --no-wait keeps the old immediate refusal.
        var (noWait, _, noWaitErr) = await b.IsrAsync("resume", "box", "--headless", "--no-wait");
        Assert.Equal(5, noWait);
        Assert.Contains("locked by site 'site-a'", noWaitErr);

        var consoleB = Path.Combine(b.Root, "console-b.log");
        await using var resume = b.IsrStart(["resume", "box", "--headless", "--serial", consoleB]);
        var waiting = await resume.WaitForStderrAsync("waiting for the check-in at site 'site-a'", timeout);
        Assert.Matches(@"^isr: waiting for the check-in at site 'site-a': \d+(\.\d)? (B|KiB|MiB)( of \d+\.\d MiB)? sent$", waiting);
        // A reports every CheckinReporter.Interval: an upload shorter than that shows its bytes at the next report.
        var reported = await resume.WaitForStderrAsync(" MiB of ", timeout);
        Assert.Matches(@"^isr: waiting for the check-in at site 'site-a': \d+\.\d MiB of \d+\.\d MiB sent$", reported);

        File.WriteAllText(release, "");
        var (codeA, outA, errA) = await checkin.ExitAsync(timeout);
        Assert.True(codeA == 0, $"site A's check-in exited {codeA}: {errA}");
        Assert.Contains("box is at version 2", outA);
        var (codeB, outB, errB) = await resume.ExitAsync(timeout);
        Assert.True(codeB == 0, $"site B's resume exited {codeB}: {errB}\n{b.DaemonLog()}");
        Assert.Contains("isr: site 'site-a' finished checking 'box' in; resuming the version it committed", errB);
        Assert.Matches(@"resumed \S*box\S* version 2 in ", outB); // (the name in bold)

        // B runs what A committed: the same memory, the counter one or two ticks on from A's last.
        var first = (await CycleSteps.WaitForTicksAsync(b, consoleB, 1))[0];
        Assert.Equal((last.Seed, last.Boot), (first.Seed, first.Boot));
        Assert.InRange(first.Counter, last.Counter + 1, last.Counter + 2);
        await b.IsrJsonAsync("suspend", "box");
    }

    /// <summary>The lock's check-in as B sees it, once it satisfies <paramref name="done"/> (reports come every
    /// <see cref="CheckinReporter.Interval"/>; bounded at a minute).</summary>
    private static async Task<Isr.Storage.Metadata.LockCheckin> PollAsync(ServerParcelHome home, Func<Isr.Storage.Metadata.LockCheckin, bool> done)
    {
        for (int poll = 0; poll < 600; poll++)
        {
            if ((await home.GetLockAsync("box", default))?.Checkin is { } c && done(c)) return c;
            await Task.Delay(100);
        }
        throw new TimeoutException("the reporter's progress did not reach the server within a minute");
    }
}
