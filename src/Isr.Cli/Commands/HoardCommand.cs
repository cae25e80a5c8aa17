using System.CommandLine;
using Isr.Client.Homes;
using Isr.Client.Transfer;
using Isr.Storage.Metadata;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>
/// `isr hoard PARCEL`: fill this site's cache with every blob of the parcel's newest version ahead of time (the
/// proactive policy: a later resume only launches, and works with no network). Needs no password: the keyring pages'
/// tags are plaintext, so the walk is keyless, and blobs stay ciphertext. Resumable: what the cache holds is skipped.
/// `isr hoard PARCEL --site NAME` asks the server that another of the user's sites hoard it: that site's daemon picks
/// the request up with its hoard-only token. `isr hoard --requests` lists the requests and their state.
/// </summary>
public static class HoardCommand
{
    public static Command Build()
    {
        var parcelArgument = new Argument<string?>("PARCEL") { Description = "Parcel name", Arity = ArgumentArity.ZeroOrOne };
        var bwlimit = new Option<string?>("--bwlimit")
        {
            Description = "Limit the download rate, in BYTES per second: 500K, 10M (= 10 MB/s), 1.5Mi; 'bit' for bits: 80Mbit",
        };
        var parallel = new Option<int>("--parallel") { Description = "Blobs requested at once", DefaultValueFactory = _ => 16 };
        var version = new Option<long?>("--version") { Description = "Hoard this version instead of the newest" };
        var siteOption = new Option<string?>("--site")
        {
            Description = "Ask the server that this other site of yours (its name, see 'isr site list') hoard the parcel in the background",
        };
        var requests = new Option<bool>("--requests") { Description = "List hoard requests made for your sites and their state" };
        var command = new Command("hoard", "Fetch every blob of the parcel into this site's cache ahead of time (or, with --site, another site's); " +
            "resumable, needs no password")
        {
            parcelArgument, Cli.Store, bwlimit, parallel, version, siteOption, requests, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string? name = parse.GetValue(parcelArgument);
            if (parse.GetValue(requests))
            {
                if (name is not null || parse.GetValue(siteOption) is not null) throw new UsageException("--requests takes no PARCEL and no --site");
                return await ListRequestsAsync(parse, site, ct);
            }
            if (name is null) throw new UsageException("name the PARCEL to hoard (or list requests with --requests)");
            if (parse.GetValue(siteOption) is { } other)
            {
                if (parse.GetValue(bwlimit) is not null) throw new UsageException("--bwlimit is the other site's own setting ('hoardBwlimit' in its config.json)");
                return await RequestAsync(parse, site, name, other, parse.GetValue(version), ct);
            }
            var rate = parse.GetValue(bwlimit) is { } text ? TokenBucket.ParseRate(text) : null;
            if (parse.GetValue(parallel) < 1) throw new UsageException("--parallel must be at least 1");
            var home = Cli.Home(parse, site, name);
            var versions = await home.ListVersionsAsync(name, ct);
            var target = parse.GetValue(version) is long n
                ? versions.FirstOrDefault(v => v.Number == n) ?? throw new ParcelNotFoundException($"parcel '{name}' has no version {n}")
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
            Cli.Print(parse, result, CliJsonContext.Default.HoardResult, () => AnsiConsole.WriteLine(
                $"{name} version {result.Version}: {result.Blobs} blobs; fetched {result.Fetched} ({Cli.Bytes(result.BytesFetched)}) in {result.Seconds:F1} s, " +
                $"{result.AlreadyCached} were cached{(rate is double lim ? $"; limited to {lim / 1e6:F2} MB/s" : "")}"));
            return 0;
        });
        return command;
    }

    private static ServerParcelHome LoggedIn(Isr.Client.Site.SiteDirectory site) =>
        site.Login is { } login ? new ServerParcelHome(login) : throw new UsageException("hoard requests go through the server: 'isr login' first");

    private static async Task<int> RequestAsync(ParseResult parse, Isr.Client.Site.SiteDirectory site, string parcel, string other, long? version,
        CancellationToken ct)
    {
        using var server = LoggedIn(site);
        var request = await server.RequestHoardAsync(parcel, other, version, ct);
        var which = version is long v ? $"version {v}" : "(newest version)";
        Cli.Print(parse, request, CliJsonContext.Default.HoardRequestRecord, () => AnsiConsole.MarkupLineInterpolated(
            $"requested: site [bold]{request.SiteName}[/] hoards {parcel} {which}: request {request.Id}, {request.State}. Its daemon picks it up when it runs ('isr hoard --requests' follows it)."));
        return 0;
    }

    private static async Task<int> ListRequestsAsync(ParseResult parse, Isr.Client.Site.SiteDirectory site, CancellationToken ct)
    {
        using var server = LoggedIn(site);
        var list = await server.ListHoardRequestsAsync(ct);
        Cli.Print(parse, list, CliJsonContext.Default.IReadOnlyListHoardRequestRecord, () =>
        {
            if (list.Count == 0) Console.WriteLine("no hoard requests");
            foreach (var r in list) AnsiConsole.MarkupLineInterpolated($"{r.Id}  [bold]{r.Parcel}[/] at site {r.SiteName}: {Describe(r)}");
        });
        return 0;
    }

    /// <summary>A request's state in words: "running: 120 of 400 blobs (12.0 MiB)", "done (version 3)", "failed: …".</summary>
    private static string Describe(HoardRequestRecord r) => r.State switch
    {
        HoardStates.Running => $"running{(r.Version is long v ? $" (version {v})" : "")}: {r.BlobsDone} of {r.BlobsTotal} blobs ({Cli.Bytes(r.BytesDone)})",
        HoardStates.Done => $"done (version {r.Version}, {Cli.Bytes(r.BytesDone)} fetched) at {r.Updated:u}",
        HoardStates.Failed => $"failed: {r.Error}",
        HoardStates.Revoked => "revoked (the site's token was revoked)",
        _ => $"pending since {r.Created:u}",
    };
}
