using Isr.Format;

namespace Isr.Format.Tests;

public class ChunkListTreeTests
{
    private static readonly ParcelKeys Keys = new(TestData.Secret(50));

    private static async Task<List<ChunkRef>> ReadAll(ChunkTag root, long entries, MemoryPages store, ParcelKeys? keys = null)
    {
        var all = new List<ChunkRef>();
        await foreach (var entry in ChunkListTree.ReadAllAsync(root, entries, store.Load, keys ?? Keys)) all.Add(entry);
        return all;
    }

    /// <summary>Pages an update must write: every touched leaf and each of its ancestors, once.</summary>
    private static int ExpectedNewPages(IEnumerable<long> changedIndices, long entries)
    {
        int height = ChunkListTree.Height(entries);
        var nodes = new HashSet<(int Level, long Node)>();
        foreach (long index in changedIndices)
        {
            long node = index / ChunkListTree.LeafCapacity;
            for (int level = 0; level <= height; level++, node /= ChunkListTree.Fanout) nodes.Add((level, node));
        }
        return nodes.Count;
    }

    [Theory]
    [InlineData(0L, 0L, 0)]
    [InlineData(1L, 1L, 0)]
    [InlineData(1023L, 1L, 0)]
    [InlineData(1024L, 1L, 0)]
    [InlineData(1025L, 2L, 1)]
    [InlineData(2048L, 2L, 1)]
    [InlineData(3000L, 3L, 1)]
    [InlineData(1024L * 1024L, 1024L, 1)]
    [InlineData(1024L * 1024L + 1L, 1025L, 2)]
    public void LeafCountAndHeight(long entries, long leaves, int height)
    {
        Assert.Equal(leaves, ChunkListTree.LeafCount(entries));
        Assert.Equal(height, ChunkListTree.Height(entries));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(1023)]
    [InlineData(1024)]
    [InlineData(1025)]
    [InlineData(3000)]
    public async Task BuildThenReadBack(int count)
    {
        var entries = TestData.Refs(count, count);
        var tree = ChunkListTree.Build(entries, Keys);
        var store = new MemoryPages();
        store.AddAll(tree);

        long leaves = ChunkListTree.LeafCount(count);
        int interior = count > ChunkListTree.LeafCapacity ? 1 : 0;
        Assert.Equal(leaves + interior, tree.NewPages.Count);
        Assert.Equal(tree.NewPages.Count, store.Pages.Count);
        if (count == 0)
        {
            Assert.True(tree.Root.IsZeroChunk);
        }
        else
        {
            var root = ChunkListPage.Parse(store.Pages[tree.Root]);
            Assert.Equal(interior == 0, root.IsLeaf);
            Assert.Equal(ChunkListTree.Height(count), root.Level);
            Assert.Equal(0, root.FirstIndex);
        }

        Assert.Equal(entries, await ReadAll(tree.Root, count, store));
        for (long leaf = 0; leaf < leaves; leaf++)
        {
            var loaded = await ChunkListTree.LoadLeafAsync(tree.Root, count, leaf, store.Load, Keys, default);
            int first = (int)(leaf * ChunkListTree.LeafCapacity);
            Assert.Equal(entries.Skip(first).Take(ChunkListTree.LeafCapacity), loaded);
        }
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ChunkListTree.LoadLeafAsync(tree.Root, count, leaves, store.Load, Keys, default));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ChunkListTree.LoadLeafAsync(tree.Root, count, -1, store.Load, Keys, default));
    }

    [Fact]
    public async Task LoadLeafWalksOnePathOnly()
    {
        var entries = TestData.Refs(5000, 1);
        var tree = ChunkListTree.Build(entries, Keys);
        var store = new MemoryPages();
        store.AddAll(tree);
        var leaf = await ChunkListTree.LoadLeafAsync(tree.Root, 5000, 4, store.Load, Keys, default);
        Assert.Equal(2, store.Loads); // root and one leaf
        Assert.Equal(entries[4096..], leaf);
    }

    [Fact]
    public async Task PagesNeedTheParcelKey()
    {
        var tree = ChunkListTree.Build(TestData.Refs(10, 2), Keys);
        var store = new MemoryPages();
        store.AddAll(tree);
        await Assert.ThrowsAsync<MalformedDataException>(() => ReadAll(tree.Root, 10, store, new ParcelKeys(TestData.Secret(51))));
    }

    [Fact]
    public void KeysAreNotInPlaintextInPages()
    {
        var entries = TestData.Refs(100, 3);
        var tree = ChunkListTree.Build(entries, Keys);
        var page = tree.NewPages.Single().Page;
        Assert.NotEqual(-1, page.AsSpan().IndexOf(entries[0].Tag.Hash.ToArray()));
        foreach (var entry in entries.Where(e => !e.IsZeroChunk))
            Assert.Equal(-1, page.AsSpan().IndexOf(entry.Key.Hash.ToArray()));
    }

    [Theory]
    [InlineData(3000, new long[] { 5 })]
    [InlineData(3000, new long[] { 5, 6, 1023 })]
    [InlineData(3000, new long[] { 0, 2999 })]
    [InlineData(3000, new long[] { 1024, 1025, 2047, 2048 })]
    [InlineData(1000, new long[] { 999 })]
    [InlineData(1025, new long[] { 1024 })]
    public async Task UpdateWritesOnlyTouchedLeavesAndAncestors(int count, long[] changed)
    {
        var entries = TestData.Refs(count, 4);
        var tree = ChunkListTree.Build(entries, Keys);
        var store = new MemoryPages();
        store.AddAll(tree);
        var replacements = TestData.Refs(changed.Length, 5);
        var changes = changed.Select((index, i) => KeyValuePair.Create(index, replacements[i] with { Length = 777 })).ToDictionary();

        var update = await ChunkListTree.UpdateAsync(tree.Root, count, changes, store.Load, Keys, default);
        Assert.Equal(ExpectedNewPages(changed, count), update.NewPages.Count);
        Assert.Equal(update.NewPages.Count, update.NewPages.Select(p => p.Tag).Distinct().Count());
        Assert.Contains(update.NewPages, p => p.Tag == update.Root);
        Assert.NotEqual(tree.Root, update.Root);
        Assert.DoesNotContain(update.NewPages, p => store.Pages.ContainsKey(p.Tag));
        store.AddAll(update);

        var expected = entries.ToArray();
        foreach (var (index, chunk) in changes) expected[index] = chunk;
        Assert.Equal(expected, await ReadAll(update.Root, count, store));
        Assert.Equal(entries, await ReadAll(tree.Root, count, store)); // the old version is untouched

        if (ChunkListTree.Height(count) > 0)
        {
            var oldRoot = ChunkListPage.Parse(store.Pages[tree.Root]);
            var newRoot = ChunkListPage.Parse(store.Pages[update.Root]);
            Assert.Equal(oldRoot.Tags.Length, newRoot.Tags.Length);
            var touchedLeaves = changed.Select(i => i / ChunkListTree.LeafCapacity).ToHashSet();
            for (int slot = 0; slot < oldRoot.Tags.Length; slot++)
                if (touchedLeaves.Contains(slot)) Assert.NotEqual(oldRoot.Tags[slot], newRoot.Tags[slot]);
                else Assert.Equal(oldRoot.Tags[slot], newRoot.Tags[slot]);
        }
    }

    [Fact]
    public async Task RandomUpdatesOverSeveralGenerations()
    {
        const int count = 5000;
        var rng = new Random(6);
        var current = TestData.Refs(count, 7);
        var store = new MemoryPages();
        var tree = ChunkListTree.Build(current, Keys);
        store.AddAll(tree);
        var root = tree.Root;
        for (int generation = 0; generation < 6; generation++)
        {
            var changes = new Dictionary<long, ChunkRef>();
            int k = rng.Next(1, 40);
            var fresh = TestData.Refs(k, 100 + generation);
            for (int i = 0; i < k; i++) changes[rng.Next(count)] = fresh[i];
            var update = await ChunkListTree.UpdateAsync(root, count, changes, store.Load, Keys, default);
            Assert.Equal(ExpectedNewPages(changes.Keys, count), update.NewPages.Count);
            store.AddAll(update);
            foreach (var (index, chunk) in changes) current[index] = chunk;
            root = update.Root;
            Assert.Equal(current, await ReadAll(root, count, store));
        }
    }

    [Fact]
    public async Task EmptyUpdateKeepsTheRoot()
    {
        var tree = ChunkListTree.Build(TestData.Refs(2000, 8), Keys);
        var store = new MemoryPages();
        store.AddAll(tree);
        var update = await ChunkListTree.UpdateAsync(tree.Root, 2000, new Dictionary<long, ChunkRef>(), store.Load, Keys, default);
        Assert.Equal(tree.Root, update.Root);
        Assert.Empty(update.NewPages);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(2000)]
    public async Task UpdateOutsideTheListIsRefused(long index)
    {
        var tree = ChunkListTree.Build(TestData.Refs(2000, 9), Keys);
        var store = new MemoryPages();
        store.AddAll(tree);
        var changes = new Dictionary<long, ChunkRef> { [index] = ChunkRef.Zero(1) };
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ChunkListTree.UpdateAsync(tree.Root, 2000, changes, store.Load, Keys, default));
    }

    [Fact]
    public async Task CollectTagsListsEveryPageAndNonZeroChunkWithoutKeys()
    {
        var entries = TestData.Refs(3000, 10);
        var tree = ChunkListTree.Build(entries, Keys);
        var store = new MemoryPages();
        store.AddAll(tree);
        var pages = new HashSet<ChunkTag>();
        var chunks = new HashSet<ChunkTag>();
        await ChunkListTree.CollectTagsAsync(tree.Root, store.Load, pages, chunks, default);
        Assert.Equal(tree.NewPages.Select(p => p.Tag).ToHashSet(), pages);
        Assert.Equal(entries.Where(e => !e.IsZeroChunk).Select(e => e.Tag).ToHashSet(), chunks);
        Assert.DoesNotContain(ChunkTag.ZeroChunk, chunks);
        Assert.Contains(entries, e => e.IsZeroChunk);

        // After an update: the new pages plus the old ones still shared.
        var update = await ChunkListTree.UpdateAsync(tree.Root, 3000, new Dictionary<long, ChunkRef> { [2500] = ChunkRef.Zero(4096) }, store.Load, Keys, default);
        store.AddAll(update);
        var newPages = new HashSet<ChunkTag>();
        var newChunks = new HashSet<ChunkTag>();
        await ChunkListTree.CollectTagsAsync(update.Root, store.Load, newPages, newChunks, default);
        Assert.Equal(4, newPages.Count);
        Assert.Equal(2, newPages.Intersect(pages).Count());
        Assert.Superset(update.NewPages.Select(p => p.Tag).ToHashSet(), newPages);
        var expectedChunks = entries.Where((e, i) => i != 2500 && !e.IsZeroChunk).Select(e => e.Tag).ToHashSet();
        Assert.Equal(expectedChunks, newChunks);
    }

    [Fact]
    public async Task CollectTagsOfEmptyTreeIsEmpty()
    {
        var store = new MemoryPages();
        var pages = new HashSet<ChunkTag>();
        var chunks = new HashSet<ChunkTag>();
        await ChunkListTree.CollectTagsAsync(ChunkTag.ZeroChunk, store.Load, pages, chunks, default);
        Assert.Empty(pages);
        Assert.Empty(chunks);
        Assert.Equal(0, store.Loads);
    }

    [Fact]
    public async Task ReaderWithWrongEntryCountDetectsTheMismatch()
    {
        var tree = ChunkListTree.Build(TestData.Refs(1025, 11), Keys);
        var store = new MemoryPages();
        store.AddAll(tree);
        // Height 0 expected, root is interior.
        await Assert.ThrowsAsync<MalformedDataException>(() => ChunkListTree.LoadLeafAsync(tree.Root, 1024, 0, store.Load, Keys, default));
        // Three leaves expected, the tree has two.
        await Assert.ThrowsAsync<MalformedDataException>(() => ChunkListTree.LoadLeafAsync(tree.Root, 3000, 2, store.Load, Keys, default));
        // Last leaf shorter than expected.
        await Assert.ThrowsAsync<MalformedDataException>(() => ChunkListTree.LoadLeafAsync(tree.Root, 1500, 1, store.Load, Keys, default));

        var leafTree = ChunkListTree.Build(TestData.Refs(1000, 12), Keys);
        store.AddAll(leafTree);
        await Assert.ThrowsAsync<MalformedDataException>(() => ChunkListTree.LoadLeafAsync(leafTree.Root, 3000, 0, store.Load, Keys, default));
        await Assert.ThrowsAsync<MalformedDataException>(() => ChunkListTree.LoadLeafAsync(leafTree.Root, 999, 0, store.Load, Keys, default));
    }

    /// <summary>Two interior levels need more than 1024·1024 entries.</summary>
    [Fact]
    public async Task ThreeLevelTree()
    {
        const int count = 1024 * 1024 + 5;
        var entries = new ChunkRef[count];
        var rng = new Random(13);
        var tagBytes = TestData.Random(32, 14);
        for (int i = 0; i < count; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(tagBytes, i + 1); // cheap distinct tags
            entries[i] = i % 5 == 0 ? ChunkRef.Zero(65536) : new ChunkRef(new ChunkTag(new Hash32(tagBytes)), default, i % 65536 + 1);
        }
        var tree = ChunkListTree.Build(entries, Keys);
        Assert.Equal(1025 + 2 + 1, tree.NewPages.Count);
        var store = new MemoryPages();
        store.AddAll(tree);
        var root = ChunkListPage.Parse(store.Pages[tree.Root]);
        Assert.Equal(2, root.Level);
        Assert.Equal(2, root.Tags.Length);
        var second = ChunkListPage.Parse(store.Pages[root.Tags[1]]);
        Assert.Equal(1, second.Level);
        Assert.Equal(1024L * 1024, second.FirstIndex);

        foreach (long leaf in new long[] { 0, 1, 511, 1023, 1024 })
        {
            var loaded = await ChunkListTree.LoadLeafAsync(tree.Root, count, leaf, store.Load, Keys, default);
            Assert.Equal(entries.Skip((int)(leaf * 1024)).Take(1024), loaded);
        }

        var replacement = new ChunkRef(new ChunkTag(TestData.RandomHash(rng)), new ChunkKey(TestData.RandomHash(rng)), 9);
        long[] changed = [3, 1024 * 1024 - 1, 1024 * 1024 + 4];
        var update = await ChunkListTree.UpdateAsync(tree.Root, count, changed.ToDictionary(i => i, _ => replacement), store.Load, Keys, default);
        Assert.Equal(ExpectedNewPages(changed, count), update.NewPages.Count);
        Assert.Equal(3 + 2 + 1, update.NewPages.Count);
        store.AddAll(update);
        foreach (long index in changed)
        {
            var leaf = await ChunkListTree.LoadLeafAsync(update.Root, count, index / 1024, store.Load, Keys, default);
            Assert.Equal(replacement, leaf[index % 1024]);
            var expected = entries.Skip((int)(index / 1024 * 1024)).Take(1024).ToArray();
            expected[index % 1024] = replacement;
            Assert.Equal(expected, leaf);
        }
        Assert.Equal(entries.AsSpan(512 * 1024, 1024).ToArray(), await ChunkListTree.LoadLeafAsync(update.Root, count, 512, store.Load, Keys, default));

        var pages = new HashSet<ChunkTag>();
        var chunks = new HashSet<ChunkTag>();
        await ChunkListTree.CollectTagsAsync(update.Root, store.Load, pages, chunks, default);
        Assert.Equal(1028, pages.Count);
        Assert.Contains(replacement.Tag, chunks);
    }
}

