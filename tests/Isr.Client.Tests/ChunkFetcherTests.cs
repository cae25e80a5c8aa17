using Isr.Client.Cache;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Tests;

public sealed class ChunkFetcherTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly DirectoryChunkStore _home;
    private readonly DirectoryChunkStore _cache;

    public ChunkFetcherTests()
    {
        _home = new DirectoryChunkStore(_dir["home"], durable: false);
        _cache = new DirectoryChunkStore(_dir["cache"], durable: false);
    }

    public void Dispose() => _dir.Dispose();

    private async Task<(ChunkTag Tag, byte[] Blob)> StoreAtHome(int seed, int length = 5000)
    {
        var blob = TestData.Random(length, seed);
        var tag = ChunkTag.Of(blob);
        await _home.PutAsync(tag, blob, default);
        return (tag, blob);
    }

    /// <summary>A home holding one blob, answering nothing until opened.</summary>
    private static async Task<(GatedStore Home, ChunkTag Tag, byte[] Blob)> ClosedHomeWith(int seed)
    {
        var home = new GatedStore(open: false);
        var blob = TestData.Random(3000, seed);
        var tag = ChunkTag.Of(blob);
        await home.PutAsync(tag, blob, default);
        return (home, tag, blob);
    }

    [Fact]
    public async Task FetchesFromHomeThenFromCache()
    {
        var (tag, blob) = await StoreAtHome(1);
        var fetcher = new ChunkFetcher(_cache, _home);
        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.True(_cache.Contains(tag));
        Assert.Equal(1, fetcher.Counters.HomeFetches);
        Assert.Equal(blob.Length, fetcher.Counters.HomeBytes);

        await _home.DeleteAsync(tag, default);
        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.Equal(1, fetcher.Counters.HomeFetches);
        Assert.Equal(1, fetcher.Counters.CacheHits);
        Assert.Equal(blob.Length, fetcher.Counters.CacheBytes);
        Assert.Equal(blob, await fetcher.LoadPageAsync(tag, default));
        Assert.Equal(2, fetcher.Counters.CacheHits);
    }

    [Fact]
    public async Task CorruptCachedBlobIsDroppedAndFetchedAgain()
    {
        var (tag, blob) = await StoreAtHome(2);
        var fetcher = new ChunkFetcher(_cache, _home);
        await fetcher.GetAsync(tag, default);
        var corrupt = blob.ToArray();
        corrupt[100] ^= 0x40;
        File.WriteAllBytes(_cache.PathOf(tag), corrupt);

        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.Equal(2, fetcher.Counters.HomeFetches);
        Assert.Equal(0, fetcher.Counters.CacheHits);
        Assert.Equal(blob, File.ReadAllBytes(_cache.PathOf(tag))); // the cache holds the good copy again
    }

    [Fact]
    public async Task TruncatedCachedBlobIsDroppedAndFetchedAgain()
    {
        var (tag, blob) = await StoreAtHome(3);
        await _cache.PutAsync(tag, blob, default);
        File.WriteAllBytes(_cache.PathOf(tag), blob[..10]);
        var fetcher = new ChunkFetcher(_cache, _home);
        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.Equal(1, fetcher.Counters.HomeFetches);
    }

    [Fact]
    public async Task BlobCorruptAtHomeIsAnIntegrityErrorNamingTheTag()
    {
        var (tag, blob) = await StoreAtHome(4);
        var corrupt = blob.ToArray();
        corrupt[^1] ^= 1;
        File.WriteAllBytes(_home.PathOf(tag), corrupt); // bypasses the store's own check, as a disk error would
        var fetcher = new ChunkFetcher(_cache, _home);
        var e = await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await fetcher.GetAsync(tag, default));
        Assert.Contains(tag.ToString(), e.Message);
        Assert.False(_cache.Contains(tag)); // never cached
        Assert.Equal(0, fetcher.Counters.HomeFetches);
    }

    [Fact]
    public async Task BlobMissingAtHomeIsAnIntegrityErrorNamingTheTag()
    {
        var tag = ChunkTag.Of(TestData.Random(100, 5));
        var fetcher = new ChunkFetcher(_cache, _home);
        var e = await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await fetcher.GetAsync(tag, default));
        Assert.Contains(tag.ToString(), e.Message);
    }

    /// <summary>A failed fetch must not be remembered: once the blob reaches the home, the next request gets it.</summary>
    [Fact]
    public async Task FailureIsNotCached()
    {
        var blob = TestData.Random(100, 6);
        var tag = ChunkTag.Of(blob);
        var fetcher = new ChunkFetcher(_cache, _home);
        await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await fetcher.GetAsync(tag, default));
        await _home.PutAsync(tag, blob, default);
        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
    }

    [Fact]
    public async Task FailureIsNotCachedWithASynchronousHome()
    {
        var home = new GatedStore(open: true);
        var blob = TestData.Random(100, 7);
        var tag = ChunkTag.Of(blob);
        var fetcher = new ChunkFetcher(_cache, home);
        await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await fetcher.GetAsync(tag, default));
        await home.PutAsync(tag, blob, default);
        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        // And a fetched blob is not pinned in memory: corruption in the cache is still noticed later.
        File.WriteAllBytes(_cache.PathOf(tag), new byte[100]);
        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.Equal(2, fetcher.Counters.HomeFetches);
    }

    [Fact]
    public async Task ConcurrentRequestsForOneTagShareOneFetch()
    {
        var (home, tag, blob) = await ClosedHomeWith(seed: 8);
        var fetcher = new ChunkFetcher(_cache, home);
        var requests = Enumerable.Range(0, 20).Select(_ => fetcher.GetAsync(tag, default).AsTask()).ToList();
        home.Open();
        foreach (var result in await Task.WhenAll(requests)) Assert.Equal(blob, result);
        Assert.Equal(1, home.Gets);
        Assert.Equal(1, fetcher.Counters.HomeFetches);
        // Later requests are cache hits.
        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.Equal(1, home.Gets);
    }

    [Fact]
    public async Task ConcurrentRequestsForManyTags()
    {
        var blobs = new List<(ChunkTag, byte[])>();
        for (int i = 0; i < 50; i++) blobs.Add(await StoreAtHome(100 + i, 1000 + i));
        var fetcher = new ChunkFetcher(_cache, _home);
        var results = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => Task.Run(async () => await fetcher.GetAsync(blobs[i % 50].Item1, default))));
        for (int i = 0; i < 200; i++) Assert.Equal(blobs[i % 50].Item2, results[i]);
        Assert.InRange(fetcher.Counters.HomeFetches, 50, 200);
        Assert.Equal(200, fetcher.Counters.HomeFetches + fetcher.Counters.CacheHits + (200 - fetcher.Counters.HomeFetches - fetcher.Counters.CacheHits));
    }

    [Fact]
    public async Task AGuestReadOfABlobBeingPrefetchedWaitsForThatFetch()
    {
        var (home, tag, blob) = await ClosedHomeWith(seed: 9);
        var fetcher = new ChunkFetcher(_cache, home);
        var prefetch = fetcher.PrefetchAsync(tag, async (t, ct) =>
        {
            var fetched = (await home.GetAsync(t, ct))!;
            await _cache.PutAsync(t, fetched, ct);
            return fetched;
        }, default);
        var read = fetcher.GetOrStallAsync(tag, default);
        var again = fetcher.GetAsync(tag, default).AsTask();
        // The guest is fetching it already: a second prefetch sends nothing.
        Assert.Null(await fetcher.PrefetchAsync(tag, (_, _) => throw new InvalidOperationException("fetched twice"), default));
        home.Open();
        Assert.Equal(blob, await prefetch);
        Assert.Equal(blob, await read);
        Assert.Equal(blob, await again);
        Assert.Equal(1, home.Gets);
        Assert.Equal(0, fetcher.Counters.HomeFetches); // the prefetcher's bytes, not the guest's
    }

    [Fact]
    public async Task AGuestReadWhosePrefetchFailsFetchesOnItsOwn()
    {
        var (tag, blob) = await StoreAtHome(10);
        var fetcher = new ChunkFetcher(_cache, _home);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var prefetch = fetcher.PrefetchAsync(tag, async (_, _) =>
        {
            await gate.Task;
            throw new IOException("the prefetch's connection dropped");
        }, default);
        var read = fetcher.GetOrStallAsync(tag, default);
        gate.SetResult();
        await Assert.ThrowsAsync<IOException>(() => prefetch);
        Assert.Equal(blob, await read);
        Assert.Equal(1, fetcher.Counters.HomeFetches);
    }

    [Fact]
    public async Task APrefetchOfABlobTheGuestIsFetchingSendsNothing()
    {
        var (home, tag, blob) = await ClosedHomeWith(seed: 11);
        var fetcher = new ChunkFetcher(_cache, home);
        var read = fetcher.GetAsync(tag, default).AsTask();
        Assert.Null(await fetcher.PrefetchAsync(tag, (_, _) => throw new InvalidOperationException("fetched twice"), default));
        home.Open();
        Assert.Equal(blob, await read);
        Assert.Equal(1, home.Gets);
    }

    /// <summary>A home that holds blobs in memory, answers synchronously, and can hold every Get until opened.</summary>
    private sealed class GatedStore(bool open) : IChunkStore
    {
        private readonly Dictionary<ChunkTag, byte[]> _blobs = new();
        private readonly TaskCompletionSource _gate = NewGate(open);
        private int _gets;
        public int Gets => Volatile.Read(ref _gets);

        private static TaskCompletionSource NewGate(bool open)
        {
            var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (open) gate.SetResult();
            return gate;
        }

        public void Open() => _gate.TrySetResult();

        public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
        {
            Interlocked.Increment(ref _gets);
            if (!_gate.Task.IsCompleted) await _gate.Task;
            lock (_blobs) return _blobs.GetValueOrDefault(tag);
        }

        public ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct)
        {
            if (!tag.Matches(blob.Span)) throw new ChunkIntegrityException("bad tag");
            lock (_blobs) _blobs[tag] = blob.ToArray();
            return ValueTask.CompletedTask;
        }

        public ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct)
        {
            lock (_blobs) return ValueTask.FromResult<IReadOnlyList<ChunkTag>>(tags.Where(t => !_blobs.ContainsKey(t)).ToList());
        }

        public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct)
        {
            lock (_blobs) _blobs.Remove(tag);
            return ValueTask.CompletedTask;
        }

        public async IAsyncEnumerable<ChunkTag> ListAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
        {
            await Task.Yield();
            List<ChunkTag> tags;
            lock (_blobs) tags = _blobs.Keys.ToList();
            foreach (var tag in tags) yield return tag;
        }
    }
}

