using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Isr.Bench.Scale;
using Isr.Server;

// Concurrent load from many simulated sites against real isr-server instances on loopback (docs/benchmarks/scale.md).
// One run = one configuration; the Markdown row it prints (and appends to --out) is one line of the results table.
// Exit codes: 0 done without errors, 1 some requests failed, 2 bad arguments.
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

var sites = new Option<int>("--sites") { Description = "Simulated sites, each its own user, parcel and HTTP/2 connection", DefaultValueFactory = _ => 8 };
var duration = new Option<int>("--duration") { Description = "Seconds of load (after setup)", DefaultValueFactory = _ => 20 };
var chunkSize = new Option<int>("--chunk-size") { Description = "Bytes per chunk", DefaultValueFactory = _ => 64 << 10 };
var perCommit = new Option<int>("--chunks-per-commit") { Description = "Fresh chunks uploaded per check-in", DefaultValueFactory = _ => 64 };
var downloads = new Option<int>("--downloads") { Description = "Chunks downloaded (one batch) after each check-in", DefaultValueFactory = _ => 64 };
var chunks = new Option<string?>("--chunks") { Description = "Chunk store URL as for isr-server run (s3://BUCKET?endpoint=URL; credentials from AWS_*); default: the data directory" };
var metadata = new Option<string?>("--metadata") { Description = "PostgreSQL connection string as for isr-server run; default: SQLite in the data directory" };
var servers = new Option<int>("--servers") { Description = "isr-server instances over the same engines; sites are spread over them", DefaultValueFactory = _ => 1 };
var data = new Option<string?>("--data") { Description = "Data directory to create (default: a fresh temporary one, deleted after)" };
var output = new Option<string?>("--out") { Description = "Markdown file to append the result row to" };
var probe = new Option<int>("--probe-store") { Description = "Instead of the load: probe the --chunks S3 store alone with N objects (PUT/HEAD/GET rates, existence strategies)" };
var label = new Option<string?>("--label") { Description = "Configuration name in the result row (default: from the engines)" };

var root = new RootCommand("Isr.Bench.Scale: concurrent sites against isr-server (chunk upload/download throughput, commit rate, latency)")
{
    sites, duration, chunkSize, perCommit, downloads, chunks, metadata, servers, data, output, label, probe,
};
root.SetAction(async (parse, ct) =>
{
    int siteCount = parse.GetValue(sites), serverCount = parse.GetValue(servers), seconds = parse.GetValue(duration);
    if (siteCount < 1 || siteCount > 1000 || serverCount < 1 || serverCount > 8 || seconds < 1 || seconds > 3600)
    {
        Console.Error.WriteLine("--sites 1..1000, --servers 1..8, --duration 1..3600");
        return 2;
    }
    var chunksUrl = parse.GetValue(chunks);
    var engine = ChunkStoreUrl.Parse(chunksUrl); // validates before anything starts
    if (parse.GetValue(probe) is > 0 and var objects)
    {
        if (engine.S3 is null) { Console.Error.WriteLine("--probe-store needs --chunks s3://…"); return 2; }
        await StoreProbe.RunAsync(engine.S3, objects, parse.GetValue(chunkSize), Console.Out, ct);
        return 0;
    }
    var work = new SiteWorkload(parse.GetValue(chunkSize), parse.GetValue(perCommit), parse.GetValue(downloads));

    var dir = parse.GetValue(data) ?? Directory.CreateTempSubdirectory("isr-bench-scale-").FullName;
    try
    {
        await using var cluster = await BenchServers.StartAsync(dir, chunksUrl, parse.GetValue(metadata), serverCount, ct);
        var run = Guid.NewGuid().ToString("N")[..8]; // a shared database may hold users of earlier runs
        var users = Enumerable.Range(0, siteCount).Select(i => ($"bench-{run}-{i}", $"password-{i}")).ToList();
        await cluster.AddUsersAsync(users, ct);
        var totals = new LoadTotals();
        var until = DateTime.UtcNow.AddSeconds(seconds);
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(users.Select((u, i) => Task.Run(() =>
            new Site(i, cluster.Urls[i % serverCount], cluster.Fingerprint, u.Item1, u.Item2, work, totals).RunAsync(until, ct), ct)));
        double elapsed = clock.Elapsed.TotalSeconds;

        var name = parse.GetValue(label) ?? $"{(engine.S3 is null ? "directory" : "S3 (RGW)")} + {(Engines.IsEmbeddedMetadata(parse.GetValue(metadata)) ? "SQLite" : "PostgreSQL")}";
        string Ms(Latency l) => $"{l.Quantile(0.5):F1} / {l.Quantile(0.99):F1}";
        var row = $"| {name} | {serverCount} | {siteCount} | {elapsed:F1} | {totals.UploadedBytes / elapsed / 1e6:F1} | " +
                  $"{totals.DownloadedBytes / elapsed / 1e6:F1} | {totals.Commits / elapsed:F1} | {Ms(totals.Missing)} | {Ms(totals.Upload)} | " +
                  $"{Ms(totals.Commit)} | {Ms(totals.Download)} | {totals.Errors} |";
        Console.WriteLine("| engines | servers | sites | s | upload MB/s | download MB/s | commits/s | missing p50/p99 ms | upload p50/p99 ms | commit p50/p99 ms | download p50/p99 ms | errors |");
        Console.WriteLine(row);
        if (totals.FirstError is { } error) Console.Error.WriteLine($"first error: {error}");
        if (parse.GetValue(output) is { } file) await File.AppendAllTextAsync(file, row + Environment.NewLine, ct);
        return totals.Errors == 0 ? 0 : 1;
    }
    finally
    {
        if (parse.GetValue(data) is null) Directory.Delete(dir, recursive: true);
    }
});
return await root.Parse(args).InvokeAsync();
