using System.CommandLine;
using System.Text.Json;
using Isr.Format;
using Isr.Storage;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Isr.Server.Admin;

/// <summary>
/// <c>isr-server init | run | user add|list|disable | prune | gc | fsck | stats</c>. Exit codes: 0 success, 1 fsck found
/// problems, 2 usage (bad arguments, uninitialised data directory), 3 not found, 4 conflict, 5 other failures.
/// </summary>
public static class AdminCli
{
    private static readonly string[] Commands = ["init", "run", "user", "prune", "gc", "fsck", "stats"];

    /// <summary>True for an admin command line; false for bare host arguments (<c>--urls=…</c>), which run the web app directly.</summary>
    public static bool Handles(string[] args) =>
        args.Length == 0 || Commands.Contains(args[0]) || args[0] is "-h" or "--help" or "-?" or "--version" || !args[0].StartsWith('-')
        || args.Contains("--data");

    private static readonly Option<string?> Data = new("--data")
    {
        Description = $"Data directory (database, chunks, certificate); default: ${IsrServerOptions.DataEnvironmentVariable}",
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
    private sealed class NotFoundException(string message) : Exception(message);

    private static string DataDir(ParseResult parse)
    {
        var dir = parse.GetValue(Data) ?? Environment.GetEnvironmentVariable(IsrServerOptions.DataEnvironmentVariable);
        return string.IsNullOrEmpty(dir)
            ? throw new UsageException($"no data directory: use --data DIR (or set {IsrServerOptions.DataEnvironmentVariable})")
            : Path.GetFullPath(dir);
    }

    /// <summary>The metadata store of an initialised data directory.</summary>
    private static async Task<SqliteMetadataStore> OpenMetadataAsync(ParseResult parse, CancellationToken ct)
    {
        var dir = DataDir(parse);
        if (!File.Exists(DataLayout.Database(dir))) throw new UsageException($"{dir} is not an isr-server data directory: run `isr-server init --data {dir}` first");
        var metadata = new SqliteMetadataStore(DataLayout.Database(dir));
        await metadata.InitializeAsync(ct);
        return metadata;
    }

    private static string? ChunksUrl(ParseResult parse) =>
        parse.GetValue(Chunks) ?? Environment.GetEnvironmentVariable(ChunkStoreUrl.EnvironmentVariable);

    /// <summary>The chunk store that <c>--chunks</c> names, ready for use.</summary>
    private static async Task<IChunkStore> OpenChunksAsync(ParseResult parse, CancellationToken ct)
    {
        var store = ChunkStoreUrl.Parse(ChunksUrl(parse)).Open(DataDir(parse));
        await ChunkStoreUrl.PrepareAsync(store, ct);
        return store;
    }

    /// <summary>Both stores, for maintenance; dispose the result.</summary>
    private static async Task<Stores> OpenAsync(ParseResult parse, CancellationToken ct)
    {
        var metadata = await OpenMetadataAsync(parse, ct);
        try { return new Stores(metadata, await OpenChunksAsync(parse, ct)); }
        catch { metadata.Dispose(); throw; }
    }

    private sealed record Stores(SqliteMetadataStore Metadata, IChunkStore Chunks) : IDisposable
    {
        public Maintenance Maintenance() => new(Metadata, Chunks, TimeProvider.System);

        public void Dispose()
        {
            Metadata.Dispose();
            (Chunks as IDisposable)?.Dispose();
        }
    }

    private static void Print(ParseResult parse, TextWriter output, object result, Action human)
    {
        if (parse.GetValue(Json)) output.WriteLine(JsonSerializer.Serialize(result, JsonOut));
        else human();
    }

    private static Command InitCommand(TextWriter output)
    {
        var cmd = new Command("init", "Create a data directory: database, chunk directory (or the --chunks bucket), self-signed TLS certificate") { Data, Chunks };
        cmd.SetAction(async (parse, ct) =>
        {
            var dir = DataDir(parse);
            if (File.Exists(DataLayout.Database(dir)) || File.Exists(DataLayout.Certificate(dir)))
                throw new UsageException($"{dir} is already initialised");
            Directory.CreateDirectory(dir);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            using ((await OpenChunksAsync(parse, ct)) as IDisposable) { } // first: a bad --chunks leaves no half-made directory
            using (var metadata = new SqliteMetadataStore(DataLayout.Database(dir))) await metadata.InitializeAsync(ct);
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
        var cmd = new Command("run", "Run the server (HTTPS, HTTP/2 and HTTP/1.1)") { Data, Chunks, urls };
        cmd.SetAction(async (parse, ct) =>
        {
            var dir = DataDir(parse);
            if (!File.Exists(DataLayout.Database(dir)) || !File.Exists(DataLayout.Certificate(dir)))
                throw new UsageException($"{dir} is not an isr-server data directory: run `isr-server init --data {dir}` first");
            using var cert = ServerCertificate.Load(DataLayout.Certificate(dir));
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
            builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.DataDirectory)}"] = dir;
            var chunks = ChunkStoreUrl.Parse(ChunksUrl(parse)); // bad URLs fail here, before the host starts
            builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.Chunks)}"] = ChunksUrl(parse) ?? "";
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
        var add = new Command("add", "Create an account; prints its recovery key once") { name, passwordFile, Data };
        add.SetAction(async (parse, ct) =>
        {
            using var metadata = await OpenMetadataAsync(parse, ct);
            var file = parse.GetValue(passwordFile)!;
            if (!file.Exists) throw new UsageException($"no password file {file.FullName}");
            var password = (await File.ReadAllTextAsync(file.FullName, ct)).TrimEnd('\r', '\n');
            var userName = parse.GetValue(name)!;
            if (await metadata.GetUserAsync(userName, ct) is not null) throw new MetadataConflictException($"user '{userName}' exists");
            var made = UserProvisioning.Create(userName, password);
            await metadata.AddUserAsync(made.User, DateTimeOffset.UtcNow, ct);
            output.WriteLine($"user {userName} added");
            output.WriteLine($"recovery key: {UserProvisioning.FormatRecoveryKey(made.RecoveryKey)}");
            output.WriteLine("Keep this recovery key somewhere safe and offline: it is shown only this once, and without it or the password the user's parcels cannot be decrypted.");
            return 0;
        });

        var list = new Command("list", "List accounts") { Data, Json };
        list.SetAction(async (parse, ct) =>
        {
            using var metadata = await OpenMetadataAsync(parse, ct);
            var users = (await metadata.ListUsersAsync(ct)).Select(u => new { name = u.Name, disabled = u.Disabled, created = u.Created }).ToList();
            Print(parse, output, users, () =>
            {
                foreach (var u in users) output.WriteLine($"{u.name}\t{(u.disabled ? "disabled" : "active")}\t{u.created:u}");
            });
            return 0;
        });

        var disableName = new Argument<string>("NAME") { Description = "User name" };
        var disable = new Command("disable", "Disable an account and revoke its sessions") { disableName, Data };
        disable.SetAction(async (parse, ct) =>
        {
            using var metadata = await OpenMetadataAsync(parse, ct);
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
        var cmd = new Command("prune", "Remove old versions (their blobs are reclaimed by gc)") { keep, parcel, owner, Data, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            int n = parse.GetValue(keep);
            if (n < 1) throw new UsageException("--keep must be at least 1");
            using var stores = await OpenAsync(parse, ct);
            var result = await stores.Maintenance().PruneAsync(n, parse.GetValue(parcel), parse.GetValue(owner), ct);
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
        var cmd = new Command("gc", "Delete blobs that no version references") { grace, Data, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            int minutes = parse.GetValue(grace);
            if (minutes < 0) throw new UsageException("--grace-minutes must not be negative");
            using var stores = await OpenAsync(parse, ct);
            var report = await stores.Maintenance().CollectGarbageAsync(TimeSpan.FromMinutes(minutes), ct);
            Print(parse, output, report, () =>
                output.WriteLine($"deleted {report.Deleted} blobs ({report.DeletedBytes} bytes); {report.ReferencedBlobs} referenced, {report.SparedRecent} spared as recent, {report.StoredBlobs} were stored"));
            return 0;
        });
        return cmd;
    }

    private static Command FsckCommand(TextWriter output)
    {
        var cmd = new Command("fsck", "Check that every referenced blob is stored and matches its tag (exit 1 on problems)") { Data, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            using var stores = await OpenAsync(parse, ct);
            var report = await stores.Maintenance().CheckAsync(ct);
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
        var cmd = new Command("stats", "Counts of users, parcels, versions, locks and stored blobs") { Data, Chunks, Json };
        cmd.SetAction(async (parse, ct) =>
        {
            using var stores = await OpenAsync(parse, ct);
            var s = await stores.Maintenance().StatsAsync(ct);
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
}
