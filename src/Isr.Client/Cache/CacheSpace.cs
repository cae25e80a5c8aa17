using Isr.Client.Transfer;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Cache;

/// <summary>The site's disk is full where this site must write something that exists nowhere else yet.</summary>
public sealed class SiteDiskFullException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>
/// Keeps the site cache within its limit and makes room when its file system fills, by evicting <b>clean</b> blobs
/// only: those the parcel's home confirms it holds (one "missing" query per batch), least recently accessed first.
/// Blobs that exist only here (dirty chunks, memory images and pages of a version not yet committed) are never
/// evicted, because the home does not hold them; the journal and pending commits live outside the cache.
/// A fetched blob that does not fit is refused (<see cref="CacheFullException"/>: the fetcher serves it uncached); a
/// blob that exists only here may go past the limit, and is refused only by a full disk (<see cref="SiteDiskFullException"/>).
/// The byte count is this process's estimate (a scan at first use, then its own writes and evictions).
/// </summary>
public sealed class CacheSpace(DirectoryChunkStore cache, DirectoryChunkStore durable, long? limitBytes)
{
    /// <summary>Evict down to this share of the limit, so that a full cache does not ask the home at every write.</summary>
    private const double LowWater = 0.9;
    private const int QueryBatch = 1024;
    private readonly SemaphoreSlim _evicting = new(1, 1);
    private long _used = -1;

    public long? LimitBytes => limitBytes;
    public string Root => cache.Root;

    public long UsedBytes
    {
        get
        {
            if (Interlocked.Read(ref _used) < 0) Interlocked.CompareExchange(ref _used, cache.StoredBytes(), -1);
            return Interlocked.Read(ref _used);
        }
    }

    /// <summary>Stores a blob fetched from <paramref name="home"/> (not fsynced: losing it costs a refetch).</summary>
    public async ValueTask PutCleanAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, IChunkStore home, CancellationToken ct)
    {
        if (cache.Contains(tag)) return;
        if (limitBytes is long limit && UsedBytes + blob.Length > limit)
        {
            await EvictCleanAsync(home, UsedBytes + blob.Length - (long)(limit * LowWater), ct);
            if (UsedBytes + blob.Length > limit)
                throw new CacheFullException($"the site cache ({cache.Root}) is at its limit of {limit / 1e6:F0} MB and holds no more chunks that " +
                    $"{home} confirms it has: the rest exist only at this site (changes not yet checked in). Check in, or raise the limit (ISR_CACHE_LIMIT or cacheLimit in config.json)");
        }
        await PutMakingRoomAsync(cache, tag, blob, home, ct, full => new CacheFullException(
            $"the site's disk is full at {cache.Root}: no clean chunk is left to evict. Free space there (or move ISR_HOME to a larger disk); " +
            "chunks already fetched are kept", full));
    }

    /// <summary>Stores, fsynced, a blob that exists only at this site; <paramref name="what"/> and <paramref name="kept"/> go into the
    /// message if the disk is full even after evicting every clean chunk.</summary>
    public async ValueTask PutDirtyAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, IChunkStore home, string what, string kept, CancellationToken ct)
    {
        if (durable.Contains(tag)) return;
        if (limitBytes is long limit && UsedBytes + blob.Length > limit)
            await EvictCleanAsync(home, UsedBytes + blob.Length - (long)(limit * LowWater), ct);
        await PutMakingRoomAsync(durable, tag, blob, home, ct, full => new SiteDiskFullException(
            $"the site's disk is full at {durable.Root} while {what}: nothing evictable is left. {kept} Free space there and try again", full));
    }

    private async ValueTask PutMakingRoomAsync(DirectoryChunkStore store, ChunkTag tag, ReadOnlyMemory<byte> blob, IChunkStore home,
        CancellationToken ct, Func<IOException, IOException> full)
    {
        try
        {
            await store.PutAsync(tag, blob, ct);
        }
        catch (IOException e) when (IsDiskFull(e))
        {
            // A full file system: make room for this blob and some slack, then try once more.
            if (await EvictCleanAsync(home, blob.Length + Math.Max(blob.Length * 16L, 1L << 20), ct) < blob.Length) throw full(e);
            try { await store.PutAsync(tag, blob, ct); }
            catch (IOException again) when (IsDiskFull(again)) { throw full(again); }
        }
        Interlocked.Add(ref _used, blob.Length);
    }

    /// <summary>Deletes clean blobs, least recently accessed first, until <paramref name="bytes"/> are freed or none is left.
    /// A home that cannot be asked makes nothing evictable. Returns the bytes freed.</summary>
    public async Task<long> EvictCleanAsync(IChunkStore home, long bytes, CancellationToken ct)
    {
        if (bytes <= 0) return 0;
        await _evicting.WaitAsync(ct);
        try
        {
            var candidates = OldestFirst();
            long freed = 0;
            foreach (var batch in candidates.Chunk(QueryBatch))
            {
                IReadOnlyList<ChunkTag> missing;
                try { missing = await home.MissingAsync(batch.Select(c => c.Tag).ToList(), ct); }
                catch (Exception e) when (e is IOException or HttpRequestException or Homes.ServerException && !ct.IsCancellationRequested) { break; }
                var notAtHome = missing.ToHashSet();
                foreach (var (tag, length) in batch)
                {
                    if (notAtHome.Contains(tag)) continue;
                    await cache.DeleteAsync(tag, ct);
                    freed += length;
                    Interlocked.Add(ref _used, -length);
                    if (freed >= bytes) return freed;
                }
            }
            return freed;
        }
        finally
        {
            _evicting.Release();
        }
    }

    private List<(ChunkTag Tag, long Length)> OldestFirst()
    {
        var files = new List<(ChunkTag, long, DateTime)>();
        foreach (var first in Directory.EnumerateDirectories(cache.Root, "??"))
            foreach (var file in Directory.EnumerateFiles(first, "*", SearchOption.AllDirectories))
            {
                var info = new FileInfo(file);
                if (info.Name.Length == 64 && info.Name.All(Uri.IsHexDigit) && ChunkTag.Parse(info.Name) is { IsZeroChunk: false } tag)
                    files.Add((tag, info.Length, info.LastAccessTimeUtc));
            }
        return files.OrderBy(f => f.Item3).Select(f => (f.Item1, f.Item2)).ToList();
    }

    /// <summary>ENOSPC (28) / EDQUOT (122) on Unix, ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows.</summary>
    public static bool IsDiskFull(IOException e) =>
        (e.HResult & 0xFFFF) is 28 or 122 or 0x70 or 0x27 || e.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);
}
