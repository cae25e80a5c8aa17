using System.Collections.Concurrent;
using System.Net;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Isr.Format;

namespace Isr.Storage.S3;

/// <summary>
/// Blobs as objects of an S3-compatible store (AWS S3, Ceph RGW, MinIO, Garage), keyed PREFIX/ab/abcd… (64 hex digits
/// under a 256-way fan-out by the first byte: listings of one part of the key space stay small, and stores that
/// partition by key prefix spread the load). Objects are written whole by a single PUT, so a reader sees either no
/// object or the whole blob. Every batched operation runs at most <see cref="S3ChunkStoreOptions.Concurrency"/>
/// requests at once, over as many pooled connections, so throughput is bound by the store rather than by round trips.
/// </summary>
public sealed class S3ChunkStore : IChunkStore, IChunkInventory, IDisposable, IChunkTrash
{
    private readonly IAmazonS3 _s3;
    private readonly S3ChunkStoreOptions _options;

    public S3ChunkStore(S3ChunkStoreOptions options)
    {
        _options = options;
        var config = new AmazonS3Config
        {
            ForcePathStyle = true, // bucket in the path: no wildcard DNS needed for RGW, MinIO, Garage
            AuthenticationRegion = options.Region,
            // The SDK's default (CRC checksums on every request and response) is not understood by RGW 16 and
            // MinIO/Garage versions of its time: they answer 400 XAmzContentSHA256Mismatch.
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            MaxConnectionsPerServer = options.Concurrency,
            Timeout = TimeSpan.FromSeconds(60),
        };
        if (options.Endpoint is not null) config.ServiceURL = options.Endpoint.ToString();
        else config.RegionEndpoint = Amazon.RegionEndpoint.GetBySystemName(options.Region);
        _s3 = new AmazonS3Client(new BasicAWSCredentials(options.AccessKey, options.SecretKey), config);
    }

    public S3ChunkStoreOptions Options => _options;

    public override string ToString() => _options.ToString();

    public string KeyOf(ChunkTag tag)
    {
        var hex = tag.ToString();
        return $"{_options.Prefix}{hex[..2]}/{hex}";
    }

    /// <summary>Creates the bucket unless it exists already (ours or not: a foreign bucket fails on first use instead).</summary>
    public async Task EnsureBucketAsync(CancellationToken ct)
    {
        try { await _s3.PutBucketAsync(new PutBucketRequest { BucketName = _options.Bucket }, ct); }
        catch (AmazonS3Exception e) when (e.ErrorCode is "BucketAlreadyOwnedByYou" or "BucketAlreadyExists") { }
        catch (AmazonS3Exception e)
        {
            throw new IOException($"{this}: cannot create or open the bucket: {(int)e.StatusCode} {e.ErrorCode} {e.Message}".TrimEnd(), e);
        }
    }

    public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
    {
        try
        {
            using var response = await _s3.GetObjectAsync(new GetObjectRequest { BucketName = _options.Bucket, Key = KeyOf(tag) }, ct);
            var blob = new byte[response.ContentLength];
            await response.ResponseStream.ReadExactlyAsync(blob, ct);
            return blob;
        }
        catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>One PUT, without asking first: storing the same bytes again is harmless (content addressing), and
    /// concurrent PUTs of one tag carry identical bytes, so whichever lands last is the blob.</summary>
    public async ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct)
    {
        if (!tag.Matches(blob.Span)) throw new ChunkIntegrityException($"blob does not match tag {tag}");
        var bytes = MemoryMarshal.TryGetArray(blob, out var segment) ? segment : new ArraySegment<byte>(blob.ToArray());
        using var body = new MemoryStream(bytes.Array!, bytes.Offset, bytes.Count, writable: false);
        await _s3.PutObjectAsync(new PutObjectRequest
        {
            BucketName = _options.Bucket,
            Key = KeyOf(tag),
            InputStream = body,
            AutoCloseStream = false,
            UseChunkEncoding = false, // a plain signed body: simplest for every S3 dialect
            ContentType = "application/octet-stream",
        }, ct);
    }

