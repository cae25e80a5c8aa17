namespace Isr.Storage.S3;

/// <summary>Where and how an <see cref="S3ChunkStore"/> keeps blobs. Credentials are secrets: never log them
/// (<see cref="ToString"/> leaves them out).</summary>
public sealed record S3ChunkStoreOptions
{
    public required string Bucket { get; init; }

    /// <summary>The service URL (http://127.0.0.1:7480 for a local radosgw); null means AWS itself in <see cref="Region"/>.</summary>
    public Uri? Endpoint { get; init; }

    public required string AccessKey { get; init; }
    public required string SecretKey { get; init; }

    /// <summary>The signing region; RGW, MinIO and Garage accept any, AWS wants the bucket's.</summary>
    public string Region { get; init; } = "us-east-1";

    /// <summary>Key prefix inside the bucket, so one bucket can hold other things too.</summary>
    public string Prefix { get; init; } = "chunks/";

    /// <summary>Requests in flight per store (connections to the endpoint and the width of batched operations).</summary>
    public int Concurrency { get; init; } = 32;

    /// <summary>A <c>MissingAsync</c> of at least this many tags lists the fan-out prefixes the tags fall in instead of
    /// asking about each tag (docs/benchmarks/scale.md measures where listing starts to win).</summary>
    public int ListThreshold { get; init; } = 4096;

    public override string ToString() => $"s3://{Bucket} at {Endpoint?.ToString() ?? $"AWS {Region}"}";
}
