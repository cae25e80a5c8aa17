using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Isr.Client.Cache;
using Isr.Client.Homes;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Tests;

/// <summary>A home that counts what is fetched from it and can fail after a number of fetches (an interrupted hoard).</summary>
internal sealed class CountingStore(IChunkStore inner, int failAfter = int.MaxValue) : IChunkStore
{
    private int _gets;
    public int Gets => _gets;
    public ConcurrentQueue<ChunkTag> Order { get; } = new();

    public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
    {
        if (Interlocked.Increment(ref _gets) > failAfter) throw new InvalidOperationException("the home went away");
        Order.Enqueue(tag);
        await Task.Yield();
        return await inner.GetAsync(tag, ct);
    }

    public ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct) => inner.PutAsync(tag, blob, ct);
    public ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct) => inner.MissingAsync(tags, ct);
    public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct) => inner.DeleteAsync(tag, ct);
    public IAsyncEnumerable<ChunkTag> ListAsync(CancellationToken ct) => inner.ListAsync(ct);
}

internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

/// <summary>A clock that moves only when someone sleeps: bandwidth accounting without waiting.</summary>
internal sealed class VirtualClock
{
    private long _ticks;
    public TimeSpan Now => TimeSpan.FromTicks(Interlocked.Read(ref _ticks));
    public Task Sleep(TimeSpan d, CancellationToken ct) { Interlocked.Add(ref _ticks, d.Ticks); return Task.CompletedTask; }
}

public sealed class HoardTests : IAsyncLifetime
{
    private DiskSetup _s = null!;
    public async Task InitializeAsync() => _s = await DiskSetup.CreateStandardAsync(seed: 7);
    public Task DisposeAsync() { _s.Dispose(); return Task.CompletedTask; }

    private int NonZeroChunks => _s.BaseRefs.Where(r => !r.IsZeroChunk).Select(r => r.Tag).Distinct().Count();

    [Fact]
    public async Task ListingFindsEveryBlobOfTheVersionWithoutKeys()
    {
        var blobs = await new Hoarder(_s.Cache, _s.Home).ListAsync(_s.Base, default);
        Assert.Equal([ChunkTag.Parse(_s.Base.DescriptorTag)], blobs.Sealed);
        Assert.Equal(NonZeroChunks, blobs.DiskChunks.Count);
        Assert.Empty(blobs.MemoryChunks);
        Assert.Single(blobs.Pages); // 41 chunks: the root is a leaf
        // Everything the home holds is exactly the version's blobs.
        var stored = new HashSet<ChunkTag>();
        await foreach (var t in _s.Home.ListAsync(default)) stored.Add(t);
        Assert.Equal(stored.OrderBy(t => t.ToString()), blobs.All.OrderBy(t => t.ToString()));
    }

    [Fact]
    public async Task AnInterruptedHoardResumesFetchingOnlyWhatIsMissing()
    {
        int total = 1 + 1 + NonZeroChunks; // descriptor, one page, chunks
        var failing = new CountingStore(_s.Home, failAfter: 12);
        await Assert.ThrowsAnyAsync<Exception>(() => new Hoarder(_s.Cache, failing, new HoardOptions { Concurrency = 4 }).HoardAsync("p", _s.Base, null, null, default));
        var everything = await new Hoarder(_s.Cache, _s.Home).ListAsync(_s.Base, default);
        int cachedAfterInterruption = everything.All.Count - (await _s.Cache.MissingAsync(everything.All, default)).Count;
        Assert.InRange(cachedAfterInterruption, 1, total - 1);

        var counting = new CountingStore(_s.Home);
        var result = await new Hoarder(_s.Cache, counting, new HoardOptions { Concurrency = 16 }).HoardAsync("p", _s.Base, null, null, default);
        Assert.Equal(total, result.Blobs);
        Assert.Equal(total - cachedAfterInterruption, result.Fetched);
        Assert.Equal(total - cachedAfterInterruption, counting.Gets);   // the cache was asked first: nothing fetched twice
        Assert.Equal(cachedAfterInterruption, result.AlreadyCached);
        Assert.Empty(await _s.Cache.MissingAsync(everything.All, default));

        var again = new CountingStore(_s.Home);
        var nothing = await new Hoarder(_s.Cache, again).HoardAsync("p", _s.Base, null, null, default);
        Assert.Equal(0, nothing.Fetched);
        Assert.Equal(0, again.Gets);
        Assert.Equal(total, nothing.AlreadyCached);

        // The home may now go away: the whole disk reads from the cache.
        await foreach (var tag in _s.Home.ListAsync(default)) await _s.Home.DeleteAsync(tag, default);
        using var disk = _s.OpenDisk();
        Assert.Equal(_s.Image, await disk.ReadAllAsync());
    }