public class PlaintextLruTests
{
    private static ChunkTag Tag(int seed) => ChunkTag.Of(TestData.Random(8, seed));

    [Fact]
    public void GetReturnsWhatWasPut()
    {
        var lru = new PlaintextLru(4);
        var data = TestData.Random(10, 1);
        Assert.Null(lru.Get(Tag(1)));
        lru.Put(Tag(1), data);
        Assert.Same(data, lru.Get(Tag(1)));
        Assert.Null(lru.Get(Tag(2)));
    }

    [Fact]
    public void EvictsTheLeastRecentlyUsed()
    {
        var lru = new PlaintextLru(2);
        lru.Put(Tag(1), [1]);
        lru.Put(Tag(2), [2]);
        Assert.NotNull(lru.Get(Tag(1)));   // 1 is now the most recent
        lru.Put(Tag(3), [3]);              // evicts 2
        Assert.Null(lru.Get(Tag(2)));
        Assert.Equal([1], lru.Get(Tag(1)));
        Assert.Equal([3], lru.Get(Tag(3)));
        lru.Put(Tag(4), [4]);              // evicts 1 (3 was used last)
        Assert.Null(lru.Get(Tag(1)));
        Assert.Equal([3], lru.Get(Tag(3)));
        Assert.Equal([4], lru.Get(Tag(4)));
    }

    [Fact]
    public void PuttingAKnownTagKeepsTheFirstValue()
    {
        var lru = new PlaintextLru(2);
        lru.Put(Tag(1), [1]);
        lru.Put(Tag(1), [9]);
        Assert.Equal([1], lru.Get(Tag(1)));
        lru.Put(Tag(2), [2]);
        Assert.Equal([1], lru.Get(Tag(1)));
        Assert.Equal([2], lru.Get(Tag(2)));
    }

    [Fact]
    public void ConcurrentUseStaysWithinCapacity()
    {
        var lru = new PlaintextLru(16);
        Parallel.For(0, 2000, i =>
        {
            lru.Put(Tag(i % 64), [(byte)(i % 64)]);
            var got = lru.Get(Tag((i * 7) % 64));
            if (got != null) Assert.Equal((byte)((i * 7) % 64), got[0]);
        });
        Assert.Equal(16, Enumerable.Range(0, 64).Count(i => lru.Get(Tag(i)) != null));
    }
}
