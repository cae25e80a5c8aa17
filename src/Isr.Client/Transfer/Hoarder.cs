using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Transfer;

/// <summary>Every blob a version references, found without keys (keyring pages carry their tags in plaintext).</summary>
public sealed record VersionBlobs(IReadOnlyList<ChunkTag> Sealed, IReadOnlyList<ChunkTag> Pages, IReadOnlyList<ChunkTag> DiskChunks,
    IReadOnlyList<ChunkTag> MemoryChunks, long EstimatedChunkBytes)
{
    /// <summary>In fetch order: sealed metadata, pages, the memory image (needed first at resume), then the disk.</summary>
    public IReadOnlyList<ChunkTag> All => Sealed.Concat(Pages).Concat(MemoryChunks).Concat(DiskChunks).Distinct().ToList();
}

public sealed record HoardOptions
{
    /// <summary>Blobs requested at once (the server multiplexes them on a few HTTP/2 connections).</summary>
    public int Concurrency { get; init; } = 16;
    /// <summary>Bandwidth limit for blobs fetched from the home; null: none.</summary>
    public TokenBucket? Limit { get; init; }
}

public sealed record HoardProgress(int Done, int ToFetch, long BytesFetched, long EstimatedBytes);

/// <param name="Blobs">Blobs the version references (sealed metadata, pages, chunks).</param>
/// <param name="AlreadyCached">Of those, blobs that were in the site cache before this run (listing pages included).</param>
/// <param name="Fetched">Blobs fetched from the home by this run (pages included).</param>
/// <param name="EstimatedBytes">Upper estimate of what the missing chunks take: chunk count × chunk size (memory: average).</param>
/// <param name="FreeBytes">Free space on the cache's file system before fetching.</param>
public sealed record HoardResult(string Parcel, long Version, int Blobs, int AlreadyCached, int Fetched, long BytesFetched,
    long EstimatedBytes, long FreeBytes, double Seconds, double? RateLimitBytesPerSecond);

/// <summary>The site cache's file system is full: what was fetched so far stays, and a later run goes on from there.</summary>
public sealed class CacheFullException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>
/// Fills the site cache with every blob of a version ahead of time: `isr hoard` (proactive policy) and the baseline
/// policy's copy-in at resume. Needs no keys. Asks the cache first and fetches only what is missing, many requests in
/// flight, optionally bandwidth-limited, so an interrupted hoard is resumed by running it again. Every blob is verified
/// against its tag before it enters the cache.
/// </summary>
public sealed class Hoarder(DirectoryChunkStore cache, IChunkStore home, HoardOptions? options = null)
{
    private readonly HoardOptions _options = options ?? new HoardOptions();
    private long _bytesFetched, _blobsFetched, _pagesCached;

    /// <summary>Bytes and blobs this hoarder fetched from the home (pages included).</summary>
    public long BytesFetched => Interlocked.Read(ref _bytesFetched);
    public long BlobsFetched => Interlocked.Read(ref _blobsFetched);