    [Fact]
    public async Task BandwidthLimitPaysForEveryByteFetched()
    {
        var clock = new VirtualClock();
        const double rate = 100_000;
        const long burst = 50_000;
        var bucket = new TokenBucket(rate, burst, () => clock.Now, clock.Sleep);
        var progress = new List<HoardProgress>();
        var result = await new Hoarder(_s.Cache, _s.Home, new HoardOptions { Concurrency = 1, Limit = bucket })
            .HoardAsync("p", _s.Base, new SyncProgress<HoardProgress>(progress.Add), null, default);
        long onHome = 0, largest = 0;
        await foreach (var tag in _s.Home.ListAsync(default))
        {
            long length = (await _s.Home.GetAsync(tag, default))!.Length;
            onHome += length;
            largest = Math.Max(largest, length);
        }
        Assert.Equal(onHome, result.BytesFetched);
        Assert.Equal(result.BytesFetched, bucket.BytesConsumed);
        Assert.True(bucket.Waits > 0);
        // Virtual time moved only by the bucket's sleeps: the transfer took (bytes − burst) / rate, within one blob.
        double seconds = clock.Now.TotalSeconds;
        Assert.InRange(seconds, (bucket.BytesConsumed - burst - largest) / rate, (bucket.BytesConsumed - burst) / rate + bucket.Waits * 0.0011);
        Assert.Equal(progress[^1].BytesFetched, result.BytesFetched - (await new Hoarder(_s.Cache, _s.Home).ListAsync(_s.Base, default)).Pages.Sum(p => new FileInfo(_s.Home.PathOf(p)).Length));
        Assert.Equal(rate, result.RateLimitBytesPerSecond);
    }

    [Theory]
    [InlineData("10M", 10_000_000.0)]
    [InlineData("10MB/s", 10_000_000.0)]
    [InlineData("80Mbit", 10_000_000.0)]
    [InlineData("1.5Mi", 1_572_864.0)]
    [InlineData("500K", 500_000.0)]
    [InlineData("2048", 2048.0)]
    public void RatesAreBytesPerSecond(string text, double bytesPerSecond) => Assert.Equal(bytesPerSecond, TokenBucket.ParseRate(text));

    [Fact]
    public void ZeroOrOffMeansNoLimitAndNonsenseIsRefused()
    {
        Assert.Null(TokenBucket.ParseRate("0"));
        Assert.Null(TokenBucket.ParseRate("off"));
        Assert.Throws<ArgumentException>(() => TokenBucket.ParseRate("fast"));
        Assert.Throws<ArgumentException>(() => TokenBucket.ParseRate("10Q"));
    }

    [Fact]
    public async Task AFullCacheStopsWithAClearMessage()
    {
        var full = new CacheFullException("x");
        Assert.True(Isr.Client.Cache.CacheSpace.IsDiskFull(new IOException("No space left on device : '/x'", 28)));
        Assert.False(Isr.Client.Cache.CacheSpace.IsDiskFull(new IOException("Connection reset", 104)));
        Assert.True(Hoarder.FreeBytes(_s.Cache.Root) > 0);
        await Task.CompletedTask;
        Assert.IsAssignableFrom<IOException>(full);
    }
}