    /// <summary>
    /// Per fan-out prefix: a prefix holding at least <see cref="S3ChunkStoreOptions.ListMinTags"/> of the tags is listed
    /// in key order from just before its first wanted key, so one request answers for up to a page of keys (a fresh or
    /// small store: one request per prefix however many tags). Listing a prefix stops once it has cost half as many
    /// requests as the tags it answers for, and the tags it did not reach — with those in thinly queried prefixes — get
    /// one HEAD each. So a batch costs at most about as many requests as HEADs alone would, and usually far fewer.
    /// </summary>
    public async ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct)
    {
        if (tags.Count == 0) return [];
        var present = new ConcurrentDictionary<ChunkTag, byte>();
        var unresolved = new ConcurrentBag<ChunkTag>();
        var groups = tags.Distinct().GroupBy(t => t.ToString()[..2]).ToList();
        foreach (var thin in groups.Where(g => g.Count() < _options.ListMinTags)) foreach (var t in thin) unresolved.Add(t);
        await Parallel.ForEachAsync(groups.Where(g => g.Count() >= _options.ListMinTags), Width(ct), async (group, token) =>
        {
            foreach (var t in await ListPrefixForAsync(group.Key, group.OrderBy(t => KeyOf(t), StringComparer.Ordinal).ToList(), present, token))
                unresolved.Add(t);
        });
        await Parallel.ForEachAsync(unresolved, Width(ct), async (tag, token) =>
        {
            if (await ExistsAsync(tag, token)) present.TryAdd(tag, 0);
        });
        return tags.Where(t => !present.ContainsKey(t)).ToList();
    }

    /// <summary>Lists one fan-out prefix across the span of <paramref name="sorted"/> (ordinal key order, as S3 lists),
    /// marking those found; returns the tags the page budget did not reach.</summary>
    private async Task<List<ChunkTag>> ListPrefixForAsync(string fanOut, List<ChunkTag> sorted, ConcurrentDictionary<ChunkTag, byte> present,
        CancellationToken ct)
    {
        var first = KeyOf(sorted[0]);
        var request = new ListObjectsV2Request
        {
            BucketName = _options.Bucket, Prefix = $"{_options.Prefix}{fanOut}/", MaxKeys = _options.ListPageSize,
            StartAfter = first[..^1], // sorts just before the first wanted key
        };
        int next = 0; // sorted[..next] are decided
        for (int pages = 0; pages < Math.Max(1, sorted.Count / 2); pages++)
        {
            var response = await _s3.ListObjectsV2Async(request, ct);
            foreach (var o in response.S3Objects ?? [])
            {
                int order = -1;
                while (next < sorted.Count && (order = string.CompareOrdinal(KeyOf(sorted[next]), o.Key)) < 0) next++; // passed: absent
                if (next < sorted.Count && order == 0) present.TryAdd(sorted[next++], 0);
                if (next == sorted.Count) return [];
            }
            if (response.IsTruncated != true) return []; // the rest sort after the prefix's last key: absent
            request.ContinuationToken = response.NextContinuationToken;
        }
        return sorted[next..];
    }

    public async Task<bool> ExistsAsync(ChunkTag tag, CancellationToken ct)
    {
        try
        {
            await _s3.GetObjectMetadataAsync(new GetObjectMetadataRequest { BucketName = _options.Bucket, Key = KeyOf(tag) }, ct);
            return true;
        }
        catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            return false;
        }
    }

    /// <summary>S3 answers a DELETE of an absent key with success: deleting is idempotent, as the contract wants.</summary>
    public async ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct) =>
        await _s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _options.Bucket, Key = KeyOf(tag) }, ct);

    private string TrashPrefix => $"{_options.Prefix}trash/";

    // S3 has no rename: copy, then delete the original. A PUT landing between the two is deleted with it, which its
    // client learns as "missing" at commit (the blob is still in the trash, and restored if anyone recorded it).
    public async ValueTask<bool> SetAsideAsync(ChunkTag tag, CancellationToken ct) => await MoveAsync(KeyOf(tag), TrashPrefix + tag, ct);

    public async ValueTask RestoreAsync(ChunkTag tag, CancellationToken ct) => await MoveAsync(TrashPrefix + tag, KeyOf(tag), ct);

    public async ValueTask PurgeAsync(ChunkTag tag, CancellationToken ct) =>
        await _s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _options.Bucket, Key = TrashPrefix + tag }, ct);

    public async IAsyncEnumerable<ChunkTag> ListSetAsideAsync([EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var chunk in ListPrefixAsync(TrashPrefix, ct)) yield return chunk.Chunk.Tag;
    }

    private async Task<bool> MoveAsync(string from, string to, CancellationToken ct)
    {
        try
        {
            await _s3.CopyObjectAsync(new CopyObjectRequest
            {
                SourceBucket = _options.Bucket, SourceKey = from, DestinationBucket = _options.Bucket, DestinationKey = to,
            }, ct);
        }
        catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound) { return false; }
        await _s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _options.Bucket, Key = from }, ct);
        return true;
    }

    public async IAsyncEnumerable<ChunkTag> ListAsync([EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var chunk in InventoryAsync(ct)) yield return chunk.Tag;
    }

    public async IAsyncEnumerable<StoredChunk> InventoryAsync([EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var chunk in ListPrefixAsync(_options.Prefix, ct))
            if (!chunk.Key.StartsWith(TrashPrefix, StringComparison.Ordinal)) yield return chunk.Chunk;
    }

    /// <summary>Objects under <paramref name="prefix"/> whose key ends in a tag; anything else in the bucket is ignored.</summary>
    private async IAsyncEnumerable<(string Key, StoredChunk Chunk)> ListPrefixAsync(string prefix, [EnumeratorCancellation] CancellationToken ct)
    {
        var request = new ListObjectsV2Request { BucketName = _options.Bucket, Prefix = prefix, MaxKeys = 1000 };
        while (true)
        {
            var response = await _s3.ListObjectsV2Async(request, ct);
            foreach (var o in response.S3Objects ?? [])
            {
                var name = o.Key[(o.Key.LastIndexOf('/') + 1)..];
                if (name.Length == 64 && name.All(char.IsAsciiHexDigitLower))
                    yield return (o.Key, new StoredChunk(ChunkTag.Parse(name), o.Size ?? 0, o.LastModified ?? DateTimeOffset.MinValue));
            }
            if (response.IsTruncated != true) yield break;
            request.ContinuationToken = response.NextContinuationToken;
        }
    }

    private ParallelOptions Width(CancellationToken ct) => new() { MaxDegreeOfParallelism = _options.Concurrency, CancellationToken = ct };

    public void Dispose() => _s3.Dispose();
}
