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

    /// <summary><c>MissingAsync</c> lists a fan-out prefix (instead of one HEAD per tag) when at least this many of the
    /// asked tags fall in it; int.MaxValue means HEADs only. docs/benchmarks/scale.md measures both.</summary>
    public int ListMinTags { get; init; } = 2;

    /// <summary>Keys per listing request (S3's maximum is 1000).</summary>
    public int ListPageSize { get; init; } = 1000;

    public override string ToString() => $"s3://{Bucket} at {Endpoint?.ToString() ?? $"AWS {Region}"}";
}
