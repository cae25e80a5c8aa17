using System.CommandLine;
using System.Text.Json;
using Isr.Format;
using Isr.Storage;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Isr.Server.Admin;

/// <summary>
/// <c>isr-server init | run | user add|list|disable | prune | gc | fsck | stats | migrate | jukebox</c>. Exit codes: 0 success, 1 fsck found
/// problems, 2 usage (bad arguments, uninitialised data directory), 3 not found, 4 conflict, 5 other failures.
/// </summary>
public static class AdminCli
{
    private static readonly string[] Commands = ["init", "run", "user", "prune", "gc", "fsck", "stats", "migrate", "jukebox"];

    /// <summary>True for an admin command line; false for bare host arguments (<c>--urls=…</c>), which run the web app directly.</summary>
    public static bool Handles(string[] args) =>
        args.Length == 0 || Commands.Contains(args[0]) || args[0] is "-h" or "--help" or "-?" or "--version" || !args[0].StartsWith('-')
        || args.Contains("--data");

    private static readonly Option<string?> Data = new("--data")
    {
        Description = $"Data directory (database, chunks, certificate); default: ${IsrServerOptions.DataEnvironmentVariable}",
    };
    public const string MetadataEnvironmentVariable = "ISR_SERVER_METADATA";
    private static readonly Option<string?> Metadata = new("--metadata")
    {
        Description = "PostgreSQL connection string (Host=…;Port=…;Username=…;Database=…) of the database every server shares; " +
                      $"default: ${MetadataEnvironmentVariable}, else the embedded DATA/isr.db",
    };
    private static readonly Option<string?> Chunks = new("--chunks")
    {
        Description = "Chunk store: s3://BUCKET[/PREFIX]?endpoint=URL, credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY " +
                      $"(docs/DEPLOYMENT.md); default: ${ChunkStoreUrl.EnvironmentVariable}, else DATA/chunks",
    };
    private static readonly Option<bool> Json = new("--json") { Description = "Machine-readable output" };
    private static readonly JsonSerializerOptions JsonOut = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static async Task<int> RunAsync(string[] args, TextWriter? stdout = null)
    {
        var output = stdout ?? Console.Out;
        var root = new RootCommand("isr-server: the Internet Suspend/Resume parcel server and its administration");
        root.Subcommands.Add(InitCommand(output));
        root.Subcommands.Add(RunCommand(output));
        root.Subcommands.Add(UserCommand(output));
        root.Subcommands.Add(PruneCommand(output));
        root.Subcommands.Add(GcCommand(output));
        root.Subcommands.Add(FsckCommand(output));
        root.Subcommands.Add(StatsCommand(output));
        root.Subcommands.Add(MigrateCommand(output));
        root.Subcommands.Add(Jukebox.JukeboxCommand.Build(output));
        try
        {
            return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = output });
        }
        catch (Exception e)
        {
            var (code, message) = e switch
            {
                UsageException or ArgumentException => (2, e.Message),
                NotFoundException => (3, e.Message),
                MetadataConflictException => (4, e.Message),
                OperationCanceledException => (5, "cancelled"),
                _ => (5, e.Message),
            };
            Console.Error.WriteLine($"isr-server: {message}");
            return code;
        }
    }

    private sealed class UsageException(string message) : Exception(message);

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; would post to the pool and print after the summary).</summary>
    private sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
    private sealed class NotFoundException(string message) : Exception(message);

    private static string DataDir(ParseResult parse)
    {
        var dir = parse.GetValue(Data) ?? Environment.GetEnvironmentVariable(IsrServerOptions.DataEnvironmentVariable);
        return string.IsNullOrEmpty(dir)
            ? throw new UsageException($"no data directory: use --data DIR (or set {IsrServerOptions.DataEnvironmentVariable})")
            : Path.GetFullPath(dir);
    }

    /// <summary>--metadata, else $ISR_SERVER_METADATA; null for the embedded engine.</summary>
    private static string? MetadataOf(ParseResult parse) =>
        parse.GetValue(Metadata) is { Length: > 0 } given ? given : Environment.GetEnvironmentVariable(MetadataEnvironmentVariable) is { Length: > 0 } env ? env : null;

    /// <summary>--chunks, else $ISR_SERVER_CHUNKS; null for the data directory's chunks/.</summary>
    private static string? ChunksOf(ParseResult parse) =>
        parse.GetValue(Chunks) is { Length: > 0 } given ? given : Environment.GetEnvironmentVariable(ChunkStoreUrl.EnvironmentVariable);

    /// <summary>The stores of an initialised deployment.</summary>
    private static Task<(IMetadataStore Metadata, IChunkStore Chunks)> OpenAsync(ParseResult parse, CancellationToken ct) =>
        OpenAsync(DataDir(parse), MetadataOf(parse), ChunksOf(parse), ct);

    private static async Task<(IMetadataStore Metadata, IChunkStore Chunks)> OpenAsync(string dir, string? connection, string? chunks, CancellationToken ct)
    {
        var chunksUrl = ChunkStoreUrl.Parse(chunks); // a bad --chunks fails before anything is opened
        if (Engines.IsEmbeddedMetadata(connection) && !File.Exists(DataLayout.Database(dir)))
            throw new UsageException($"{dir} is not an isr-server data directory: run `isr-server init --data {dir}` first");
        var metadata = Engines.OpenMetadata(connection, dir);
        try { await metadata.InitializeAsync(ct); }
        catch { metadata.Dispose(); throw; }
        var chunkStore = chunksUrl.Open(dir);
        await ChunkStoreUrl.PrepareAsync(chunkStore, ct);
        return (metadata, chunkStore);
    }

    private static void Print(ParseResult parse, TextWriter output, object result, Action human)
    {
        if (parse.GetValue(Json)) output.WriteLine(JsonSerializer.Serialize(result, JsonOut));
        else human();
    }

    private static Command InitCommand(TextWriter output)
    {
        var cmd = new Command("init", "Create a data directory (chunk directory or --chunks bucket, self-signed TLS certificate) and the metadata schema") { Data, Metadata, Chunks };
        cmd.SetAction(async (parse, ct) =>
        {
            var dir = DataDir(parse);
            var connection = MetadataOf(parse);
            if (File.Exists(DataLayout.Database(dir)) || File.Exists(DataLayout.Certificate(dir)))
                throw new UsageException($"{dir} is already initialised");
            Directory.CreateDirectory(dir);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            await ChunkStoreUrl.PrepareAsync(Engines.OpenChunks(ChunksOf(parse), dir), ct); // first: a bad --chunks leaves no half-made directory
            using (var metadata = Engines.OpenMetadata(connection, dir)) await metadata.InitializeAsync(ct);
            using var cert = ServerCertificate.Create();
            ServerCertificate.Save(cert, DataLayout.Certificate(dir));
            output.WriteLine($"initialised {dir}");
            output.WriteLine($"fingerprint: {ServerCertificate.Fingerprint(cert)}");
            return 0;
        });
        return cmd;
    }

    private static Command RunCommand(TextWriter output)
    {
        var urls = new Option<string>("--urls") { Description = "Addresses to listen on, ';'-separated", DefaultValueFactory = _ => "https://127.0.0.1:8443" };
        var cmd = new Command("run", "Run the server (HTTPS, HTTP/2 and HTTP/1.1)") { Data, Metadata, Chunks, urls };
        cmd.SetAction(async (parse, ct) =>
        {
            var dir = DataDir(parse);
            var connection = MetadataOf(parse);
            if ((Engines.IsEmbeddedMetadata(connection) && !File.Exists(DataLayout.Database(dir))) || !File.Exists(DataLayout.Certificate(dir)))
                throw new UsageException($"{dir} is not an isr-server data directory: run `isr-server init --data {dir}` first");
            using var cert = ServerCertificate.Load(DataLayout.Certificate(dir));
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
            builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.DataDirectory)}"] = dir;
            if (connection is not null) builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.Metadata)}"] = connection;
            var chunks = ChunkStoreUrl.Parse(ChunksOf(parse)); // bad URLs fail here, before the host starts
            builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.Chunks)}"] = ChunksOf(parse) ?? "";
            builder.WebHost.UseUrls(parse.GetValue(urls)!);
            builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
            builder.AddIsrServer();
            await using var app = builder.Build();
            app.MapIsrApi();
            app.Lifetime.ApplicationStarted.Register(() =>
            {
                var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
                output.WriteLine($"fingerprint: {ServerCertificate.Fingerprint(cert)}");
                output.WriteLine($"chunks: {chunks}");
                output.WriteLine($"listening on {string.Join(", ", addresses)}");
                output.Flush();
            });
            await app.RunAsync(ct);
            return 0;
        });
        return cmd;
    }

    private static Command UserCommand(TextWriter output)
    {
        var user = new Command("user", "Manage accounts");

        var name = new Argument<string>("NAME") { Description = "User name" };
        var passwordFile = new Option<FileInfo>("--password-file") { Description = "File holding the user's initial password", Required = true };
        var add = new Command("add", "Create an account; prints its recovery key once") { name, passwordFile, Data, Metadata };
        add.SetAction(async (parse, ct) =>
        {
            var (metadata, _) = await OpenAsync(parse, ct);
            using var _m = metadata;
            var file = parse.GetValue(passwordFile)!;
            if (!file.Exists) throw new UsageException($"no password file {file.FullName}");
            var password = (await File.ReadAllTextAsync(file.FullName, ct)).TrimEnd('\r', '\n');
            var userName = parse.GetValue(name)!;
            if (await metadata.GetUserAsync(userName, ct) is not null) throw new MetadataConflictException($"user '{userName}' exists");
            var made = UserProvisioning.Create(userName, password);
            await metadata.AddUserAsync(made.User, DateTimeOffset.UtcNow, ct);
            output.WriteLine($"user {userName} added");
            output.WriteLine($"recovery key: {UserSecrets.FormatRecoveryKey(made.RecoveryKey)}");
            output.WriteLine("Keep this recovery key somewhere safe and offline: it is shown only this once, and without it or the password the user's parcels cannot be decrypted.");
            return 0;
        });

        var list = new Command("list", "List accounts") { Data, Metadata, Json };
        list.SetAction(async (parse, ct) =>
        {
            var (metadata, _) = await OpenAsync(parse, ct);
            using var _m = metadata;
            var users = (await metadata.ListUsersAsync(ct)).Select(u => new { name = u.Name, disabled = u.Disabled, created = u.Created }).ToList();
            Print(parse, output, users, () =>
            {
                foreach (var u in users) output.WriteLine($"{u.name}\t{(u.disabled ? "disabled" : "active")}\t{u.created:u}");
            });
            return 0;
        });

        var disableName = new Argument<string>("NAME") { Description = "User name" };
        var disable = new Command("disable", "Disable an account and revoke its sessions") { disableName, Data, Metadata };
        disable.SetAction(async (parse, ct) =>
        {
            var (metadata, _) = await OpenAsync(parse, ct);
            using var _m = metadata;
            var userName = parse.GetValue(disableName)!;
            if (!await metadata.DisableUserAsync(userName, ct)) throw new NotFoundException($"no user '{userName}'");
            output.WriteLine($"user {userName} disabled");
            return 0;
        });

        user.Subcommands.Add(add);
        user.Subcommands.Add(list);
        user.Subcommands.Add(disable);
        return user;
    }

    private static Command PruneCommand(TextWriter output)
    {
        var keep = new Option<int>("--keep") { Description = "Head-line versions to keep per parcel (side versions newer than the oldest kept one stay too)", Required = true };
        var parcel = new Option<string?>("--parcel") { Description = "Only parcels of this name" };
        var owner = new Option<string?>("--user") { Description = "Only parcels of this user" };
        var cmd = new Command("prune", "Remove old versions (their blobs are reclaimed by gc)") { keep, parcel, owner, Data, Metadata, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            int n = parse.GetValue(keep);
            if (n < 1) throw new UsageException("--keep must be at least 1");
            var (metadata, chunks) = await OpenAsync(parse, ct);
            using var _m = metadata;
            var result = await new Maintenance(metadata, chunks, TimeProvider.System).PruneAsync(n, parse.GetValue(parcel), parse.GetValue(owner), ct);
            Print(parse, output, result, () =>
            {
                foreach (var p in result)
                    output.WriteLine($"{p.Owner}/{p.Parcel}: removed {p.Removed.Count} versions{(p.Removed.Count > 0 ? $" ({string.Join(", ", p.Removed)})" : "")}");
            });
            return 0;
        });
        return cmd;
    }

    private static Command GcCommand(TextWriter output)
    {
        var grace = new Option<int>("--grace-minutes") { Description = "Spare blobs uploaded or asked about this recently", DefaultValueFactory = _ => 60 };
        var cmd = new Command("gc", "Delete blobs that no version references") { grace, Data, Metadata, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            int minutes = parse.GetValue(grace);
            if (minutes < 0) throw new UsageException("--grace-minutes must not be negative");
            var (metadata, chunks) = await OpenAsync(parse, ct);
            using var _m = metadata;
            var report = await new Maintenance(metadata, chunks, TimeProvider.System).CollectGarbageAsync(TimeSpan.FromMinutes(minutes), ct);
            Print(parse, output, report, () =>
                output.WriteLine($"deleted {report.Deleted} blobs ({report.DeletedBytes} bytes); {report.ReferencedBlobs} referenced, {report.SparedRecent} spared as recent, {report.StoredBlobs} were stored"));
            return 0;
        });
        return cmd;
    }

    private static Command FsckCommand(TextWriter output)
    {
        var cmd = new Command("fsck", "Check that every referenced blob is stored and matches its tag (exit 1 on problems)") { Data, Metadata, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            var (metadata, chunks) = await OpenAsync(parse, ct);
            using var _m = metadata;
            var report = await new Maintenance(metadata, chunks, TimeProvider.System).CheckAsync(ct);
            Print(parse, output, report, () =>
            {
                foreach (var p in report.Problems) output.WriteLine($"{p.Kind}\t{p.Owner}/{p.Parcel}\tversion {p.Version}\t{p.Tag}");
                output.WriteLine($"{report.Versions} versions, {report.BlobsChecked} blobs verified, {report.Problems.Count} problems");
            });
            return report.Clean ? 0 : 1;
        });
        return cmd;
    }

    private static Command StatsCommand(TextWriter output)
    {
        var cmd = new Command("stats", "Counts of users, parcels, versions, locks and stored blobs") { Data, Metadata, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            var (metadata, chunks) = await OpenAsync(parse, ct);
            using var _m = metadata;
            var s = await new Maintenance(metadata, chunks, TimeProvider.System).StatsAsync(ct);
            Print(parse, output, s, () =>
            {
                var m = s.Metadata;
                output.WriteLine($"users: {m.Users}\nparcels: {m.Parcels}\nversions: {m.Versions} ({m.SideVersions} side)\nlocks held: {m.HeldLocks}");
                output.WriteLine($"blobs stored: {s.StoredBlobs} ({s.StoredBytes} bytes)\nblob holdings: {m.BlobHoldings} ({m.DistinctBlobs} distinct blobs)");
            });
            return 0;
        });
        return cmd;
    }

    private static Command MigrateCommand(TextWriter output)
    {
        var fromData = new Option<string>("--from-data") { Description = "Data directory of the embedded deployment to copy (its servers stopped)", Required = true };
        var toMetadata = new Option<string>("--to-metadata") { Description = "PostgreSQL connection string of a new, empty database", Required = true };
        var toChunks = new Option<string?>("--to-chunks") { Description = "Chunk store to copy the blobs into (a directory, or s3://… as for --chunks); default: they stay in FROM/chunks" };
        var parallel = new Option<int>("--parallel") { Description = "Blobs copied at a time", DefaultValueFactory = _ => 8 };
        var noCheck = new Option<bool>("--no-fsck") { Description = "Skip checking the target afterwards" };
        var cmd = new Command("migrate", "Copy a deployment from the embedded engines to PostgreSQL (and another chunk store) without loss; " +
                                         "refuses a non-empty target, then checks it like fsck (exit 1 on problems)")
            { fromData, toMetadata, toChunks, parallel, noCheck, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            var dir = Path.GetFullPath(parse.GetValue(fromData)!);
            if (!File.Exists(DataLayout.Database(dir))) throw new UsageException($"{dir} is not an embedded isr-server data directory (no isr.db)");
            var connection = parse.GetValue(toMetadata)!;
            if (Engines.IsEmbeddedMetadata(connection)) throw new UsageException("--to-metadata needs a PostgreSQL connection string");
            int parallelism = parse.GetValue(parallel);
            if (parallelism < 1) throw new UsageException("--parallel must be at least 1");
            var (source, sourceChunks) = await OpenAsync(dir, connection: null, chunks: null, ct);
            using var _s = source;
            using var target = Engines.OpenMetadata(connection, dir);
            var chunkTarget = parse.GetValue(toChunks) is { Length: > 0 } location && Path.GetFullPath(location) != DataLayout.Chunks(dir)
                ? Engines.OpenChunks(location) : null;
            if (chunkTarget is not null) await ChunkStoreUrl.PrepareAsync(chunkTarget, ct);
            var progress = parse.GetValue(Json) ? null : new InlineProgress<(long Done, long Total)>(p =>
            {
                if (p.Done == p.Total || p.Done % 1000 == 0) Console.Error.Write($"\rcopying blobs: {p.Done}/{p.Total}{(p.Done == p.Total ? "\n" : "")}");
            });
            var report = await Migration.RunAsync(source, sourceChunks, target, chunkTarget, parallelism, progress, check: !parse.GetValue(noCheck), ct);
            Print(parse, output, report, () =>
            {
                output.WriteLine($"copied {report.Users} users, {report.Sessions} sessions, {report.Parcels} parcels, {report.Versions} versions, " +
                                 $"{report.Locks} locks, {report.BlobHoldings} blob holdings");
                output.WriteLine(chunkTarget is null ? $"blobs stay in {DataLayout.Chunks(dir)}"
                    : $"blobs: {report.ChunksCopied} copied, {report.ChunksAlreadyThere} already in the target");
                if (report.Check is { } check)
                {
                    foreach (var p in check.Problems) output.WriteLine($"{p.Kind}\t{p.Owner}/{p.Parcel}\tversion {p.Version}\t{p.Tag}");
                    output.WriteLine($"target checked: {check.Versions} versions, {check.BlobsChecked} blobs verified, {check.Problems.Count} problems");
                }
            });
            return report.Check is { Clean: false } ? 1 : 0;
        });
        return cmd;
    }
}
