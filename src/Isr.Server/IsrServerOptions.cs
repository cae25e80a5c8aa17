namespace Isr.Server;

/// <summary>Server settings, bound from the configuration section <c>Isr</c> (appsettings, environment <c>Isr__…</c>,
/// command line). <see cref="DataDirectory"/> falls back to the environment variable <c>ISR_SERVER_DATA</c>.</summary>
public sealed class IsrServerOptions
{
    public const string Section = "Isr";
    public const string DataEnvironmentVariable = "ISR_SERVER_DATA";

    /// <summary>Holds <c>isr.db</c> (embedded metadata), <c>chunks/</c> (blobs) and <c>server.pfx</c> (the TLS certificate).</summary>
    public string DataDirectory { get; set; } = "";

    /// <summary>The metadata engine (see <see cref="Engines.OpenMetadata"/>): empty for the embedded <c>isr.db</c>, or the
    /// Npgsql connection string of the PostgreSQL database that several servers share.</summary>
    public string Metadata { get; set; } = "";

    /// <summary>The chunk store as a <see cref="ChunkStoreUrl"/>; empty: <c>DATA/chunks</c>.</summary>
    public string Chunks { get; set; } = "";

    /// <summary>How long a login token stays valid.</summary>
    public TimeSpan SessionLifetime { get; set; } = TimeSpan.FromDays(30);

    /// <summary>Blob bytes per <c>POST /chunks/upload</c> request (PROTOCOL.md: 64 MiB).</summary>
    public long MaxUploadBytes { get; set; } = 64L << 20;

    /// <summary>Tags per <c>missing</c> / <c>download</c> request (PROTOCOL.md: 65 536).</summary>
    public int MaxTagsPerRequest { get; set; } = 65536;

    /// <summary>The TLS certificate (PKCS#12 without password); default <c>DATA/server.pfx</c>.</summary>
    public string? CertificatePath { get; set; }

    public string ResolvedDataDirectory()
    {
        var dir = DataDirectory.Length > 0 ? DataDirectory : Environment.GetEnvironmentVariable(DataEnvironmentVariable);
        if (string.IsNullOrEmpty(dir))
            throw new InvalidOperationException($"no data directory: set {Section}:DataDirectory or {DataEnvironmentVariable} (isr-server run --data DIR)");
        return Path.GetFullPath(dir);
    }
}

/// <summary>Where things live in a data directory.</summary>
public static class DataLayout
{
    public static string Database(string dataDir) => Path.Combine(dataDir, "isr.db");
    public static string Chunks(string dataDir) => Path.Combine(dataDir, "chunks");
    public static string Certificate(string dataDir) => Path.Combine(dataDir, "server.pfx");
}