public class ChunkListPageTests
{
    private static readonly ParcelKeys Keys = new(TestData.Secret(60));

    private static byte[] Leaf(int count = 10) => ChunkListPage.EncodeLeaf(2048, TestData.Refs(count, 1), Keys);

    [Fact]
    public void LeafRoundTrip()
    {
        var entries = TestData.Refs(10, 1);
        var page = ChunkListPage.EncodeLeaf(2048, entries, Keys);
        var parsed = ChunkListPage.Parse(page);
        Assert.True(parsed.IsLeaf);
        Assert.Equal(0, parsed.Level);
        Assert.Equal(2048, parsed.FirstIndex);
        Assert.Equal(entries.Select(e => e.Tag), parsed.Tags);
        Assert.Equal(entries, ChunkListPage.DecodeLeaf(page, Keys));
    }

    [Fact]
    public void InteriorRoundTrip()
    {
        var children = TestData.Refs(5, 2).Select(r => r.Tag).ToArray();
        var page = ChunkListPage.EncodeInterior(1, 1 << 20, children);
        var parsed = ChunkListPage.Parse(page);
        Assert.False(parsed.IsLeaf);
        Assert.Equal(1, parsed.Level);
        Assert.Equal(1 << 20, parsed.FirstIndex);
        Assert.Equal(children, parsed.Tags);
        Assert.Throws<MalformedDataException>(() => ChunkListPage.DecodeLeaf(page, Keys));
    }

