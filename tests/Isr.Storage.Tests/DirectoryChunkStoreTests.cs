using Isr.Format;
using Isr.Storage;

namespace Isr.Storage.Tests;

/// <summary>The chunk-store contract on a directory, plus what is particular to files: layout, durability, strays.</summary>
public sealed class DirectoryChunkStoreTests : ChunkStoreContract, IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "isr-store-tests-" + Guid.NewGuid().ToString("N"));
    private DirectoryChunkStore? _store;

    protected override IChunkStore Store => _store ??= new DirectoryChunkStore(_dir, durable: false);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
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
    public async Task ListIgnoresStrayFiles()
    {
        var store = new DirectoryChunkStore(_dir);
        var tag = ChunkTag.Of(Blob(100));
        await store.PutAsync(tag, Blob(100), default);
        // Stray files: in the incoming directory, and a short name in a fan-out directory.
        File.WriteAllBytes(Path.Combine(store.Root, "incoming", "leftover.tmp"), [1, 2, 3]);
        File.WriteAllBytes(Path.Combine(Path.GetDirectoryName(store.PathOf(tag))!, "notes.txt"), [1]);
        Assert.Equal([tag], await ListAll(store));
    }

    [Fact]
    public async Task PutWithWrongTagLeavesNoFile()
    {
        var store = new DirectoryChunkStore(_dir);
        await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await store.PutAsync(ChunkTag.Of(Blob(41)), Blob(40), default));
        Assert.Empty(Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task ConcurrentPutsLeaveOneFile()
    {
        var store = new DirectoryChunkStore(_dir, durable: false);
        var blob = Blob(51, 100_000);
        await Task.WhenAll(Enumerable.Range(0, 32).Select(_ => Task.Run(async () => await store.PutAsync(ChunkTag.Of(blob), blob, default))));
        Assert.Single(Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories));
        Assert.Equal(blob.Length, store.StoredBytes());
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
        Assert.Equal([ChunkTag.Of(blob)], await ListAll(reopened));
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
