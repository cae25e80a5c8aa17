using System.CommandLine;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Format;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr rollback PARCEL N`: make version N's content the new head (a new version; nothing is deleted).</summary>
public static class RollbackCommand
{
    public sealed record RolledBack(string Parcel, long Restored, long Version);

    public static Command Build()
    {
        var version = new Argument<long>("VERSION") { Description = "The version whose content becomes the new head" };
        var command = new Command("rollback", "Make an older (or side) version's content the new head, as a new version") { Cli.Parcel, version, Cli.Store, Cli.PasswordFile, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            await CheckinCommand.RefuseWhileRunningAsync(site, name, "roll it back", ct);
            var home = Cli.Home(parse, site, name);
            var parcel = await OpenedParcel.OpenAsync(home, await home.UnlockAsync(Cli.Password(parse), ct), name, ct);
            var target = parcel.Version(parse.GetValue(version));
            string? token = null;
            if (home is ServerParcelHome server)
                server.LockToken = token = await server.AcquireLockAsync(name, site.Identity.Id, site.Identity.Name, ct);
            try
            {
                // Same roots as the target, following the head: a cheap new version that restores old content.
                var record = target with { CommitId = Guid.NewGuid().ToString("N"), ParentMac = parcel.Head.Mac, Created = DateTimeOffset.UtcNow, Mac = "" };
                var committed = await home.CommitAsync(name, record.Sign(parcel.Keys), ct);
                Cli.Print(parse, new RolledBack(name, target.Number, committed.Number), CliJsonContext.Default.RolledBack,
                    () => AnsiConsole.MarkupLineInterpolated($"[bold]{name}[/] version {committed.Number} restores version {target.Number}"));
            }
            finally
            {
                if (token != null && site.ReadLocal(name)?.LockToken != token) await ((ServerParcelHome)home).ReleaseLockAsync(name, token, ct);
            }
            return 0;
        });
        return command;
    }
}