public sealed class PrefetchTests : IAsyncLifetime
{
    private DiskSetup _s = null!;
    public async Task InitializeAsync() => _s = await DiskSetup.CreateStandardAsync(seed: 11);
    public Task DisposeAsync() { _s.Dispose(); return Task.CompletedTask; }

    private static async IAsyncEnumerable<PrefetchItem> Concat(IAsyncEnumerable<PrefetchItem> a, IAsyncEnumerable<PrefetchItem> b,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        await foreach (var x in a.WithCancellation(ct)) yield return x;
        await foreach (var x in b.WithCancellation(ct)) yield return x;
    }

    private async ValueTask<byte[]> LoadPage(ChunkTag tag, CancellationToken ct) => (await _s.Home.GetAsync(tag, ct))!;

    [Fact]
    public async Task WorkingSetFirstThenTheRestInDiskOrderSkippingCachedZeroAndRepeatedChunks()
    {
        using var fetcher = new ChunkFetcher(_s.Cache, _s.Home);
        // Chunk 5 is cached already: skipped.
        await _s.Cache.PutAsync(_s.BaseRefs[5].Tag, (await _s.Home.GetAsync(_s.BaseRefs[5].Tag, default))!, default);
        var fetched = new List<long>();
        var byTag = _s.BaseRefs.Select((r, i) => (r, i)).Where(x => !x.r.IsZeroChunk).GroupBy(x => x.r.Tag).ToDictionary(g => g.Key, g => (long)g.First().i);
        var prefetcher = new Prefetcher(async (tag, ct) => { fetched.Add(byTag[tag]); return await fetcher.GetAsync(tag, ct); }, _s.Cache.Contains);
        long[] workingSet = [7, 2, 30, 2, 4, 15];
        var order = Concat(WorkingSet.ResolveAsync(workingSet, _s.Base, LoadPage, _s.Keys),
            Prefetcher.DiskOrder(async ct => (IReadOnlyList<ChunkRef>)_s.BaseRefs));
        await prefetcher.RunAsync(order, new PrefetchOptions { Concurrency = 1, YieldToDemand = false }, default);

        long[] zero = [3, 4, 10, 20];
        var rest = Enumerable.Range(0, 41).Select(i => (long)i).Where(i => !zero.Contains(i) && i is not (7 or 2 or 30 or 15 or 5));
        Assert.Equal([7, 2, 30, 15, .. rest], fetched);
        Assert.Equal(fetched.Count, prefetcher.Chunks);
        Assert.True(prefetcher.Fetched(7));
        Assert.False(prefetcher.Fetched(5));
        Assert.Equal(fetched.Sum(i => (long)new FileInfo(_s.Home.PathOf(_s.BaseRefs[i].Tag)).Length), prefetcher.Bytes);
        Assert.Equal(prefetcher.Bytes, fetcher.Counters.HomeBytes);
    }

    [Fact]
    public async Task PrefetchWaitsWhileTheGuestIsMissingChunks()
    {
        long demand = 0;
        int polls = 0;
        // Demand moves for the first 5 polls, then goes quiet: prefetch goes on only after that.
        Func<long> activity = () => Interlocked.Increment(ref polls) <= 5 ? Interlocked.Increment(ref demand) : Interlocked.Read(ref demand);
        var fetchedAtPoll = new List<int>();
        var prefetcher = new Prefetcher((tag, ct) => { fetchedAtPoll.Add(Volatile.Read(ref polls)); return ValueTask.FromResult<byte[]?>(new byte[10]); }, _ => false, activity);
        await prefetcher.RunAsync(Prefetcher.DiskOrder(async ct => (IReadOnlyList<ChunkRef>)_s.BaseRefs),
            new PrefetchOptions { Concurrency = 1, YieldToDemand = true, Quiet = TimeSpan.Zero }, default);
        Assert.Equal(37, prefetcher.Chunks); // 41 chunks, 4 of them zero
        Assert.All(fetchedAtPoll, p => Assert.True(p > 5));
    }