    /// <summary>Lists and fetches every blob of <paramref name="version"/> that the cache lacks.</summary>
    public async Task<HoardResult> HoardAsync(string parcel, VersionRecord version, IProgress<HoardProgress>? progress,
        Action<string>? warn, CancellationToken ct)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        long fetchedBefore = BlobsFetched, bytesBefore = BytesFetched;
        var blobs = await ListAsync(version, ct);
        var all = blobs.All;
        var missing = await cache.MissingAsync(all, ct);
        long estimate = EstimateBytes(blobs, missing, version);
        long free = FreeBytes(cache.Root);
        if (estimate > free)
            warn?.Invoke($"the site cache ({cache.Root}) has {free / 1e6:F0} MB free and the missing blobs may take up to {estimate / 1e6:F0} MB " +
                "(chunk count × chunk size; compression usually makes it less): fetching until it is full");
        await FetchAsync(missing, estimate, progress, ct);
        int fetched = (int)(BlobsFetched - fetchedBefore);
        return new HoardResult(parcel, version.Number, all.Count, all.Count - fetched, fetched, BytesFetched - bytesBefore, estimate, free,
            System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds, _options.Limit?.BytesPerSecond);
    }

    /// <summary>Walks the version's trees from its roots (pages through the cache, fetched into it when missing).</summary>
    public async Task<VersionBlobs> ListAsync(VersionRecord version, CancellationToken ct)
    {
        using var gate = new SemaphoreSlim(_options.Concurrency);
        var disk = await WalkAsync(version.DiskRootTag, gate, ct);
        var memory = version.HasMemoryImage ? await WalkAsync(version.MemoryRootTag, gate, ct) : new Walk([], []);
        long memoryAverage = version.MemoryChunks > 0 ? (version.MemoryBytes + version.MemoryChunks - 1) / version.MemoryChunks : 0;
        long estimate = disk.Chunks.Count * (long)version.ChunkSize + memory.Chunks.Count * memoryAverage;
        return new VersionBlobs(version.SealedTags().ToList(), disk.Pages.Concat(memory.Pages).Distinct().ToList(),
            disk.Chunks.Distinct().ToList(), memory.Chunks.Distinct().ToList(), estimate);
    }

    private static long EstimateBytes(VersionBlobs blobs, IReadOnlyList<ChunkTag> missing, VersionRecord version)
    {
        var set = missing.ToHashSet();
        long memoryAverage = version.MemoryChunks > 0 ? (version.MemoryBytes + version.MemoryChunks - 1) / version.MemoryChunks : 0;
        const long Overhead = 22; // header and GCM tag per blob
        return blobs.DiskChunks.Count(set.Contains) * (version.ChunkSize + Overhead) + blobs.MemoryChunks.Count(set.Contains) * (memoryAverage + Overhead)
            + (blobs.Sealed.Count(set.Contains) + blobs.Pages.Count(set.Contains)) * 80_000L;
    }

    private sealed record Walk(List<ChunkTag> Pages, List<ChunkTag> Chunks);

    private async Task<Walk> WalkAsync(ChunkTag root, SemaphoreSlim gate, CancellationToken ct)
    {
        if (root.IsZeroChunk) return new Walk([], []);
        ChunkListPage page;
        await gate.WaitAsync(ct);
        try { page = ChunkListPage.Parse(await LoadPageAsync(root, ct)); }
        finally { gate.Release(); }
        if (page.IsLeaf) return new Walk([root], page.Tags.Where(t => !t.IsZeroChunk).ToList());
        var children = await Task.WhenAll(page.Tags.Select(child => WalkAsync(child, gate, ct)));
        var walk = new Walk([root], []);
        foreach (var child in children) { walk.Pages.AddRange(child.Pages); walk.Chunks.AddRange(child.Chunks); }
        return walk;
    }

    /// <summary>A page from the cache, else from the home (verified, then cached).</summary>
    public async ValueTask<byte[]> LoadPageAsync(ChunkTag tag, CancellationToken ct)
    {
        var cached = await cache.GetAsync(tag, ct);
        if (cached != null && tag.Matches(cached)) return cached;
        var blob = await FetchOneAsync(tag, ct);
        Interlocked.Increment(ref _pagesCached);
        return blob;
    }

    /// <summary>Fetches <paramref name="tags"/> (which the caller found missing from the cache) into the cache.</summary>
    public async Task FetchAsync(IReadOnlyList<ChunkTag> tags, long estimatedBytes, IProgress<HoardProgress>? progress, CancellationToken ct)
    {
        int done = 0;
        long bytes = 0;
        progress?.Report(new HoardProgress(0, tags.Count, 0, estimatedBytes));
        await Parallel.ForEachAsync(tags, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _options.Concurrency), CancellationToken = ct },
            async (tag, token) =>
            {
                if (cache.Contains(tag)) { Interlocked.Increment(ref done); return; } // arrived meanwhile (a concurrent hoard or session)
                var blob = await FetchOneAsync(tag, token);
                long sum = Interlocked.Add(ref bytes, blob.Length);
                progress?.Report(new HoardProgress(Interlocked.Increment(ref done), tags.Count, sum, estimatedBytes));
            });
    }

    /// <summary>One blob from the home into the cache (verified; a few retries; <see cref="CacheFullException"/> when the disk is full).</summary>
    public Task<byte[]> FetchAsync(ChunkTag tag, CancellationToken ct) => FetchOneAsync(tag, ct);

    private async Task<byte[]> FetchOneAsync(ChunkTag tag, CancellationToken ct)
    {
        if (_options.Limit is { } limit) await limit.WaitAsync(ct);
        byte[] blob;
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                blob = await home.GetAsync(tag, ct) ?? throw new ChunkIntegrityException($"chunk {tag} is missing from {home}");
                break;
            }
            catch (Exception e) when (attempt < 3 && e is IOException or HttpRequestException or Homes.ServerUnreachableException && !ct.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(200 * attempt), ct);
            }
        }
        if (!tag.Matches(blob)) throw new ChunkIntegrityException($"chunk {tag} from {home} does not match its tag");
        _options.Limit?.Consume(blob.Length);
        try
        {
            await cache.PutAsync(tag, blob, ct);
        }
        catch (IOException e) when (Cache.CacheSpace.IsDiskFull(e))
        {
            throw new CacheFullException($"the site cache ({cache.Root}) is full after fetching {BytesFetched / 1e6:F1} MB: free space there " +
                "(or move ISR_HOME to a larger disk) and run the command again; what was fetched is kept and not fetched again", e);
        }
        Interlocked.Add(ref _bytesFetched, blob.Length);
        Interlocked.Increment(ref _blobsFetched);
        return blob;
    }

    /// <summary>Free bytes on the file system holding <paramref name="path"/> (long.MaxValue if it cannot be told).</summary>
    public static long FreeBytes(string path)
    {
        try { return new DriveInfo(Path.GetFullPath(path)).AvailableFreeSpace; }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException) { return long.MaxValue; }
    }
}
