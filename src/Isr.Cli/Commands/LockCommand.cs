using System.CommandLine;
using Isr.Client.Homes;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr lock PARCEL [--break]`: who holds the parcel's lock; break it if a site is lost.</summary>
public static class LockCommand
{
    public sealed record LockState(string Parcel, bool? Broken = null, Isr.Client.Homes.LockInfo? Lock = null);

    public static Command Build()
    {
        var breakLock = new Option<bool>("--break")
        {
            Description = "Release a lock held by a lost site (owner only). Work that site checks in later is kept as a side version, never lost",
        };
        var command = new Command("lock", "Show who holds the parcel's lock, or break it") { Cli.Parcel, breakLock, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            if (Cli.Home(parse, site, name) is not ServerParcelHome server)
                throw new UsageException("locks exist only for parcels on a server");
            if (parse.GetValue(breakLock))
            {
                await server.BreakLockAsync(name, ct);
                Cli.Print(parse, new LockState(name, Broken: true), CliJsonContext.Default.LockState, () => AnsiConsole.MarkupLineInterpolated($"broke the lock of [bold]{name}[/]"));
                return 0;
            }
            var holder = await server.GetLockAsync(name, ct);
            Cli.Print(parse, new LockState(name, Lock: holder), CliJsonContext.Default.LockState, () => Console.WriteLine(holder is null ? $"{name} is not locked" :
                $"{name} is locked by site '{holder.SiteName}' ({holder.SiteId}) since {holder.Acquired:u}, last contact {holder.LastContact:u}" +
                (holder.Checkin is { } c ? $"; checking it in: {Cli.Bytes(c.Sent)}{(c.Total is { } t ? $" of {Cli.Bytes(t)}" : "")} sent, last report {c.Updated:u}" : "")));
            return 0;
        });
        return command;
    }
}
