using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Isr.Client.Cache;
using Isr.Storage;

namespace Isr.Client.Site;

/// <summary>Per-parcel facts the site keeps between commands; no secrets and no plaintext.</summary>
public sealed record ParcelLocalState
{
    public string Store { get; init; } = "";
    /// <summary>The parcel's lock token while this site holds the lock (server homes).</summary>
    public string? LockToken { get; init; }
    public long? LastSeenHead { get; init; }
    public double? LastResumeSeconds { get; init; }
    public DateTimeOffset? LastResumed { get; init; }
    /// <summary>Why the parcel's VM stopped without a suspend when its daemon died (set by the next daemon); null otherwise.</summary>
    public string? Interrupted { get; init; }
    /// <summary>Set when a check-in committed a version while the journal held later flushes too: the next command with
    /// the keys moves those onto the committed version (<see cref="Session.Checkin.FinishJournalRebase"/>).</summary>
    public Session.JournalRebase? JournalRebase { get; init; }
}

/// <summary>
/// A site's state directory (ISR_HOME, default ~/.isr): the shared chunk cache (ciphertext by tag), per-parcel local
/// state and dirty journals, and the run directory with the daemon's and sessions' sockets. Mode 0700.
/// </summary>
public sealed class SiteDirectory
{
    /// <summary>Generated metadata for the site's own files: built by reflection (and emitted IL), reading local.json
    /// cost each new CLI process ~25 ms before a resume's request was sent.</summary>
    private static SiteJsonContext Json => SiteJsonContext.Default;

    public string Root { get; }
    /// <summary>Fetched blobs: losing one to a crash only costs a refetch, so no fsync.</summary>
    public DirectoryChunkStore Cache { get; }
    /// <summary>The same directory for blobs that exist nowhere else yet (dirty chunks, memory images): fsynced.</summary>
    public DirectoryChunkStore DurableCache { get; }
    public SiteConfig Config { get; }
    /// <summary>The cache's limit and eviction, shared by every session of this process.</summary>
    public CacheSpace Space { get; }

    /// <summary>A unix socket's path has at most 107 bytes (sockaddr_un, with its NUL).</summary>
    private const int MaxSocketPathBytes = 107;
    /// <summary>The longest socket name in a session's run directory (nbd.sock, qmp.sock, import.sock).</summary>
    private const string LongestSessionSocket = "import.sock";

    public SiteDirectory(string root)
    {
        Root = Path.GetFullPath(root);
        // Refused before anything is made: the daemon's and sessions' sockets could not be bound (a cryptic failure at
        // the first resume otherwise).
        var longest = Path.Combine(SessionRunDirectory(new string('x', Homes.DirectoryParcelHome.MaxNameLength)), LongestSessionSocket);
        if (Encoding.UTF8.GetByteCount(longest) > MaxSocketPathBytes)
            throw new ArgumentException($"ISR_HOME '{Root}' is too long for this site's unix sockets (at most {MaxSocketPathBytes} bytes, as in {longest}): " +
                "use a shorter ISR_HOME");
        Directory.CreateDirectory(Root);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Cache = new DirectoryChunkStore(Path.Combine(Root, "cache"), durable: false);
        DurableCache = new DirectoryChunkStore(Path.Combine(Root, "cache"), durable: true);
        Config = SiteConfig.Load(Root);
        Space = new CacheSpace(Cache, DurableCache, Config.CacheLimitBytes);
        Directory.CreateDirectory(RunDirectory);
    }