    public static TheoryData<string, byte[]> Malformed()
    {
        var data = new TheoryData<string, byte[]>();
        var leaf = Leaf();
        data.Add("empty", []);
        data.Add("header only, truncated", leaf[..(ChunkListPage.HeaderSize - 1)]);
        data.Add("truncated by one", leaf[..^1]);
        data.Add("truncated in tags", leaf[..(ChunkListPage.HeaderSize + 40)]);
        data.Add("extended by one", [.. leaf, 0]);
        data.Add("bad magic", With(leaf, 0, (byte)'X'));
        data.Add("bad version", With(leaf, 4, 2));
        data.Add("bad kind", With(leaf, 5, 2));
        data.Add("leaf with level", With(leaf, 6, 1));
        data.Add("reserved byte", With(leaf, 7, 1));
        data.Add("count too large", WithInt(leaf, 16, 11));
        data.Add("count too small", WithInt(leaf, 16, 9));
        data.Add("count negative", WithInt(leaf, 16, -1));
        data.Add("count beyond fanout", WithInt(leaf, 16, ChunkListTree.Fanout + 1));
        data.Add("negative first index", WithLong(leaf, 8, -1));
        var interior = ChunkListPage.EncodeInterior(1, 0, TestData.Refs(3, 3).Select(r => r.Tag).ToArray());
        data.Add("interior at level 0", With(interior, 6, 0));
        data.Add("interior with a key section", [.. interior, .. new byte[SealedBox.Overhead + 3 * 36]]);
        data.Add("interior truncated", interior[..^1]);
        return data;
    }

