using System.CommandLine;
using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Session;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr checkin PARCEL`: send the suspended parcel home as a new version and release its lock.</summary>
public static class CheckinCommand
{
    public static Command Build()
    {
        var keepLock = new Option<bool>("--keep-lock") { Description = "Commit but keep the lock (to resume here again)" };
        var background = new Option<bool>("--background") { Description = "Return at once; the site daemon uploads and commits, and releases the lock ('isr status' says when it is safe to leave)" };
        var command = new Command("checkin", "Upload the suspended parcel's changes, commit them as a version and release the lock; needs no password")
        {
            Cli.Parcel, Cli.Store, keepLock, background, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            if (parse.GetValue(background))
            {
                await RefuseWhileRunningAsync(site, name, "check it in", ct);
                if (parse.GetValue(keepLock)) throw new ArgumentException("--background always releases the lock, so that the user can leave: drop --keep-lock");
                var started = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "checkin", Parcel = name, Store = Cli.StorePath(parse, site, name) }, null, ct);
                Cli.Print(parse, started!.Value, DaemonJsonContext.Default.JsonElement, () => AnsiConsole.WriteLine($"checking in {name} in the background: 'isr status' shows its progress and says when it is safe to leave"));
                return 0;
            }
            var result = await Progress.RunBytesAsync(parse, $"checking in {name}", progress => CheckInAsync(parse, site, name, parse.GetValue(keepLock), progress, ct));
            Cli.Print(parse, result, DaemonJsonContext.Default.CheckinResult, () => AnsiConsole.WriteLine(
                $"{name} is at version {result.Version}{(result.Side ? " (kept as a side version: the lock was broken or a newer version exists)" : "")}; " +
                $"sent {result.ChunksUploaded} blobs ({Cli.Bytes(result.BytesUploaded)}){(result.LockReleased ? "; lock released: safe to leave this site" : "")}"));
            return 0;
        });
        return command;
    }

    /// <summary>A running site daemon checks in (its HTTPS connection is warm, and it refuses a parcel it runs); with
    /// none, nothing runs here either, and this process does it.</summary>
    private static async Task<CheckinResult> CheckInAsync(ParseResult parse, Isr.Client.Site.SiteDirectory site, string name, bool keepLock,
        IProgress<long> progress, CancellationToken ct)
    {
        var parsed = DateTimeOffset.UtcNow;
        var processStarted = Cli.ProcessStarted();
        var request = new DaemonRequest
        {
            Op = "checkin-now", Parcel = name, Store = Cli.StorePath(parse, site, name), KeepLock = keepLock,
            ProcessStarted = processStarted, CommandStarted = parsed,
        };
        if (await DaemonClient.SendAsync(site, request, null, ct, startIfNeeded: false, onBytes: progress.Report) is { } byDaemon)
            return byDaemon.Deserialize(DaemonJsonContext.Default.CheckinResult)!;
        return await Checkin.RunAsync(site, Cli.Home(parse, site, name), name, releaseLock: !keepLock, progress, ct,
            trace: StepTrace.FromCommand(processStarted, parsed));
    }

    public static async Task RefuseWhileRunningAsync(Isr.Client.Site.SiteDirectory site, string parcel, string action, CancellationToken ct)
    {
        var running = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "running", Parcel = parcel }, null, ct, startIfNeeded: false);
        if (running is { ValueKind: JsonValueKind.True })
            throw new InvalidOperationException($"parcel '{parcel}' is running at this site: suspend it first, then {action}");
        var checkins = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "checkins" }, null, ct, startIfNeeded: false);
        if (checkins?.Deserialize(DaemonJsonContext.Default.CheckinProgressArray)?.Any(c => c.Parcel == parcel && c.State == "uploading") == true)
            throw new InvalidOperationException($"parcel '{parcel}' is being checked in at this site in the background: wait until 'isr status' says it is committed, then {action}");
    }
}
