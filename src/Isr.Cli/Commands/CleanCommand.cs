using System.CommandLine;
using Isr.Client.Homes;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr clean PARCEL`: remove this site's state for a parcel and release its lock.</summary>
public static class CleanCommand
{
    public sealed record Cleaned(string Parcel, bool LockReleased);

    public static Command Build()
    {
        var force = new Option<bool>("--force") { Description = "Also drop a suspended version that was never checked in" };
        var command = new Command("clean", "Remove this site's state for the parcel (local changes, pending version) and release its lock") { Cli.Parcel, force, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            await CheckinCommand.RefuseWhileRunningAsync(site, name, "clean it", ct);
            if (File.Exists(site.PendingCommitPath(name)) && !parse.GetValue(force))
                throw new InvalidOperationException($"'{name}' has a suspended version at this site that was never checked in: run 'isr checkin {name}', or clean --force to drop it");
            var local = site.ReadLocal(name);
            bool released = false;
            if (local?.LockToken is { } token && Cli.Home(parse, site, name) is ServerParcelHome server)
            {
                await server.ReleaseLockAsync(name, token, ct);
                released = true;
            }
            if (Directory.Exists(site.ParcelDirectory(name))) Directory.Delete(site.ParcelDirectory(name), recursive: true);
            Cli.Print(parse, new Cleaned(name, released), CliJsonContext.Default.Cleaned,
                () => AnsiConsole.MarkupLineInterpolated($"removed this site's state for [bold]{name}[/]{(released ? " and released its lock" : "")}"));
            return 0;
        });
        return command;
    }
}