    [Fact]
    public async Task PrefetchNarrowsWhileTheGuestFetchesFromTheHome()
    {
        int running = 0, most = 0, guestFetches = 1;
        async ValueTask<byte[]?> Fetch(ChunkTag tag, CancellationToken ct)
        {
            int now = Interlocked.Increment(ref running);
            InterlockedMax(ref most, now);
            await Task.Yield();
            Interlocked.Decrement(ref running);
            return new byte[10];
        }
        var prefetcher = new Prefetcher(Fetch, _ => false, guestFetches: () => Volatile.Read(ref guestFetches));
        var options = new PrefetchOptions { Concurrency = 4, ConcurrencyWhileGuestFetches = 1, YieldToDemand = false, HoldBackAtMost = TimeSpan.FromHours(1) };
        await prefetcher.RunAsync(Prefetcher.DiskOrder(async ct => (IReadOnlyList<ChunkRef>)_s.BaseRefs), options, default);
        Assert.Equal(37, prefetcher.Chunks);
        Assert.Equal(1, most);

        // With the guest not fetching, the same run goes 4 wide: each fetch waits until 4 are in flight together.
        Volatile.Write(ref guestFetches, 0);
        var allIn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int inFlight = 0;
        var wide = new Prefetcher(async (tag, ct) =>
        {
            if (Interlocked.Increment(ref inFlight) == 4) allIn.TrySetResult();
            await allIn.Task.WaitAsync(TimeSpan.FromSeconds(30), ct);
            return new byte[10];
        }, _ => false, guestFetches: () => Volatile.Read(ref guestFetches));
        await wide.RunAsync(Prefetcher.DiskOrder(async ct => (IReadOnlyList<ChunkRef>)_s.BaseRefs), options, default);
        Assert.Equal(37, wide.Chunks);
    }

    private static void InterlockedMax(ref int target, int value)
    {
        for (int seen = Volatile.Read(ref target); value > seen; seen = Volatile.Read(ref target))
            if (Interlocked.CompareExchange(ref target, value, seen) == seen) return;
    }

    [Fact]
    public async Task FirstTouchesAreRecordedInOrderAndReplayedInThatOrder()
    {
        var recorder = new WorkingSetRecorder(41);
        using (var disk = _s.OpenDisk())
        {
            disk.ChunkRead = recorder.Touch;
            const int chunk = 16 << 10;
            await disk.ReadAsync(7L * chunk + 100, 10);
            await disk.ReadAsync(2L * chunk, chunk);
            await disk.ReadAsync(30L * chunk + 5, 3);
            await disk.ReadAsync(2L * chunk + 9, 100);            // again: not recorded twice
            await disk.ReadAsync(16L * chunk - 10, 20);          // spans 15 and 16
            await disk.WriteAsync(33L * chunk, new byte[chunk], fua: false, default); // a whole-chunk write reads nothing
            await disk.WriteAsync(34L * chunk + 1, new byte[5], fua: false, default); // a partial write reads the chunk
            await disk.ReadAsync(33L * chunk, 10);               // the guest's own write: nothing another site must fetch
            await disk.ReadAsync(40L * chunk, 10);
            Assert.True(_s.BaseRefs[20].IsZeroChunk);
            await disk.ReadAsync(20L * chunk, 10);               // a hole in the version: nothing to fetch either
        }
        long[] expected = [7, 2, 30, 15, 16, 34, 40];
        Assert.Equal(expected, recorder.Snapshot().Indices);
        Assert.All(recorder.Snapshot().TouchedMs!, ms => Assert.Equal(0, ms)); // no clock yet: the guest has not run
        Assert.Equal(expected.Length, recorder.Touched);

        var (tag, blob) = WorkingSet.Seal(recorder.Snapshot(), _s.Keys, "parcel-under-test");
        Assert.Equal(tag, ChunkTag.Of(blob));
        var opened = WorkingSet.Open(blob, _s.Keys, "parcel-under-test");
        Assert.Equal(expected, opened.Indices);
        Assert.ThrowsAny<Exception>(() => WorkingSet.Open(blob, _s.Keys, "another-parcel"));
        Assert.ThrowsAny<Exception>(() => WorkingSet.Open(blob, ParcelKeys.Generate(), "parcel-under-test"));

        // Replay at the next resume (at another site: an empty cache): exactly the recorded order, fetched ahead of the guest.
        var otherCache = new DirectoryChunkStore(_s.Dir["site-b/cache"], durable: false);
        using var fetcher = new ChunkFetcher(otherCache, _s.Home);
        var replayed = new List<ChunkTag>();
        var prefetcher = new Prefetcher(async (t, ct) => { replayed.Add(t); return await fetcher.GetAsync(t, ct); }, otherCache.Contains);
        await prefetcher.RunAsync(WorkingSet.ResolveAsync(opened.Indices, _s.Base, LoadPage, _s.Keys), new PrefetchOptions { Concurrency = 1, YieldToDemand = false }, default);
        Assert.Equal(expected.Select(i => _s.BaseRefs[i].Tag), replayed);

        // Prefetch hits: the guest's first reads of prefetched chunks.
        var next = new WorkingSetRecorder(41);
        long hits = 0;
        next.FirstTouch = i => { if (prefetcher.Fetched(i)) hits++; };
        using (var disk = _s.OpenDisk(journalPath: _s.Dir["site-b/dirty.journal"], cache: otherCache))
        {
            disk.ChunkRead = next.Touch;
            await disk.ReadAsync(7L * (16 << 10), 1);
            await disk.ReadAsync(8L * (16 << 10), 1);
            await disk.ReadAsync(40L * (16 << 10), 1);
        }
        Assert.Equal(2, hits);
    }

