using System.CommandLine;
using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Session;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr status`: for every parcel this site knows, whether it is safe to walk away (all committed at home,
/// no lock held here, nothing running).</summary>
public static class StatusCommand
{
    /// <param name="Hoard">A hoard the daemon runs (or ran) for a request from another site: ciphertext only, never a reason to stay.</param>
    public sealed record ParcelStatus(string Parcel, bool Running, bool PendingCheckin, bool LocalChanges, bool LockHeldHere, bool SafeToLeave, string Advice,
        CheckinProgress? BackgroundCheckin = null, BackgroundHoard? Hoard = null);

    public static Command Build()
    {
        var command = new Command("status", "Say, for each parcel at this site, whether it is safe to leave (everything checked in)") { Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            var statuses = new List<ParcelStatus>();
            var checkins = (await DaemonClient.SendAsync(site, new DaemonRequest { Op = "checkins" }, null, ct, startIfNeeded: false))?
                .Deserialize(DaemonJsonContext.Default.CheckinProgressArray)?.ToDictionary(c => c.Parcel) ?? [];
            var hoards = (await DaemonClient.SendAsync(site, new DaemonRequest { Op = "hoards" }, null, ct, startIfNeeded: false))?
                .Deserialize(DaemonJsonContext.Default.BackgroundHoardArray)?.ToDictionary(h => h.Parcel) ?? [];
            foreach (var name in site.ParcelNames().Concat(checkins.Keys).Concat(hoards.Keys).Distinct().Order())
            {
                if (checkins.TryGetValue(name, out var background) && background.State != "failed")
                {
                    // The daemon's check-in owns the parcel's files until it ends (and a wipe may have removed them).
                    var wiped = background.Result?.Wiped is not null ? "; this site's copy was wiped" : "";
                    statuses.Add(new ParcelStatus(name, false, !background.SafeToLeave, false, !background.SafeToLeave, background.SafeToLeave,
                        background.SafeToLeave ? $"committed on the server as version {background.Result!.Version}{wiped}: safe to leave"
                            : $"checking in: {Cli.Bytes(background.BytesSent)}{(background.BytesTotal is { } t ? $" of {Cli.Bytes(t)}" : "")} sent; not safe to leave yet",
                        background));
                    continue;
                }
                var running = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "running", Parcel = name }, null, ct, startIfNeeded: false);
                bool isRunning = running is { ValueKind: JsonValueKind.True };
                bool pending = File.Exists(site.PendingCommitPath(name));
                var journal = new FileInfo(site.JournalPath(name));
                bool changes = journal.Exists && journal.Length > 13;
                bool locked = site.ReadLocal(name)?.LockToken is not null;
                var advice = isRunning ? $"running: 'isr suspend {name}', then 'isr checkin {name}'"
                    : background is { Error: { } error } ? $"the background check-in failed ({error}): 'isr checkin {name}' retries"
                    : pending ? $"suspended here but not checked in: 'isr checkin {name}'"
                    : changes && site.ReadLocal(name)?.Interrupted is { } why ? $"{why}; {SiteRecovery.KeepOrDiscard(name)}"
                    : changes ? $"changes not in any version: 'isr resume {name} --cold' or 'isr discard {name}'"
                    : locked ? $"checked in; the lock is still held here: 'isr checkin {name}' releases it"
                    : "checked in: safe to leave";
                if (hoards.TryGetValue(name, out var hoard)) advice += $"; {Describe(hoard)}";
                statuses.Add(new ParcelStatus(name, isRunning, pending, changes, locked, !isRunning && !pending && !changes && !locked, advice, background, hoard));
            }
            Cli.Print(parse, statuses, CliJsonContext.Default.ListParcelStatus, () =>
            {
                if (statuses.Count == 0) Console.WriteLine("no parcels at this site: safe to leave");
                foreach (var s in statuses) AnsiConsole.MarkupLineInterpolated($"[bold]{s.Parcel}[/]: {s.Advice}");
            });
            return statuses.All(s => s.SafeToLeave) ? 0 : 10;
        });
        return command;
    }

    private static string Describe(BackgroundHoard h) => h.State switch
    {
        "running" => $"hoarding version {h.Version} for a request from another site: {h.BlobsDone} of {h.BlobsTotal} blobs fetched ({Cli.Bytes(h.BytesFetched)})" +
            (h.Error is { } e ? $" — {e}" : ""),
        "done" => $"hoarded version {h.Version} (requested from another site): the cache holds all of it",
        _ => $"hoard {h.State}: {h.Error}",
    };
}
