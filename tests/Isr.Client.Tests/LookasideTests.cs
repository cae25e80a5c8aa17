using Isr.Client.Cache;
using Isr.Client.Lookaside;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Tests;

public sealed class LookasideTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly DirectoryChunkStore _home;
    private readonly DirectoryChunkStore _cache;
    private readonly CountingStore _countedHome;

    public LookasideTests()
    {
        _home = new DirectoryChunkStore(_dir["home"], durable: false);
        _cache = new DirectoryChunkStore(_dir["cache"], durable: false);
        _countedHome = new CountingStore(_home);
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>A source whose answer the test decides; counts how often it was asked.</summary>
    private sealed class FakeSource(string name, Func<ChunkTag, CancellationToken, Task<byte[]?>> answer) : ILookasideSource
    {
        public int Asked;
        public string Name => name;
        public async ValueTask<byte[]?> TryGetAsync(ChunkTag tag, CancellationToken ct) { Interlocked.Increment(ref Asked); return await answer(tag, ct); }
        public void Dispose() { }
    }

    private sealed class CountingStore(IChunkStore inner) : IChunkStore
    {
        public int Gets;
        public ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct) { Interlocked.Increment(ref Gets); return inner.GetAsync(tag, ct); }
        public ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct) => inner.PutAsync(tag, blob, ct);
        public ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct) => inner.MissingAsync(tags, ct);
        public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct) => inner.DeleteAsync(tag, ct);
        public IAsyncEnumerable<ChunkTag> ListAsync(CancellationToken ct) => inner.ListAsync(ct);
    }

    private async Task<(ChunkTag Tag, byte[] Blob)> StoreAtHome(int seed)
    {
        var blob = TestData.Random(4000, seed);
        var tag = ChunkTag.Of(blob);
        await _home.PutAsync(tag, blob, default);
        return (tag, blob);
    }

    [Fact]
    public void A_site_with_a_media_index_still_takes_sources_in_its_list()
    {
        var site = new Isr.Client.Site.SiteDirectory(_dir["site"]);
        var index = MediaIndex.SitePath(site, _dir["media"]);
        Isr.Client.Durable.WriteFileAtomically(index, [1, 2, 3]);
        LookasideSources.Configure(site, ["http://jukebox:8480", _dir["media"]]);
        Assert.Equal(["http://jukebox:8480", _dir["media"]], LookasideSources.Configured(site));
        Assert.Equal([1, 2, 3], File.ReadAllBytes(index));
    }

    [Fact]
    public async Task Order_is_cache_then_sources_in_order_then_home()
    {
        var (a, blobA) = await StoreAtHome(1);
        var (b, blobB) = await StoreAtHome(2);
        var (c, blobC) = await StoreAtHome(3);
        var first = new FakeSource("first", (t, _) => Task.FromResult(t == a ? blobA : null));
        var second = new FakeSource("second", (t, _) => Task.FromResult(t == a || t == b ? (t == a ? blobA : blobB) : null));
        using var chain = new LookasideChain([first, second]);
        using var fetcher = new ChunkFetcher(_cache, _countedHome, lookaside: chain);

        Assert.Equal(blobA, await fetcher.GetAsync(a, default));
        Assert.Equal((1, 0), (first.Asked, second.Asked)); // the first source had it
        Assert.Equal(blobB, await fetcher.GetAsync(b, default));
        Assert.Equal((2, 1), (first.Asked, second.Asked));
        Assert.Equal(blobC, await fetcher.GetAsync(c, default));
        Assert.Equal(1, _countedHome.Gets); // only c came from the home
        for (int i = 0; i < 500 && !_cache.Contains(a); i++) await Task.Delay(10); // kept behind the caller's back
        Assert.Equal(blobA, await fetcher.GetAsync(a, default)); // now cached: no source asked
        Assert.Equal((3, 2), (first.Asked, second.Asked));

        Assert.Equal(2, fetcher.Counters.LookasideHits);
        Assert.Equal(blobA.Length + blobB.Length, fetcher.Counters.LookasideBytes);
        Assert.Equal(1, fetcher.Counters.HomeFetches);
        var stats = chain.Stats.ToDictionary(s => s.Source);
        Assert.Equal((1L, (long)blobA.Length, 2L), (stats["first"].Hits, stats["first"].Bytes, stats["first"].Misses));
        Assert.Equal((1L, (long)blobB.Length, 1L), (stats["second"].Hits, stats["second"].Bytes, stats["second"].Misses));
    }

    [Fact]
    public async Task A_blob_read_once_from_a_source_is_not_cached_and_one_from_the_home_is()
    {
        var (a, blobA) = await StoreAtHome(1);
        var (b, blobB) = await StoreAtHome(2);
        var source = new FakeSource("dongle", (t, _) => Task.FromResult(t == a ? blobA : null));
        using var chain = new LookasideChain([source]);
        using var fetcher = new ChunkFetcher(_cache, _countedHome, lookaside: chain);

        Assert.Equal(blobA, await fetcher.GetOnceAsync(a, default));
        Assert.Equal(blobB, await fetcher.GetOnceAsync(b, default));
        Assert.True(_cache.Contains(b)); // from the home: kept
        Assert.Equal(blobA, await fetcher.GetOnceAsync(a, default));
        Assert.Equal(3, source.Asked); // a, b (a miss), and a again: its first copy was not kept
        Assert.False(_cache.Contains(a));
    }

    [Fact]
    public async Task A_wrong_blob_from_a_source_is_never_used()
    {
        var (tag, blob) = await StoreAtHome(1);
        var tampered = (byte[])blob.Clone();
        tampered[100] ^= 1;
        var liar = new FakeSource("liar", (_, _) => Task.FromResult<byte[]?>(tampered));
        using var chain = new LookasideChain([liar]);
        using var fetcher = new ChunkFetcher(_cache, _countedHome, lookaside: chain);

        Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.Equal(blob, await _cache.GetAsync(tag, default)); // the cache got the home's copy
        Assert.Equal(1, _countedHome.Gets);
        Assert.Equal(0, fetcher.Counters.LookasideHits);
        Assert.Equal(1, chain.Stats[0].Rejected);
    }

    [Fact]
    public async Task A_hanging_or_failing_source_is_cut_off_and_skipped()
    {
        var tags = new List<(ChunkTag Tag, byte[] Blob)>();
        for (int i = 0; i < 8; i++) tags.Add(await StoreAtHome(10 + i));
        var hanging = new FakeSource("hanging", async (_, ct) => { await Task.Delay(Timeout.Infinite, ct); return null; });
        var failing = new FakeSource("failing", (_, _) => throw new IOException("medium removed"));
        var options = new LookasideOptions { Timeout = TimeSpan.FromMilliseconds(20), FailuresToCutOff = 3, CutOffFor = TimeSpan.FromHours(1) };
        using var chain = new LookasideChain([hanging, failing], options);
        using var fetcher = new ChunkFetcher(_cache, _countedHome, lookaside: chain);

        foreach (var (tag, blob) in tags) Assert.Equal(blob, await fetcher.GetAsync(tag, default));
        Assert.Equal(3, hanging.Asked); // then cut off: the other five were not sent to it
        Assert.Equal(3, failing.Asked);
        Assert.All(chain.Stats, s => Assert.Equal((3L, 5L, true), (s.Failures, s.Skipped, s.CutOff)));
        // The time asked counts each wait for a timeout in full: three of at least 20 ms for the hanging source.
        Assert.InRange(chain.Stats[0].Seconds, 3 * 0.019, 3600);
        Assert.Equal(8, _countedHome.Gets);
    }

    [Fact]
    public async Task A_cut_off_source_is_probed_again_after_its_cut_off()
    {
        var (a, blobA) = await StoreAtHome(1);
        var (b, blobB) = await StoreAtHome(2);
        bool broken = true;
        var flaky = new FakeSource("flaky", (t, _) => broken ? throw new IOException("down") : Task.FromResult<byte[]?>(t == b ? blobB : null));
        using var chain = new LookasideChain([flaky], new LookasideOptions { FailuresToCutOff = 1, CutOffFor = TimeSpan.Zero });
        Assert.Null(await chain.TryGetAsync(a, default));
        Assert.True(chain.Stats[0].Failures == 1);
        broken = false;
        var hit = await chain.TryGetAsync(b, default);
        Assert.Equal(blobB, hit?.Blob);
        Assert.Equal("flaky", hit?.Source);
    }

    private static async Task<(VersionRecord V1, VersionRecord V2, ChunkRef[] Refs1, ChunkRef[] Refs2)> TwoVersionsAsync(IChunkStore home, ChunkCodec codec, ParcelKeys keys)
    {
        const int chunkSize = 16 << 10;
        var image = TestData.Random(24 * chunkSize, 7);
        var (v1, refs1) = await Versions.BuildAsync(image, chunkSize, codec, keys, home);
        TestData.Random(chunkSize, 8).CopyTo(image, 5 * chunkSize);
        TestData.Random(chunkSize, 9).CopyTo(image, 17 * chunkSize);
        var (v2, refs2) = await Versions.BuildAsync(image, chunkSize, codec, keys, home, number: 2);
        return (v1, v2, refs1, refs2);
    }

    [Fact]
    public async Task Dongle_write_is_incremental_and_holds_what_the_next_resume_needs()
    {
        var keys = ParcelKeys.Generate();
        var codec = new ChunkCodec(TestData.Random(32, 5));
        var (v1, v2, refs1, refs2) = await TwoVersionsAsync(_home, codec, keys);
        var hoarder = new Hoarder(_cache, _countedHome);
        Task<byte[]> Get(ChunkTag t, CancellationToken ct) => hoarder.FetchAsync(t, ct);
        var path = _dir["dongle"];

        var first = await Dongle.Open(path, create: true).WriteAsync("box", "pid", v1, null, hoarder, Get, null, default);
        Assert.Equal(first.Blobs, first.Written);
        Assert.Contains(refs1[5].Tag, Dongle.Open(path).ReadIndex());
        var again = await Dongle.Open(path).WriteAsync("box", "pid", v1, null, hoarder, Get, null, default);
        Assert.Equal((0, first.Blobs), (again.Written, again.AlreadyThere));

        // The next version: only what is new is written (its two changed chunks, new pages); unchanged chunks are not listed.
        var all1 = (await hoarder.ListAsync(v1, default)).All.ToHashSet();
        var blobs2 = await hoarder.ListAsync(v2, default);
        var second = await Dongle.Open(path).WriteAsync("box", "pid", v2, v1, hoarder, Get, null, default);
        Assert.Equal(blobs2.Sealed.Concat(blobs2.Pages).Count(t => !all1.Contains(t)) + 2, second.Written);
        var index = Dongle.Open(path).ReadIndex();
        Assert.Contains(refs2[5].Tag, index);
        Assert.Contains(refs2[17].Tag, index);
        Assert.Single(Dongle.Open(path).Parcels);
        Assert.Equal(v2.CommitId, Dongle.Open(path).Parcels[0].CommitId);

        // As a source: hits for what it holds, "don't have" for the rest without reading the medium.
        using var source = new DongleSource(Dongle.Open(path));
        Assert.Equal(await _home.GetAsync(refs2[5].Tag, default), await source.TryGetAsync(refs2[5].Tag, default));
        Assert.Null(await source.TryGetAsync(ChunkTag.Of(TestData.Random(100, 1)), default));
    }

    [Fact]
    public void Dongle_refuses_a_directory_that_is_not_one()
    {
        Directory.CreateDirectory(_dir["photos"]);
        File.WriteAllText(_dir["photos/a.jpg"], "x");
        Assert.Throws<InvalidDataException>(() => Dongle.Open(_dir["photos"], create: true));
        Assert.Throws<InvalidDataException>(() => Dongle.Open(_dir["nothing"]));
    }

    [Fact]
    public async Task A_corrupted_dongle_blob_is_rejected_and_fetched_from_home()
    {
        var keys = ParcelKeys.Generate();
        var codec = new ChunkCodec(TestData.Random(32, 5));
        var (v1, _, refs1, _) = await TwoVersionsAsync(_home, codec, keys);
        var hoarder = new Hoarder(_cache, _home);
        var dongle = Dongle.Open(_dir["dongle"], create: true);
        await dongle.WriteAsync("box", "pid", v1, null, hoarder, (t, ct) => hoarder.FetchAsync(t, ct), null, default);
        var file = dongle.Chunks.PathOf(refs1[3].Tag);
        var bytes = File.ReadAllBytes(file);
        bytes[^1] ^= 0xff;
        File.WriteAllBytes(file, bytes);

        using var chain = new LookasideChain([new DongleSource(dongle)]);
        using var fetcher = new ChunkFetcher(new DirectoryChunkStore(_dir["cache2"], durable: false), _countedHome, lookaside: chain);
        Assert.Equal(await _home.GetAsync(refs1[3].Tag, default), await fetcher.GetAsync(refs1[3].Tag, default));
        Assert.Equal(await _home.GetAsync(refs1[4].Tag, default), await fetcher.GetAsync(refs1[4].Tag, default));
        Assert.Equal((1L, 1L), (chain.Stats[0].Rejected, chain.Stats[0].Hits));
        Assert.Equal(1, _countedHome.Gets);
    }

    [Fact]
    public async Task Media_index_serves_the_users_blobs_encrypted_on_the_fly_and_opens_only_for_that_user()
    {
        const int chunkSize = 16 << 10;
        var image = TestData.Random(12 * chunkSize + 1000, 3);
        Array.Clear(image, 4 * chunkSize, chunkSize);
        File.WriteAllBytes(_dir["base.img"], image);
        var alice = UserSecrets.Generate();
        var codec = new ChunkCodec(alice.DomainSecret);
        var (_, refs) = await Versions.BuildAsync(image, chunkSize, codec, ParcelKeys.Generate(), _home);

        var sealedIndex = (await MediaIndex.BuildAsync(_dir["base.img"], chunkSize, codec, null, default)).Seal(alice);
        var index = MediaIndex.Open(sealedIndex, alice);
        Assert.Equal(12, index.Chunks.Count); // 13 chunks, one of them all zero
        using var media = new MediaSource(_dir["base.img"], index, codec);
        foreach (var r in refs.Where(r => !r.IsZeroChunk))
            Assert.Equal(await _home.GetAsync(r.Tag, default), await media.TryGetAsync(r.Tag, default));

        // Another user can neither open alice's index nor match her tags with one of their own.
        var bob = UserSecrets.Generate();
        Assert.Throws<MalformedDataException>(() => MediaIndex.Open(sealedIndex, bob));
        var bobs = await MediaIndex.BuildAsync(_dir["base.img"], chunkSize, new ChunkCodec(bob.DomainSecret), null, default);
        Assert.DoesNotContain(refs, r => bobs.Chunks.ContainsKey(r.Tag));
    }
}