    [Fact]
    public void LongAndBackwardWorkingSetsRoundTripWithTheirTimes()
    {
        var indices = Enumerable.Range(0, 5000).Select(i => (long)((i * 7919L) % 100_003)).Append(0).Append(long.MaxValue / 4).ToList();
        var times = Enumerable.Range(0, indices.Count).Select(i => i * 37 + (i % 3 == 0 ? 100_000 : 0)).ToList();
        var (_, blob) = WorkingSet.Seal(new WorkingSetOrder(indices, times), _s.Keys, "p");
        var opened = WorkingSet.Open(blob, _s.Keys, "p");
        Assert.Equal(indices, opened.Indices);
        // Sealed non-decreasing: a time below an earlier one is raised to it.
        var monotone = new List<int>();
        foreach (var t in times) monotone.Add(Math.Max(t, monotone.Count > 0 ? monotone[^1] : 0));
        Assert.Equal(monotone, opened.TouchedMs);
        var (_, empty) = WorkingSet.Seal(new WorkingSetOrder([], []), _s.Keys, "p");
        Assert.Empty(WorkingSet.Open(empty, _s.Keys, "p").Indices);
        Assert.Throws<ArgumentException>(() => WorkingSet.Seal(new WorkingSetOrder([1, 2], null), _s.Keys, "p"));
    }

    [Fact]
    public void A_format_1_working_set_opens_without_times()
    {
        // "ISRW" ‖ 1 ‖ count 3 ‖ zigzag deltas of 5, 3, 9: +5, −2, +6.
        byte[] body = [.. "ISRW"u8, 1, 3, 0, 0, 0, 10, 3, 12];
        var blob = SealedBox.Seal(_s.Keys.MetadataKey, body, "isr working set v1", System.Text.Encoding.UTF8.GetBytes("p"));
        var opened = WorkingSet.Open(blob, _s.Keys, "p");
        Assert.Equal([5L, 3, 9], opened.Indices);
        Assert.Null(opened.TouchedMs);
        byte[] truncated = [.. "ISRW"u8, 2, 2, 0, 0, 0, 10, 4, 3];
        Assert.Throws<MalformedDataException>(() => WorkingSet.Open(
            SealedBox.Seal(_s.Keys.MetadataKey, truncated, "isr working set v1", System.Text.Encoding.UTF8.GetBytes("p")), _s.Keys, "p"));
    }