    private static byte[] With(byte[] page, int offset, byte value)
    {
        var copy = page.ToArray();
        copy[offset] = value;
        return copy;
    }

    private static byte[] WithInt(byte[] page, int offset, int value)
    {
        var copy = page.ToArray();
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(copy.AsSpan(offset), value);
        return copy;
    }

    private static byte[] WithLong(byte[] page, int offset, long value)
    {
        var copy = page.ToArray();
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(copy.AsSpan(offset), value);
        return copy;
    }

    [Theory]
    [MemberData(nameof(Malformed))]
    public void MalformedPagesAreRejected(string name, byte[] page)
    {
        var e = Record.Exception(() => ChunkListPage.Parse(page));
        Assert.True(e is MalformedDataException, $"{name}: {e?.GetType().Name ?? "accepted"}");
        Assert.Throws<MalformedDataException>(() => ChunkListPage.DecodeLeaf(page, Keys));
    }

    [Fact]
    public void FlippedKeySectionByteIsCaughtByDecodeLeafOnly()
    {
        var page = Leaf();
        int keySection = ChunkListPage.HeaderSize + 10 * 32;
        for (int i = keySection; i < page.Length; i++)
        {
            var altered = With(page, i, (byte)(page[i] ^ 0x80));
            ChunkListPage.Parse(altered); // the keyless part still parses
            Assert.Throws<MalformedDataException>(() => ChunkListPage.DecodeLeaf(altered, Keys));
        }
    }