    public static string DefaultRoot() =>
        Environment.GetEnvironmentVariable("ISR_HOME") is { Length: > 0 } home ? home
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".isr");

    public string RunDirectory => Path.Combine(Root, "run");
    public string DaemonSocket => Path.Combine(RunDirectory, "daemon.sock");
    public string DaemonLog => Path.Combine(Root, "daemon.log");
    public string ParcelDirectory(string parcel) => Path.Combine(Root, "parcels", parcel);
    public string JournalPath(string parcel) => Path.Combine(ParcelDirectory(parcel), "dirty.journal");
    /// <summary>The session's sockets: run/PARCEL, or run/p-DIGEST where a long parcel name would make a socket path too long.</summary>
    public string SessionRunDirectory(string parcel)
    {
        var named = Path.Combine(RunDirectory, parcel);
        return FitsSockets(named) ? named
            : Path.Combine(RunDirectory, "p-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(parcel)))[..16]);
    }

    private static bool FitsSockets(string directory) =>
        Encoding.UTF8.GetByteCount(Path.Combine(directory, LongestSessionSocket)) <= MaxSocketPathBytes;
    /// <summary>Present while `isr checkin --background` has not committed: a restarted daemon takes the check-in up again.</summary>
    public string BackgroundCheckinPath(string parcel) => Path.Combine(ParcelDirectory(parcel), "background-checkin.json");

    /// <summary>Every parcel this site keeps state for.</summary>
    public IEnumerable<string> ParcelNames()
    {
        var root = Path.Combine(Root, "parcels");
        return Directory.Exists(root) ? Directory.EnumerateDirectories(root).Select(Path.GetFileName).OfType<string>().Order() : [];
    }

    /// <summary>This site's identity, made on first use: a random id and a name (the host name by default).</summary>
    public SiteIdentity Identity
    {
        get
        {
            var file = Path.Combine(Root, "site.json");
            if (File.Exists(file)) return JsonSerializer.Deserialize(File.ReadAllBytes(file), Json.SiteIdentity)!;
            var identity = new SiteIdentity(Guid.NewGuid().ToString(), Environment.GetEnvironmentVariable("ISR_SITE_NAME") ?? Environment.MachineName);
            Durable.WriteFileAtomically(file, JsonSerializer.SerializeToUtf8Bytes(identity, Json.SiteIdentity));
            return identity;
        }
    }

    private string LoginFile => Path.Combine(Root, "login.json");

    public Homes.LoginRecord? Login => File.Exists(LoginFile) ? JsonSerializer.Deserialize(File.ReadAllBytes(LoginFile), Json.LoginRecord) : null;

    /// <summary>Keeps the login; forgetting it (null) forgets the site's hoard-only token too.</summary>
    public void SaveLogin(Homes.LoginRecord? login)
    {
        if (login is null) { File.Delete(LoginFile); SaveHoardToken(null); }
        else Durable.WriteFileAtomically(LoginFile, JsonSerializer.SerializeToUtf8Bytes(login, Json.LoginRecord));
    }

    private string HoardTokenFile => Path.Combine(Root, "hoard-token.json");

    /// <summary>The site's hoard-only token (from the last login), which the site daemon hoards with; no user key in it.</summary>
    public Homes.SiteHoardToken? HoardToken =>
        File.Exists(HoardTokenFile) ? JsonSerializer.Deserialize(File.ReadAllBytes(HoardTokenFile), Json.SiteHoardToken) : null;

    public void SaveHoardToken(Homes.SiteHoardToken? token)
    {
        if (token is null) File.Delete(HoardTokenFile);
        else Durable.WriteFileAtomically(HoardTokenFile, JsonSerializer.SerializeToUtf8Bytes(token, Json.SiteHoardToken));
    }

    public string PendingCommitPath(string parcel) => Path.Combine(ParcelDirectory(parcel), "pending-commit.json");

    public ParcelLocalState? ReadLocal(string parcel)
    {
        var file = Path.Combine(ParcelDirectory(parcel), "local.json");
        return File.Exists(file) ? JsonSerializer.Deserialize(File.ReadAllBytes(file), Json.ParcelLocalState) : null;
    }

    public void WriteLocal(string parcel, ParcelLocalState state)
    {
        Durable.WriteFileAtomically(Path.Combine(ParcelDirectory(parcel), "local.json"), JsonSerializer.SerializeToUtf8Bytes(state, Json.ParcelLocalState));
        if (state.Store.Length > 0) Durable.WriteFileAtomically(LastStoreFile, System.Text.Encoding.UTF8.GetBytes(state.Store));
    }

    private string LastStoreFile => Path.Combine(Root, "last-store");

    /// <summary>The store this site used last, the default for commands that name none.</summary>
    public string? LastStore => File.Exists(LastStoreFile) ? File.ReadAllText(LastStoreFile) : null;

    public void UpdateLocal(string parcel, Func<ParcelLocalState, ParcelLocalState> update) =>
        WriteLocal(parcel, update(ReadLocal(parcel) ?? new ParcelLocalState()));
}

/// <summary>A site: an ISR_HOME with a random id and a human name, shown as a lock holder.</summary>
public sealed record SiteIdentity(string Id, string Name);

/// <summary>The site's own files, indented for a reader: local.json, site.json, login.json, hoard-token.json, and
/// config.json (only read).</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ParcelLocalState))]
[JsonSerializable(typeof(SiteIdentity))]
[JsonSerializable(typeof(Homes.LoginRecord))]
[JsonSerializable(typeof(Homes.SiteHoardToken))]
[JsonSerializable(typeof(SiteConfig.FileForm))]
internal sealed partial class SiteJsonContext : JsonSerializerContext;

/// <summary>The files a session keeps in a parcel's state directory, written compactly: qemu.json, pending-commit.json
/// and home-view.json.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(Session.QemuRecord))]
[JsonSerializable(typeof(Session.PendingCommit))]
[JsonSerializable(typeof(Homes.OfflineHome.View))]
internal sealed partial class ParcelStateJsonContext : JsonSerializerContext;
