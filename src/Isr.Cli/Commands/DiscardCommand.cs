using System.CommandLine;
using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Disk;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr discard PARCEL`: drop this site's changes since the last version.</summary>
public static class DiscardCommand
{
    public sealed record DiscardResult(string Parcel, long Version, bool Discarded);

    public static Command Build()
    {
        var command = new Command("discard", "Drop this site's disk changes made since the parcel's last version") { Cli.Parcel, Cli.Store, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            var running = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "running", Parcel = name }, null, ct, startIfNeeded: false);
            if (running is { ValueKind: JsonValueKind.True })
                throw new InvalidOperationException($"parcel '{name}' is running at this site: suspend it first");
            var home = Cli.Home(parse, site, name);
            var head = (await home.ListVersionsAsync(name, ct))[^1];
            bool had = DirtyJournal.PeekBaseVersion(site.JournalPath(name)) is not null && new FileInfo(site.JournalPath(name)).Length > 13;
            DirtyJournal.WriteEmpty(site.JournalPath(name), head.Number);
            site.UpdateLocal(name, s => s with { Interrupted = null, JournalRebase = null });
            Cli.Print(parse, new DiscardResult(name, head.Number, had), CliJsonContext.Default.DiscardResult,
                () => AnsiConsole.MarkupLineInterpolated($"{(had ? "discarded local changes of" : "no local changes in")} [bold]{name}[/]; it is at version {head.Number}"));
            return 0;
        });
        return command;
    }
}
