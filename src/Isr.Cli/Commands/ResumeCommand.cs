using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Isr.Client.Daemon;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Vmm;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr resume PARCEL`: start the parcel's VM at this site where it left off (or boot it the first time).</summary>
public static class ResumeCommand
{
    public static Command Build()
    {
        var headless = new Option<bool>("--headless") { Description = "No display (for scripts)" };
        var vnc = new Option<bool>("--vnc") { Description = "Serve the display over VNC on loopback (the address is printed)" };
        var serial = new Option<FileInfo?>("--serial") { Description = "Write the guest's serial console to this file" };
        var serialPipe = new Option<string?>("--serial-pipe")
        {
            Description = "Connect the serial console to the FIFOs BASE.in (input) and BASE.out (output), which must exist (for scripts that talk to the guest)",
            HelpName = "BASE",
        };
        var cold = new Option<bool>("--cold") { Description = "Boot from the disk, discarding the memory image" };
        var yes = new Option<bool>("--yes") { Description = "Do not ask for confirmation" };
        var version = new Option<long?>("--version") { Description = "Resume this version instead of the newest" };
        var policy = new Option<TransferPolicy>("--policy")
        {
            Description = "demand: memory image first, disk on demand (default); baseline: copy every blob into the cache before starting",
            DefaultValueFactory = _ => TransferPolicy.Demand,
        };
        var prefetch = new Option<PrefetchMode>("--prefetch")
        {
            Description = "Fetch ahead of the guest: workingset (the chunks it used first last time, in order; default), all (then the rest of the disk, in the background), none",
            DefaultValueFactory = _ => PrefetchMode.WorkingSet,
        };
        var head = new Option<double>("--working-set-head")
        {
            Description = "Before the VM goes on, fetch the working set's first chunks that the link could not bring in before the guest " +
                "needs them (planned from the times recorded last session), at most this fraction of what the resume fetched: 1 (default), 0 = none",
            DefaultValueFactory = _ => new ResumeOptions().WorkingSetBeforeCont,
        };
        var trickle = new Option<string?>("--trickle-limit") { Description = "Rate for uploading changes while the VM runs (server homes), bytes/s: 2M (default), 0 = off" };
        var lookaside = new Option<string[]>("--lookaside")
        {
            Description = "Ask this source for blobs before the home (repeatable): a dongle directory, media indexed with 'isr lookaside index', a jukebox URL",
            AllowMultipleArgumentsPerToken = false,
        };
        var noWait = new Option<bool>("--no-wait")
        {
            Description = "If another site holds the lock while checking the parcel in, fail at once instead of waiting for its commit",
        };
        var staleAfter = new Option<int>("--stale-after")
        {
            Description = "Stop waiting for another site's check-in once it has reported no progress for this many seconds",
            HelpName = "SECONDS",
            DefaultValueFactory = _ => (int)CheckinWait.DefaultStaleAfter.TotalSeconds,
        };
        var command = new Command("resume", "Resume the parcel's VM at this site: continue where it was suspended")
        {
            Cli.Parcel, Cli.Store, Cli.PasswordFile, headless, vnc, serial, serialPipe, cold, yes, version, policy, prefetch, head, trickle, lookaside,
            noWait, staleAfter, Cli.Json,
        };
        command.Validators.Add(r =>
        {
            if (r.GetValue(headless) && r.GetValue(vnc))
                r.AddError("--headless and --vnc cannot be used together.");
            if (r.GetValue(serial) is not null && r.GetValue(serialPipe) is not null)
                r.AddError("--serial and --serial-pipe cannot be used together.");
        });
        command.SetAction(async (parse, ct) =>
        {
            var started = DateTimeOffset.UtcNow;
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            if (parse.GetValue(cold) && !parse.GetValue(yes) && !Confirm($"Boot '{name}' from its disk and discard its memory image (unsaved work in the running programs is lost)?"))
                return 1;
            var options = new ResumeOptions
            {
                Display = parse.GetValue(headless) ? QemuDisplayMode.Headless : parse.GetValue(vnc) ? QemuDisplayMode.Vnc : DefaultDisplay(),
                SerialPath = parse.GetValue(serial)?.FullName,
                SerialPipe = parse.GetValue(serialPipe) is { } pipeBase ? Path.GetFullPath(pipeBase) : null,
                Cold = parse.GetValue(cold),
                Version = parse.GetValue(version),
                CommandStarted = started,
                ProcessStarted = Cli.ProcessStarted(),
                DisplayEnvironment = new[] { "DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR" }
                    .Select(n => (n, v: Environment.GetEnvironmentVariable(n))).Where(e => !string.IsNullOrEmpty(e.v)).ToDictionary(e => e.n, e => e.v!),
                Policy = parse.GetValue(policy),
                Prefetch = parse.GetValue(prefetch),
                WorkingSetBeforeCont = parse.GetValue(head),
                Lookaside = (parse.GetValue(lookaside) ?? []).Select(s => s.Contains("://") ? s : Path.GetFullPath(s)).ToList(),
                TrickleBytesPerSecond = parse.GetValue(trickle) is { } rate ? Isr.Client.Transfer.TokenBucket.ParseRate(rate) ?? 0 : new ResumeOptions().TrickleBytesPerSecond,
            };
            if (parse.GetValue(staleAfter) <= 0) throw new UsageException("--stale-after must be a positive number of seconds");
            if (parse.GetValue(head) is < 0 or > 10 or double.NaN) throw new UsageException("--working-set-head must be a fraction from 0 to 10");
            // The daemon holds the keys after `isr login`. When it does not, it refuses before taking the lock or waiting
            // for anything, and the password is asked for then: no round trip to ask first (10–20 ms of a hoarded resume).
            var request = new DaemonRequest { Op = "resume", Parcel = name, Store = Cli.StorePath(parse, site, name), Resume = options };
            JsonElement? result;
            try { result = await Cli.SendNeedingKeysAsync(parse, site, request, ct); }
            catch (DaemonException e) when (e.Kind == nameof(ParcelLockedException) && !parse.GetValue(noWait))
            {
                // Asked only after a refusal, so an ordinary resume pays no extra round trip (a cold HTTPS connection
                // from this process was measured at 0.3–0.4 s, a third of a hoarded resume).
                await WaitForCheckinElsewhereAsync(parse, site, name, TimeSpan.FromSeconds(parse.GetValue(staleAfter)), ct);
                result = await Cli.SendNeedingKeysAsync(parse, site, request, ct);
            }
            var stats = result!.Value.Deserialize(DaemonJsonContext.Default.SessionStats)!;
            var vncAddress = VncAddress(result.Value);
            Cli.Print(parse, stats, DaemonJsonContext.Default.SessionStats, () =>
            {
                AnsiConsole.MarkupLineInterpolated(
                    $"resumed [bold]{name}[/] version {stats.BaseVersion} in {stats.ResumeSeconds:F2} s{(stats.ColdBoot ? " (booted from the disk)" : "")}");
                if (vncAddress is not null)
                    AnsiConsole.MarkupLineInterpolated($"vnc: {vncAddress}");
            });
            return 0;
        });
        return command;
    }

    /// <summary>Another site holding the lock while it checks the parcel in: wait for its commit, showing its progress,
    /// so that the daemon then takes the lock and resumes the version it committed. Only reads: Ctrl-C changes nothing.</summary>
    private static async Task WaitForCheckinElsewhereAsync(ParseResult parse, SiteDirectory site, string name, TimeSpan staleAfter, CancellationToken ct)
    {
        if (Cli.Home(parse, site, name) is not ServerParcelHome server) return; // store directories have no locks
        using (server)
        {
            LockInfo? waitedFor = null;
            try
            {
                await Progress.WaitAsync(parse, report => CheckinWait.WaitAsync(server, name, site.Identity.Id, staleAfter,
                    new InlineProgress<LockInfo>(holder => report.Report(Describe(waitedFor = holder))), TimeProvider.System, ct));
            }
            catch (ServerUnreachableException) { return; } // the daemon decides: disconnected under this site's lock, or a clear refusal
            if (waitedFor is not null && !parse.GetValue(Cli.Json))
                Console.Error.WriteLine($"isr: site '{waitedFor.SiteName}' finished checking '{name}' in; resuming the version it committed");
        }
    }

    private static Progress.Waiting Describe(LockInfo holder)
    {
        var c = holder.Checkin!;
        var text = $"waiting for the check-in at site '{holder.SiteName}': {Cli.Bytes(c.Sent)}" + (c.Total is { } t ? $" of {Cli.Bytes(t)} sent" : " sent");
        var json = new JsonObject { ["site"] = holder.SiteName, ["siteId"] = holder.SiteId, ["sent"] = c.Sent };
        if (c.Total is { } total) json["total"] = total; // unknown: left out, as every --json output leaves out nulls
        json["started"] = c.Started;
        json["updated"] = c.Updated;
        return new(text, c.Total is > 0 ? Math.Min(1.0, c.Sent / (double)c.Total.Value) : null, json);
    }

    /// <summary>
    /// Where the VM's VNC server listens ("127.0.0.1:5901" or "unix:/path"), from the "vnc" field of the daemon's
    /// reply (the session's <see cref="QemuVm.Vnc"/>); null without VNC.
    /// </summary>
    private static string? VncAddress(JsonElement reply) =>
        reply.ValueKind == JsonValueKind.Object && reply.TryGetProperty("vnc", out var vnc) && vnc.ValueKind == JsonValueKind.String
            ? vnc.GetString()
            : null;

    /// <summary>A window where this terminal has a desktop (X11 or Wayland), otherwise nothing.</summary>
    private static QemuDisplayMode DefaultDisplay() =>
        Environment.GetEnvironmentVariable("DISPLAY") is { Length: > 0 } || Environment.GetEnvironmentVariable("WAYLAND_DISPLAY") is { Length: > 0 }
            ? QemuDisplayMode.Window
            : QemuDisplayMode.Headless;

    private static bool Confirm(string question) =>
        !Console.IsInputRedirected && AnsiConsole.Confirm(question, defaultValue: false);
}
