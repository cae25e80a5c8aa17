using System.CommandLine;
using Isr.Client.Transfer;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>
/// `isr hoard PARCEL`: fill this site's cache with every blob of the parcel's newest version ahead of time (the
/// proactive policy: a later resume only launches, and works with no network). Needs no password: the keyring pages'
/// tags are plaintext, so the walk is keyless, and blobs stay ciphertext. Resumable: what the cache holds is skipped.
/// Not yet: asking the server to hoard a parcel at another site (a server-side queue the other site's daemon would
/// poll) — this command fills only the cache of the site it runs at.
/// </summary>
public static class HoardCommand
{
    public static Command Build()
    {
        var bwlimit = new Option<string?>("--bwlimit")
        {
            Description = "Limit the download rate, in BYTES per second: 500K, 10M (= 10 MB/s), 1.5Mi; 'bit' for bits: 80Mbit",
        };
        var parallel = new Option<int>("--parallel") { Description = "Blobs requested at once", DefaultValueFactory = _ => 16 };
        var version = new Option<long?>("--version") { Description = "Hoard this version instead of the newest" };
        var command = new Command("hoard", "Fetch every blob of the parcel into this site's cache ahead of time; resumable, needs no password")
        {
            Cli.Parcel, Cli.Store, bwlimit, parallel, version, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            var rate = parse.GetValue(bwlimit) is { } text ? TokenBucket.ParseRate(text) : null;
            if (parse.GetValue(parallel) < 1) throw new UsageException("--parallel must be at least 1");
            var home = Cli.Home(parse, site, name);
            var versions = await home.ListVersionsAsync(name, ct);
            var target = parse.GetValue(version) is long n
                ? versions.FirstOrDefault(v => v.Number == n) ?? throw new Isr.Client.Homes.ParcelNotFoundException($"parcel '{name}' has no version {n}")
                : versions.Last(v => !v.Side);
            var hoarder = new Hoarder(site.Cache, home.Chunks, new HoardOptions
            {
                Concurrency = parse.GetValue(parallel),
                Limit = rate is double r ? new TokenBucket(r) : null,
            });
            bool json = parse.GetValue(Cli.Json);
            var result = await Progress.RunAsync(parse, $"hoarding {name} v{target.Number}", progress =>
                hoarder.HoardAsync(name, target, new Progress<HoardProgress>(p => progress.Report(p.ToFetch == 0 ? 1 : (double)p.Done / p.ToFetch)),
                    warning => { if (!json) Console.Error.WriteLine($"isr: warning: {warning}"); }, ct));
            Cli.Print(parse, result, () => AnsiConsole.WriteLine(
                $"{name} version {result.Version}: {result.Blobs} blobs; fetched {result.Fetched} ({Cli.Bytes(result.BytesFetched)}) in {result.Seconds:F1} s, " +
                $"{result.AlreadyCached} were cached{(rate is double lim ? $"; limited to {lim / 1e6:F2} MB/s" : "")}"));
            return 0;
        });
        return command;
    }
}
