using Isr.Format;
using Isr.Storage;

namespace Isr.Storage.Tests;

public sealed class DirectoryChunkStoreTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "isr-store-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static byte[] Blob(int seed, int length = 1000)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    private static async Task<List<ChunkTag>> List(IChunkStore store)
    {
        var tags = new List<ChunkTag>();
        await foreach (var tag in store.ListAsync(default)) tags.Add(tag);
        return tags;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task PutThenGet(bool durable)
    {
        var store = new DirectoryChunkStore(_dir, durable);
        var blob = Blob(1);
        var tag = ChunkTag.Of(blob);
        Assert.False(store.Contains(tag));
        await store.PutAsync(tag, blob, default);
        Assert.True(store.Contains(tag));
        Assert.Equal(blob, await store.GetAsync(tag, default));
    }

    [Fact]
    public async Task EmptyBlobIsStored()
    {
        var store = new DirectoryChunkStore(_dir);
        var tag = ChunkTag.Of([]);
        await store.PutAsync(tag, Array.Empty<byte>(), default);
        var got = await store.GetAsync(tag, default);
        Assert.NotNull(got);
        Assert.Empty(got);
    }

    [Fact]
    public async Task GetOfMissingBlobIsNull()
    {
        var store = new DirectoryChunkStore(_dir);
        Assert.Null(await store.GetAsync(ChunkTag.Of(Blob(2)), default));
        await store.PutAsync(ChunkTag.Of(Blob(3)), Blob(3), default);
        // A sibling in the same fan-out directory does not make it exist.
        var sibling = ChunkTag.Of(Blob(4));
        Assert.Null(await store.GetAsync(sibling, default));
        Assert.False(store.Contains(sibling));
    }

    [Fact]
    public async Task MissingListsOnlyAbsentTags()
    {
        var store = new DirectoryChunkStore(_dir);
        var present = Enumerable.Range(0, 5).Select(i => Blob(10 + i)).ToList();
        foreach (var blob in present) await store.PutAsync(ChunkTag.Of(blob), blob, default);
        var absent = Enumerable.Range(0, 3).Select(i => ChunkTag.Of(Blob(20 + i))).ToList();
        var query = present.Select(b => ChunkTag.Of(b)).Concat(absent).ToList();
        Assert.Equal(absent, await store.MissingAsync(query, default));
        Assert.Empty(await store.MissingAsync(present.Select(b => ChunkTag.Of(b)).ToList(), default));
        Assert.Empty(await store.MissingAsync([], default));
    }

    [Fact]
    public async Task DeleteRemovesTheBlob()
    {
        var store = new DirectoryChunkStore(_dir);
        var keep = Blob(30);
        var drop = Blob(31);
        await store.PutAsync(ChunkTag.Of(keep), keep, default);
        await store.PutAsync(ChunkTag.Of(drop), drop, default);
        await store.DeleteAsync(ChunkTag.Of(drop), default);
        Assert.Null(await store.GetAsync(ChunkTag.Of(drop), default));
        Assert.False(store.Contains(ChunkTag.Of(drop)));
        Assert.Equal(keep, await store.GetAsync(ChunkTag.Of(keep), default));
        Assert.Equal([ChunkTag.Of(keep)], await List(store));
        // Stored again after deletion.
        await store.PutAsync(ChunkTag.Of(drop), drop, default);
        Assert.Equal(drop, await store.GetAsync(ChunkTag.Of(drop), default));
    }

    [Fact]
    public async Task DeleteOfMissingBlobIsANoOp()
    {
        var store = new DirectoryChunkStore(_dir);
        var blob = Blob(32);
        await store.DeleteAsync(ChunkTag.Of(blob), default); // fan-out directories do not exist yet
        await store.PutAsync(ChunkTag.Of(blob), blob, default);
        await store.DeleteAsync(ChunkTag.Of(blob), default);
        await store.DeleteAsync(ChunkTag.Of(blob), default); // directories exist, file does not
        Assert.Null(await store.GetAsync(ChunkTag.Of(blob), default));
    }

    [Fact]
    public async Task ListReturnsEveryStoredTagAndNothingElse()
    {
        var store = new DirectoryChunkStore(_dir);
        Assert.Empty(await List(store));
        var tags = new HashSet<ChunkTag>();
        for (int i = 0; i < 200; i++)
        {
            var blob = Blob(100 + i, 10 + i);
            tags.Add(ChunkTag.Of(blob));
            await store.PutAsync(ChunkTag.Of(blob), blob, default);
        }
        // Stray files: in the incoming directory, and a short name in a fan-out directory.
        File.WriteAllBytes(Path.Combine(store.Root, "incoming", "leftover.tmp"), [1, 2, 3]);
        var someDir = Path.GetDirectoryName(store.PathOf(tags.First()))!;
        File.WriteAllBytes(Path.Combine(someDir, "notes.txt"), [1]);
        var listed = await List(store);
        Assert.Equal(tags.Count, listed.Count);
        Assert.Equal(tags, listed.ToHashSet());
    }

    [Fact]
    public async Task PutWithWrongTagThrowsAndStoresNothing()
    {
        var store = new DirectoryChunkStore(_dir);
        var blob = Blob(40);
        var wrong = ChunkTag.Of(Blob(41));
        await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await store.PutAsync(wrong, blob, default));
        Assert.False(store.Contains(wrong));
        Assert.False(store.Contains(ChunkTag.Of(blob)));
        Assert.Empty(await List(store));
        Assert.Empty(Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories));
        var altered = blob.ToArray();
        altered[^1] ^= 1;
        await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await store.PutAsync(ChunkTag.Of(blob), altered, default));
    }

    [Fact]
    public async Task PutIsIdempotent()
    {
        var store = new DirectoryChunkStore(_dir);
        var blob = Blob(50);
        var tag = ChunkTag.Of(blob);
        await store.PutAsync(tag, blob, default);
        await store.PutAsync(tag, blob.ToArray(), default);
        Assert.Equal([tag], await List(store));
        Assert.Equal(blob, await store.GetAsync(tag, default));
        Assert.Single(Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories));
        Assert.Equal(blob.Length, store.StoredBytes());
    }

    [Fact]
    public async Task ConcurrentPutsOfOneBlobAllSucceed()
    {
        var store = new DirectoryChunkStore(_dir, durable: false);
        var blob = Blob(51, 100_000);
        var tag = ChunkTag.Of(blob);
        await Task.WhenAll(Enumerable.Range(0, 32).Select(_ => Task.Run(async () => await store.PutAsync(tag, blob, default))));
        Assert.Equal(blob, await store.GetAsync(tag, default));
        Assert.Single(Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task BlobsLandUnderTwoLevelFanOut()
    {
        var store = new DirectoryChunkStore(_dir);
        var blob = Blob(60);
        var tag = ChunkTag.Of(blob);
        await store.PutAsync(tag, blob, default);
        string hex = tag.ToString();
        string expected = Path.Combine(Path.GetFullPath(_dir), hex[..2], hex[2..4], hex);
        Assert.Equal(expected, store.PathOf(tag));
        Assert.True(File.Exists(expected));
        Assert.Equal(blob, File.ReadAllBytes(expected));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_dir, "incoming")));
        Assert.Equal(64, hex.Length);
        Assert.Equal(hex.ToLowerInvariant(), hex);
    }

    [Fact]
    public async Task ANewInstanceSeesStoredBlobs()
    {
        var blob = Blob(70);
        await new DirectoryChunkStore(_dir).PutAsync(ChunkTag.Of(blob), blob, default);
        var reopened = new DirectoryChunkStore(_dir);
        Assert.Equal(blob, await reopened.GetAsync(ChunkTag.Of(blob), default));
        Assert.Equal([ChunkTag.Of(blob)], await List(reopened));
    }

    [Fact]
    public async Task GetDoesNotVerify()
    {
        // The contract: callers check the tag. A blob corrupted on disk is returned as is.
        var store = new DirectoryChunkStore(_dir);
        var blob = Blob(80);
        var tag = ChunkTag.Of(blob);
        await store.PutAsync(tag, blob, default);
        var corrupt = blob.ToArray();
        corrupt[0] ^= 1;
        File.WriteAllBytes(store.PathOf(tag), corrupt);
        var got = await store.GetAsync(tag, default);
        Assert.NotNull(got);
        Assert.False(tag.Matches(got));
    }

    [Fact]
    public async Task StoredBytesSumsBlobs()
    {
        var store = new DirectoryChunkStore(_dir);
        Assert.Equal(0, store.StoredBytes());
        long total = 0;
        for (int i = 0; i < 10; i++)
        {
            var blob = Blob(90 + i, 100 * (i + 1));
            total += blob.Length;
            await store.PutAsync(ChunkTag.Of(blob), blob, default);
        }
        File.WriteAllBytes(Path.Combine(store.Root, "incoming", "leftover.tmp"), new byte[12345]);
        Assert.Equal(total, store.StoredBytes());
    }

    [Fact]
    public async Task ListHonoursCancellation()
    {
        var store = new DirectoryChunkStore(_dir);
        for (int i = 0; i < 5; i++) await store.PutAsync(ChunkTag.Of(Blob(200 + i)), Blob(200 + i), default);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => { await foreach (var _ in store.ListAsync(cts.Token)) { } });
    }
}
