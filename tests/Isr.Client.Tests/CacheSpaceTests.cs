using Isr.Client.Cache;
using Isr.Client.Disk;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Storage;
using Isr.Testing;

namespace Isr.Client.Tests;

/// <summary>The site cache's limit and full disks: only blobs the home holds are evicted, oldest access first; what
/// exists only at the site is never evicted and is refused only by a full disk, with a message naming the path.</summary>
public sealed class CacheSpaceTests : IDisposable
{
    private const int BlobSize = 64 * 1024;
    private readonly TempDir _dir = new();
    private readonly DirectoryChunkStore _home;

    public CacheSpaceTests() => _home = new DirectoryChunkStore(_dir["home"]);

    private static (ChunkTag Tag, byte[] Blob) Blob(int seed)
    {
        var blob = TestData.Random(BlobSize, seed);
        return (ChunkTag.Of(blob), blob);
    }

    private static (DirectoryChunkStore Cache, CacheSpace Space) Cache(string root, long? limit)
    {
        var cache = new DirectoryChunkStore(root, durable: false);
        return (cache, new CacheSpace(cache, new DirectoryChunkStore(root, durable: true), limit));
    }

    [Fact]
    public async Task Limit_evicts_the_least_recently_accessed_clean_blobs_and_never_those_the_home_lacks()
    {
        var (cache, space) = Cache(_dir["cache"], limit: 5L * BlobSize);
        var blobs = Enumerable.Range(0, 5).Select(Blob).ToArray();
        var epoch = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        for (int i = 0; i < blobs.Length; i++)
        {
            var (tag, blob) = blobs[i];
            bool clean = i is 1 or 2 or 4; // 0 and 3 exist only here (dirty)
            if (clean) { await _home.PutAsync(tag, blob, default); await space.PutCleanAsync(tag, blob, _home, default); }
            else await space.PutDirtyAsync(tag, blob, _home, "test", "", default);
            File.SetLastAccessTimeUtc(cache.PathOf(tag), epoch.AddHours(i)); // 0 is the oldest
        }
        var (newTag, newBlob) = Blob(99);
        await _home.PutAsync(newTag, newBlob, default);
        await space.PutCleanAsync(newTag, newBlob, _home, default);

        // Over the limit by one blob, evicted down to 90 %: the two oldest clean blobs (1, 2) go; dirty 0 (oldest) and 3 stay.
        Assert.Equal([true, false, false, true, true], blobs.Select(b => cache.Contains(b.Tag)).ToArray());
        Assert.True(cache.Contains(newTag));
        Assert.Equal(4L * BlobSize, space.UsedBytes);
    }

    [Fact]
    public async Task A_fetched_blob_is_refused_when_only_blobs_the_home_lacks_fill_the_limit_and_a_dirty_one_still_goes_in()
    {
        var (cache, space) = Cache(_dir["cache"], limit: 2L * BlobSize);
        foreach (var (tag, blob) in new[] { Blob(1), Blob(2) }) await space.PutDirtyAsync(tag, blob, _home, "test", "", default);
        var (fetchedTag, fetched) = Blob(3);
        await _home.PutAsync(fetchedTag, fetched, default);

        var refused = await Assert.ThrowsAsync<CacheFullException>(() => space.PutCleanAsync(fetchedTag, fetched, _home, default).AsTask());
        Assert.Contains(cache.Root, refused.Message);
        Assert.Contains("limit", refused.Message);
        Assert.False(cache.Contains(fetchedTag));

        var (dirtyTag, dirty) = Blob(4);
        await space.PutDirtyAsync(dirtyTag, dirty, _home, "test", "", default); // changes are never refused for the limit
        Assert.True(cache.Contains(dirtyTag));
    }

    [Fact]
    public async Task A_fetcher_serves_a_verified_blob_uncached_when_the_cache_is_full_of_changes()
    {
        var (cache, space) = Cache(_dir["cache"], limit: 2L * BlobSize);
        foreach (var (tag, blob) in new[] { Blob(1), Blob(2) }) await space.PutDirtyAsync(tag, blob, _home, "test", "", default);
        var (fetchedTag, fetched) = Blob(3);
        await _home.PutAsync(fetchedTag, fetched, default);
        using var fetcher = new ChunkFetcher(cache, _home, space: space);
        Assert.Equal(fetched, await fetcher.GetAsync(fetchedTag, default));
        Assert.False(cache.Contains(fetchedTag));
    }