    [Fact]
    public void PlaintextPartIsBoundToTheKeySection()
    {
        // A server swapping a tag (or the first index) in the plaintext part cannot make the keys apply to other blobs.
        var page = Leaf();
        foreach (int offset in new[] { 8, ChunkListPage.HeaderSize, ChunkListPage.HeaderSize + 9 * 32 + 31 })
        {
            var altered = With(page, offset, (byte)(page[offset] ^ 1));
            ChunkListPage.Parse(altered);
            Assert.Throws<MalformedDataException>(() => ChunkListPage.DecodeLeaf(altered, Keys));
        }
    }

    [Fact]
    public void WrongKeysAreRejected()
    {
        Assert.Throws<MalformedDataException>(() => ChunkListPage.DecodeLeaf(Leaf(), new ParcelKeys(TestData.Secret(61))));
    }

    [Fact]
    public void EmptyLeafRoundTrips()
    {
        var page = ChunkListPage.EncodeLeaf(0, [], Keys);
        Assert.Empty(ChunkListPage.DecodeLeaf(page, Keys));
    }

    [Fact]
    public void OversizedEntryLengthIsRejected()
    {
        var entries = TestData.Refs(2, 4);
        entries[1] = entries[1] with { Length = ChunkCodec.MaxPlaintext + 1 };
        var page = ChunkListPage.EncodeLeaf(0, entries, Keys);
        Assert.Throws<MalformedDataException>(() => ChunkListPage.DecodeLeaf(page, Keys));
    }
}