    [Fact]
    public void The_recorder_stamps_first_touches_with_the_guest_time_it_is_given()
    {
        var recorder = new WorkingSetRecorder(100);
        recorder.Touch(9);
        var now = TimeSpan.Zero;
        recorder.StartClock(() => now);
        now = TimeSpan.FromMilliseconds(250);
        recorder.Touch(4);
        recorder.Touch(9);                                   // seen before: not again
        now = TimeSpan.FromMilliseconds(1750.6);
        recorder.Touch(60);
        now = TimeSpan.FromMilliseconds(1000);               // a clock that steps back does not reorder the record
        recorder.Touch(61);
        var order = recorder.Snapshot();
        Assert.Equal([9L, 4, 60, 61], order.Indices);
        Assert.Equal([0, 250, 1750, 1750], order.TouchedMs);
    }

    [Theory]
    // Due at once: all of them go before cont.
    [InlineData(new[] { 0.0, 0.0, 0.0 }, 1.0, 3)]
    // One chunk a second on the link, needed at 1, 2, 3 s: the replay keeps up, no head.
    [InlineData(new[] { 1.0, 2.0, 3.0 }, 1.0, 0)]
    // Needed twice as fast as the link brings them: half of them ahead.
    [InlineData(new[] { 0.5, 1.0, 1.5, 2.0 }, 1.0, 2)]
    // A burst at 2 s: 5 chunks needed by then, 2 can come after cont.
    [InlineData(new[] { 0.1, 2.0, 2.0, 2.0, 2.0, 9.0 }, 1.0, 3)]
    // The same burst on a link four times as fast: only the first chunk, needed before its quarter second on the link.
    [InlineData(new[] { 0.1, 2.0, 2.0, 2.0, 2.0, 9.0 }, 4.0, 1)]
    public void The_head_is_what_the_replay_from_cont_could_not_bring_in_time(double[] due, double chunksPerSecond, int expected)
    {
        Assert.Equal(expected, WorkingSetHead.Chunks(due, chunkBytes: 1000, bytesPerSecond: chunksPerSecond * 1000));
        Assert.Equal(0, WorkingSetHead.Chunks([], 1000, 1000));
    }
}

public sealed class WorkingSetVersionTests : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task TheWorkingSetTagIsSignedAndMustBeStoredForACommit()
    {
        var home = new DirectoryParcelHome(_dir["store"]);
        var secrets = UserSecrets.Generate();
        var keys = ParcelKeys.Generate();
        var codec = new ChunkCodec(secrets.DomainSecret);
        string id = "id-ws";
        var (version, _) = await Versions.BuildAsync(TestData.Random(10 * 8192, 3), 8192, codec, keys, home.Chunks, parcelId: id);
        var first = (version with { CommitId = Guid.NewGuid().ToString("N") }).Sign(keys);
        Assert.DoesNotContain("workingSetTag", System.Text.Encoding.UTF8.GetString(first.ToJson())); // absent when there is none
        var info = new ParcelInfo("ws", id, 8192, 10 * 8192, secrets.WrapParcelKey(keys, id), DateTimeOffset.UtcNow);
        var created = await home.CreateParcelAsync(info, first, default);

        var (tag, blob) = WorkingSet.Seal(new WorkingSetOrder([3, 1, 4], [0, 10, 20]), keys, id);
        var child = (created with { CommitId = Guid.NewGuid().ToString("N"), ParentMac = created.Mac, WorkingSetTag = tag.ToString() }).Sign(keys);
        child.Verify(keys, id);
        Assert.Throws<MalformedDataException>(() => (child with { WorkingSetTag = null }).Verify(keys, id));          // stripped
        Assert.Throws<MalformedDataException>(() => (child with { WorkingSetTag = first.DescriptorTag }).Verify(keys, id)); // swapped
        Assert.Contains(tag, child.RootTags());
        Assert.Contains(tag, child.SealedTags());
        Assert.DoesNotContain(tag, child.TreeRootTags());
        Assert.Equal(child, VersionRecord.FromJson(child.ToJson()));

        await Assert.ThrowsAsync<CommitConflictException>(async () => await home.CommitAsync("ws", child, default)); // blob not stored
        await home.Chunks.PutAsync(tag, blob, default);
        var committed = await home.CommitAsync("ws", child, default); // stored: accepted, and not walked as a keyring page
        Assert.Equal(tag.ToString(), committed.WorkingSetTag);
        (await home.ListVersionsAsync("ws", default))[^1].Verify(keys, id);
    }
}

