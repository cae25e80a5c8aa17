using Isr.Format;

namespace Isr.Storage.Tests;

/// <summary>
/// What every <see cref="IChunkStore"/> engine must do (the contract of IChunkStore.cs). An engine's test class derives
/// from this and supplies a fresh, empty store; engine-specific behaviour (file layout, object keys) is tested beside it.
/// </summary>
public abstract class ChunkStoreContract
{
    /// <summary>An empty store, the same instance for the whole test.</summary>
    protected abstract IChunkStore Store { get; }

    protected static byte[] Blob(int seed, int length = 1000)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    protected static async Task<List<ChunkTag>> ListAll(IChunkStore store)
    {
        var tags = new List<ChunkTag>();
        await foreach (var tag in store.ListAsync(default)) tags.Add(tag);
        return tags;
    }

    protected async Task<ChunkTag> PutAsync(byte[] blob)
    {
        var tag = ChunkTag.Of(blob);
        await Store.PutAsync(tag, blob, default);
        return tag;
    }

    [SkippableFact]
    public async Task Put_then_get_returns_the_bytes()
    {
        var blob = Blob(1, 70_000);
        var tag = await PutAsync(blob);
        Assert.Equal(blob, await Store.GetAsync(tag, default));
    }

    [SkippableFact]
    public async Task An_empty_blob_is_stored()
    {
        var tag = await PutAsync([]);
        var got = await Store.GetAsync(tag, default);
        Assert.NotNull(got);
        Assert.Empty(got);
    }

    [SkippableFact]
    public async Task Get_of_an_absent_blob_is_null_even_beside_a_sibling()
    {
        Assert.Null(await Store.GetAsync(ChunkTag.Of(Blob(2)), default));
        await PutAsync(Blob(3));
        Assert.Null(await Store.GetAsync(ChunkTag.Of(Blob(4)), default));
    }

    [SkippableFact]
    public async Task Missing_lists_only_absent_tags_in_input_order()
    {
        var present = new List<ChunkTag>();
        for (int i = 0; i < 5; i++) present.Add(await PutAsync(Blob(10 + i)));
        var absent = Enumerable.Range(0, 3).Select(i => ChunkTag.Of(Blob(20 + i))).ToList();
        var query = new[] { absent[0], present[0], present[1], absent[1], present[2], present[3], absent[2], present[4] };
        Assert.Equal(absent, await Store.MissingAsync(query, default));
        Assert.Empty(await Store.MissingAsync(present, default));
        Assert.Empty(await Store.MissingAsync([], default));
    }

    [SkippableFact]
    public async Task Missing_of_a_large_batch_is_exact()
    {
        // Large enough that an engine with a batch strategy for big sets (listing instead of per-tag checks) uses it.
        var stored = new HashSet<ChunkTag>();
        for (int i = 0; i < 300; i++) stored.Add(await PutAsync(Blob(1000 + i, 64)));
        var query = stored.Concat(Enumerable.Range(0, 5000).Select(i => ChunkTag.Of(Blob(5000 + i, 64)))).OrderBy(t => t.ToString()).ToList();
        var missing = await Store.MissingAsync(query, default);
        Assert.Equal(query.Where(t => !stored.Contains(t)).ToList(), missing);
    }

    [SkippableFact]
    public async Task Delete_removes_only_that_blob_and_it_can_be_stored_again()
    {
        var keep = await PutAsync(Blob(30));
        var drop = await PutAsync(Blob(31));
        await Store.DeleteAsync(drop, default);
        Assert.Null(await Store.GetAsync(drop, default));
        Assert.Equal([drop], await Store.MissingAsync([keep, drop], default));
        Assert.Equal([keep], await ListAll(Store));
        await Store.PutAsync(drop, Blob(31), default);
        Assert.Equal(Blob(31), await Store.GetAsync(drop, default));
    }

    [SkippableFact]
    public async Task Delete_of_an_absent_blob_is_a_no_op()
    {
        var tag = ChunkTag.Of(Blob(32));
        await Store.DeleteAsync(tag, default);
        await Store.PutAsync(tag, Blob(32), default);
        await Store.DeleteAsync(tag, default);
        await Store.DeleteAsync(tag, default);
        Assert.Null(await Store.GetAsync(tag, default));
    }

    [SkippableFact]
    public async Task List_returns_every_stored_tag_once()
    {
        Assert.Empty(await ListAll(Store));
        var tags = new HashSet<ChunkTag>();
        for (int i = 0; i < 200; i++) tags.Add(await PutAsync(Blob(100 + i, 10 + i)));
        var listed = await ListAll(Store);
        Assert.Equal(tags.Count, listed.Count);
        Assert.Equal(tags, listed.ToHashSet());
    }

    [SkippableFact]
    public async Task Inventory_gives_sizes_and_recent_store_times()
    {
        var inventory = Assert.IsAssignableFrom<IChunkInventory>(Store);
        var before = DateTimeOffset.UtcNow.AddMinutes(-5); // clocks of a remote store may differ a little
        var small = await PutAsync(Blob(110, 10));
        var large = await PutAsync(Blob(111, 5000));
        var items = new List<StoredChunk>();
        await foreach (var item in inventory.InventoryAsync(default)) items.Add(item);
        Assert.Equal(new Dictionary<ChunkTag, long> { [small] = 10, [large] = 5000 }, items.ToDictionary(i => i.Tag, i => i.Size));
        Assert.All(items, i => Assert.True(i.Stored > before, $"stored time {i.Stored:o} is not recent"));
    }

    [SkippableFact]
    public async Task Put_with_the_wrong_tag_is_refused_and_stores_nothing()
    {
        var blob = Blob(40);
        var wrong = ChunkTag.Of(Blob(41));
        await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await Store.PutAsync(wrong, blob, default));
        var altered = blob.ToArray();
        altered[^1] ^= 1;
        await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await Store.PutAsync(ChunkTag.Of(blob), altered, default));
        Assert.Empty(await ListAll(Store));
        Assert.Equal(2, (await Store.MissingAsync([wrong, ChunkTag.Of(blob)], default)).Count);
    }

    [SkippableFact]
    public async Task Put_is_idempotent()
    {
        var blob = Blob(50);
        var tag = await PutAsync(blob);
        await Store.PutAsync(tag, blob.ToArray(), default);
        Assert.Equal([tag], await ListAll(Store));
        Assert.Equal(blob, await Store.GetAsync(tag, default));
    }

    [SkippableFact]
    public async Task Concurrent_puts_of_one_blob_all_succeed_and_store_it_once()
    {
        var blob = Blob(51, 100_000);
        var tag = ChunkTag.Of(blob);
        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () => await Store.PutAsync(tag, blob, default))));
        Assert.Equal(blob, await Store.GetAsync(tag, default));
        Assert.Equal([tag], await ListAll(Store));
    }

    [SkippableFact]
    public async Task Put_accepts_a_slice_of_a_larger_buffer()
    {
        var buffer = Blob(52, 3000);
        var slice = buffer.AsMemory(1000, 1000);
        var tag = ChunkTag.Of(slice.Span);
        await Store.PutAsync(tag, slice, default);
        Assert.Equal(slice.ToArray(), await Store.GetAsync(tag, default));
    }
}