    [Fact]
    public void Sizes_parse_in_binary_units()
    {
        Assert.Equal(1048576, Site.SiteConfig.ParseSize("1048576"));
        Assert.Equal(512L << 20, Site.SiteConfig.ParseSize("512M"));
        Assert.Equal(20L << 30, Site.SiteConfig.ParseSize("20GiB"));
        Assert.Throws<FormatException>(() => Site.SiteConfig.ParseSize("lots"));
    }

    [Fact]
    public void Background_hoard_settings_come_from_the_site_config_with_defaults()
    {
        Assert.Equal((null, TimeSpan.FromSeconds(30)), (Site.SiteConfig.Load(_dir.Path).HoardBytesPerSecond, Site.SiteConfig.Load(_dir.Path).HoardPoll));
        File.WriteAllText(Path.Combine(_dir.Path, "config.json"), """{"hoardBwlimit": "2M", "hoardPollSeconds": 5}""");
        var config = Site.SiteConfig.Load(_dir.Path);
        Assert.Equal((2e6, TimeSpan.FromSeconds(5)), (config.HoardBytesPerSecond, config.HoardPoll));
    }

    [Fact]
    public async Task On_a_full_file_system_clean_blobs_make_room_and_then_a_dirty_write_fails_naming_the_path_keeping_every_blob()
    {
        using var fs = new SmallFileSystem(1L << 20);
        var (cache, space) = Cache(Path.Combine(fs.Path, "cache"), limit: null);
        var clean = new List<ChunkTag>();
        for (int seed = 0; seed < 8; seed++) // half the file system: blobs the home holds
        {
            var (tag, blob) = Blob(seed);
            await _home.PutAsync(tag, blob, default);
            await space.PutCleanAsync(tag, blob, _home, default);
            clean.Add(tag);
        }
        var dirty = new List<(ChunkTag Tag, byte[] Blob)>();
        SiteDiskFullException? full = null;
        for (int seed = 1000; full is null; seed++)
        {
            var (tag, blob) = Blob(seed);
            try { await space.PutDirtyAsync(tag, blob, _home, "writing test changes", "Kept: every earlier change.", default); dirty.Add((tag, blob)); }
            catch (SiteDiskFullException e) { full = e; }
            Assert.True(seed < 1064, "dirty writes never filled a 1 MiB file system");
        }
        Assert.Contains(cache.Root, full.Message);
        Assert.Contains("writing test changes", full.Message);
        Assert.Contains("Kept: every earlier change.", full.Message);
        Assert.True(dirty.Count > 8, $"only {dirty.Count} changes fitted: the clean blobs did not make room");
        Assert.All(clean, tag => Assert.False(cache.Contains(tag))); // every clean blob made room before the refusal
        foreach (var (tag, blob) in dirty) Assert.Equal(blob, await cache.GetAsync(tag, default));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(cache.Root, "incoming"))); // no partial blob left behind
    }

    [Fact]
    public void A_journal_append_that_hits_a_full_disk_is_cut_off_so_later_flushes_survive_replay()
    {
        using var fs = new SmallFileSystem(256 * 1024);
        var keys = ParcelKeys.Generate();
        var path = Path.Combine(fs.Path, "dirty.journal");
        ChunkRef Chunk(int seed) { var b = TestData.Random(64, seed); return new ChunkRef(ChunkTag.Of(b), new ChunkKey(Hash32.Sha256(b)), 4096); }
        var many = Enumerable.Range(0, 200).Select(i => new KeyValuePair<long, ChunkRef>(100 + i, Chunk(100 + i))).ToList();
        using (var journal = DirtyJournal.Open(path, 1, keys))
        {
            journal.Append([new(0, Chunk(0))]);
            var filler = fs.Fill(leave: 2048);
            Assert.Throws<SiteDiskFullException>(() => journal.Append(many)); // ~23 KB: does not fit, partly written
            File.Delete(filler);
            journal.Append([new(1, Chunk(1))]);
        }
        using var reopened = DirtyJournal.Open(path, 1, keys);
        Assert.Equal(new Dictionary<long, ChunkRef> { [0] = Chunk(0), [1] = Chunk(1) }, reopened.Replayed);
    }

    public void Dispose() => _dir.Dispose();
}