public sealed class TrickleTests : IAsyncLifetime
{
    private DiskSetup _s = null!;
    private const int Chunk = 16 << 10;
    public async Task InitializeAsync() => _s = await DiskSetup.CreateStandardAsync(seed: 21);
    public Task DisposeAsync() { _s.Dispose(); return Task.CompletedTask; }

    [Fact]
    public async Task TrickledChunksAreNotUploadedAgainAtCheckin()
    {
        using var disk = _s.OpenDisk();
        for (int i = 0; i < 10; i++) await disk.WriteAsync((long)i * Chunk, TestData.Random(Chunk, 100 + i), fua: false, default);
        await disk.FlushAsync(default);
        var bucket = new TokenBucket(1e9);
        var trickle = new Trickle(() => disk.FlushedChanges.Values, _s.Cache, _s.Home, bucket) { Settle = TimeSpan.Zero };
        var (sent, sentBytes) = await trickle.RunOnceAsync(default);
        Assert.Equal(10, sent);
        Assert.Equal(sentBytes, trickle.Bytes);
        Assert.Equal(sentBytes, bucket.BytesConsumed);
        Assert.Equal((0, 0L), await trickle.RunOnceAsync(default)); // nothing new: nothing sent

        for (int i = 20; i < 25; i++) await disk.WriteAsync((long)i * Chunk, TestData.Random(Chunk, 200 + i), fua: false, default);
        await disk.FlushAsync(default);
        var dirty = disk.FlushedChanges.Values.Where(c => !c.IsZeroChunk).Select(c => c.Tag).ToList();
        Assert.Equal(15, dirty.Count);
        long allBytes = dirty.Sum(t => new FileInfo(_s.Cache.PathOf(t)).Length);

        // The check-in asks the home which blobs it lacks: only those written since the trickle go.
        var (count, bytes) = await Uploader.UploadMissingAsync(_s.Cache, _s.Home, dirty, null, default);
        Assert.Equal(5, count);
        Assert.Equal(allBytes - sentBytes, bytes);
        Assert.True(bytes < allBytes);
        Assert.Empty(await _s.Home.MissingAsync(dirty, default));
    }

    [Fact]
    public async Task AChunkIsSentOnlyOnceItHasSettled()
    {
        using var disk = _s.OpenDisk();
        await disk.WriteAsync(0, TestData.Random(Chunk, 1), fua: true, default);
        var trickle = new Trickle(() => disk.FlushedChanges.Values, _s.Cache, _s.Home) { Settle = TimeSpan.FromSeconds(10) };
        var t0 = DateTimeOffset.UnixEpoch;
        Assert.Equal(0, (await trickle.RunOnceAsync(default, t0)).Chunks);
        await disk.WriteAsync(0, TestData.Random(Chunk, 2), fua: true, default);                 // rewritten: a new blob, its clock starts again
        Assert.Equal(0, (await trickle.RunOnceAsync(default, t0 + TimeSpan.FromSeconds(6))).Chunks);
        Assert.Equal(0, (await trickle.RunOnceAsync(default, t0 + TimeSpan.FromSeconds(12))).Chunks);
        Assert.Equal(1, (await trickle.RunOnceAsync(default, t0 + TimeSpan.FromSeconds(17))).Chunks);
        Assert.Equal(1, trickle.Chunks);
        Assert.Empty(await _s.Home.MissingAsync([disk.FlushedChanges[0].Tag], default));
    }
}
