using System.Collections.Concurrent;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Cache;

/// <summary>Where a chunk came from, for statistics.</summary>
public enum ChunkSource { Cache, Home }

/// <summary>
/// Gets a blob by tag: the site cache first, then the parcel's home (the store or the server). Every blob is verified
/// against its tag before use; a corrupt cached copy is dropped and fetched again. Concurrent requests for one tag share one fetch.
/// </summary>
public sealed class ChunkFetcher(DirectoryChunkStore cache, IChunkStore home)
{
    private readonly ConcurrentDictionary<ChunkTag, Task<byte[]>> _inFlight = new();
    public TransferCounters Counters { get; } = new();

    public IChunkStore Home => home;
    public DirectoryChunkStore Cache => cache;

    public ValueTask<byte[]> GetAsync(ChunkTag tag, CancellationToken ct)
    {
        while (true)
        {
            if (_inFlight.TryGetValue(tag, out var running)) return new ValueTask<byte[]>(running);
            // Register before starting: a fetch that completes synchronously (a miss answered at once) must not leave
            // its finished task behind in the map, or a failure would be returned for this tag forever.
            var started = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            if (!_inFlight.TryAdd(tag, started.Task)) continue;
            _ = CompleteAsync(tag, started, ct);
            return new ValueTask<byte[]>(started.Task);
        }
    }

    private async Task CompleteAsync(ChunkTag tag, TaskCompletionSource<byte[]> started, CancellationToken ct)
    {
        byte[]? blob = null;
        Exception? error = null;
        try { blob = await FetchAsync(tag, ct); }
        catch (Exception e) { error = e; }
        _inFlight.TryRemove(new KeyValuePair<ChunkTag, Task<byte[]>>(tag, started.Task));
        if (error is OperationCanceledException oce) started.TrySetCanceled(oce.CancellationToken);
        else if (error != null) started.TrySetException(error);
        else started.TrySetResult(blob!);
    }

    private async Task<byte[]> FetchAsync(ChunkTag tag, CancellationToken ct)
    {
        var cached = await cache.GetAsync(tag, ct);
        if (cached != null)
        {
            if (tag.Matches(cached)) { Counters.Add(ChunkSource.Cache, cached.Length); return cached; }
            await cache.DeleteAsync(tag, ct); // corrupt cached copy: never used, fetched again below
        }
        var blob = await home.GetAsync(tag, ct) ?? throw new ChunkIntegrityException($"chunk {tag} is missing from {home}");
        if (!tag.Matches(blob)) throw new ChunkIntegrityException($"chunk {tag} from {home} does not match its tag");
        Counters.Add(ChunkSource.Home, blob.Length);
        await cache.PutAsync(tag, blob, ct);
        return blob;
    }

    public ValueTask<byte[]> LoadPageAsync(ChunkTag tag, CancellationToken ct) => GetAsync(tag, ct);
}

public sealed class TransferCounters
{
    private long _cacheBytes, _cacheHits, _homeBytes, _homeFetches;
    public long CacheBytes => Interlocked.Read(ref _cacheBytes);
    public long CacheHits => Interlocked.Read(ref _cacheHits);
    public long HomeBytes => Interlocked.Read(ref _homeBytes);
    public long HomeFetches => Interlocked.Read(ref _homeFetches);

    public void Add(ChunkSource source, long bytes)
    {
        if (source == ChunkSource.Cache) { Interlocked.Add(ref _cacheBytes, bytes); Interlocked.Increment(ref _cacheHits); }
        else { Interlocked.Add(ref _homeBytes, bytes); Interlocked.Increment(ref _homeFetches); }
    }
}
