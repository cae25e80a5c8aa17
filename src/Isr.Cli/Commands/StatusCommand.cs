using System.CommandLine;
using System.Text.Json;
using Isr.Client.Daemon;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr status`: for every parcel this site knows, whether it is safe to walk away (all committed at home,
/// no lock held here, nothing running).</summary>
public static class StatusCommand
{
    public sealed record ParcelStatus(string Parcel, bool Running, bool PendingCheckin, bool LocalChanges, bool LockHeldHere, bool SafeToLeave, string Advice);

    public static Command Build()
    {
        var command = new Command("status", "Say, for each parcel at this site, whether it is safe to leave (everything checked in)") { Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            var parcelsRoot = Path.Combine(site.Root, "parcels");
            var statuses = new List<ParcelStatus>();
            foreach (var dir in Directory.Exists(parcelsRoot) ? Directory.EnumerateDirectories(parcelsRoot).Order() : Enumerable.Empty<string>())
            {
                var name = Path.GetFileName(dir);
                var running = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "running", Parcel = name }, null, ct, startIfNeeded: false);
                bool isRunning = running is { ValueKind: JsonValueKind.True };
                bool pending = File.Exists(site.PendingCommitPath(name));
                var journal = new FileInfo(site.JournalPath(name));
                bool changes = journal.Exists && journal.Length > 13;
                bool locked = site.ReadLocal(name)?.LockToken is not null;
                var advice = isRunning ? $"running: 'isr suspend {name}', then 'isr checkin {name}'"
                    : pending ? $"suspended here but not checked in: 'isr checkin {name}'"
                    : changes ? $"changes not in any version: 'isr resume {name} --cold' or 'isr discard {name}'"
                    : locked ? $"checked in; the lock is still held here: 'isr checkin {name}' releases it"
                    : "checked in: safe to leave";
                statuses.Add(new ParcelStatus(name, isRunning, pending, changes, locked, !isRunning && !pending && !changes && !locked, advice));
            }
            Cli.Print(parse, statuses, () =>
            {
                if (statuses.Count == 0) Console.WriteLine("no parcels at this site: safe to leave");
                foreach (var s in statuses) AnsiConsole.MarkupLineInterpolated($"[bold]{s.Parcel}[/]: {s.Advice}");
            });
            return statuses.All(s => s.SafeToLeave) ? 0 : 10;
        });
        return command;
    }
}
