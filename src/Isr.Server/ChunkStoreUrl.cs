using System.Web;
using Isr.Storage;
using Isr.Storage.S3;

namespace Isr.Server;

/// <summary>
/// Which chunk store a server uses, from <c>--chunks</c>, configuration <c>Isr:Chunks</c> or <c>ISR_SERVER_CHUNKS</c>:
/// <list type="bullet">
/// <item>empty: the directory <c>DATA/chunks</c> (the embedded default);</item>
/// <item><c>s3://BUCKET[/PREFIX]?endpoint=URL[&amp;region=R][&amp;concurrency=N][&amp;access_key=K&amp;secret_key=S]</c>: an
/// S3-compatible object store. Credentials come from the URL or else from <c>AWS_ACCESS_KEY_ID</c> /
/// <c>AWS_SECRET_ACCESS_KEY</c>; the URL itself is never printed (<see cref="ToString"/> shows no secret).</item>
/// </list>
/// </summary>
public sealed class ChunkStoreUrl
{
    public const string EnvironmentVariable = "ISR_SERVER_CHUNKS";

    /// <summary>The object store's settings, or null for the data directory's chunk directory.</summary>
    public S3ChunkStoreOptions? S3 { get; }

    private ChunkStoreUrl(S3ChunkStoreOptions? s3) => S3 = s3;

    /// <exception cref="ArgumentException">a malformed URL, an unknown parameter, or no credentials for S3</exception>
    public static ChunkStoreUrl Parse(string? text, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        if (string.IsNullOrWhiteSpace(text)) return new ChunkStoreUrl(null);
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme != "s3" || uri.Host.Length == 0)
            throw new ArgumentException("--chunks must be s3://BUCKET[/PREFIX]?endpoint=URL (or empty for the data directory)");

        var bucket = text.Trim()["s3://".Length..].Split('/', '?')[0]; // as written: Uri would lower-case it
        if (!System.Text.RegularExpressions.Regex.IsMatch(bucket, "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))
            throw new ArgumentException($"--chunks: '{bucket}' is not an S3 bucket name (3-63 lower-case letters, digits, '.', '-')");
        var query = HttpUtility.ParseQueryString(uri.Query);
        string[] known = ["endpoint", "region", "concurrency", "access_key", "secret_key"];
        foreach (var key in query.AllKeys)
            if (key is null || !known.Contains(key))
                throw new ArgumentException($"--chunks: unknown parameter '{key}' (known: {string.Join(", ", known)})");

        Uri? endpoint = null;
        if (query["endpoint"] is { } e && (!Uri.TryCreate(e, UriKind.Absolute, out endpoint) || endpoint.Scheme is not ("http" or "https")))
            throw new ArgumentException("--chunks: endpoint must be an http:// or https:// URL");
        string access = query["access_key"] ?? environment("AWS_ACCESS_KEY_ID") ?? "";
        string secret = query["secret_key"] ?? environment("AWS_SECRET_ACCESS_KEY") ?? "";
        if (access.Length == 0 || secret.Length == 0)
            throw new ArgumentException("--chunks: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");

        var prefix = Uri.UnescapeDataString(uri.AbsolutePath.Trim('/'));
        var options = new S3ChunkStoreOptions
        {
            Bucket = bucket,
            Endpoint = endpoint,
            AccessKey = access,
            SecretKey = secret,
            Prefix = prefix.Length == 0 ? "chunks/" : prefix + "/",
        };
        if (query["region"] is { Length: > 0 } region) options = options with { Region = region };
        if (query["concurrency"] is { } c)
            options = options with { Concurrency = int.TryParse(c, out var n) && n is > 0 and <= 1024 ? n : throw new ArgumentException("--chunks: concurrency must be 1..1024") };
        return new ChunkStoreUrl(options);
    }

    public IChunkStore Open(string dataDir) =>
        S3 is null ? new DirectoryChunkStore(DataLayout.Chunks(dataDir)) : new S3ChunkStore(S3);

    /// <summary>Makes the store ready before first use: an S3 bucket is created if it does not exist yet (which also
    /// checks endpoint and credentials at startup rather than at the first upload).</summary>
    public static async Task PrepareAsync(IChunkStore store, CancellationToken ct)
    {
        if (store is S3ChunkStore s3) await s3.EnsureBucketAsync(ct);
    }

    public override string ToString() => S3?.ToString() ?? "the data directory's chunks/";
}
