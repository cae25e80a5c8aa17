namespace Isr.Format;

/// <summary>Loads a page by tag, verifying it against the tag (the caller's store does that).</summary>
public delegate ValueTask<byte[]> PageLoader(ChunkTag tag, CancellationToken ct);

/// <summary>A new tree: its root and the pages that must be stored for it (only new ones).</summary>
public sealed record TreeUpdate(ChunkTag Root, IReadOnlyList<(ChunkTag Tag, byte[] Page)> NewPages);

/// <summary>
/// A chunk list of fixed length as a tree of pages: leaves of up to <see cref="LeafCapacity"/> entries, interior pages of
/// up to <see cref="Fanout"/> children. Changing k entries writes k' ≤ k leaves plus their ancestors: O(changed) metadata
/// per version, and a reader loads only the leaves it needs.
/// </summary>
public static class ChunkListTree
{
    public const int LeafCapacity = 1024;
    public const int Fanout = 1024;

    public static long LeafCount(long entries) => (entries + LeafCapacity - 1) / LeafCapacity;

    /// <summary>Levels above the leaves: 0 when the root is a leaf.</summary>
    public static int Height(long entries)
    {
        long nodes = LeafCount(entries);
        int height = 0;
        while (nodes > 1) { nodes = (nodes + Fanout - 1) / Fanout; height++; }
        return height;
    }

    /// <summary>Leaves covered by one node at <paramref name="level"/>.</summary>
    private static long LeavesPerNode(int level)
    {
        long n = 1;
        for (int i = 0; i < level; i++) n *= Fanout;
        return n;
    }

    public static TreeUpdate Build(IReadOnlyList<ChunkRef> entries, ParcelKeys keys)
    {
        var pages = new List<(ChunkTag, byte[])>();
        if (entries.Count == 0) return new TreeUpdate(ChunkTag.ZeroChunk, pages);
        var level = new List<ChunkTag>();
        var all = entries as ChunkRef[] ?? [.. entries];
        for (long first = 0; first < all.Length; first += LeafCapacity)
        {
            int n = (int)Math.Min(LeafCapacity, all.Length - first);
            var page = ChunkListPage.EncodeLeaf(first, all.AsSpan((int)first, n), keys);
            var tag = ChunkTag.Of(page);
            pages.Add((tag, page));
            level.Add(tag);
        }
        for (int height = 1; level.Count > 1; height++)
        {
            var parents = new List<ChunkTag>();
            for (int i = 0; i < level.Count; i += Fanout)
            {
                int n = Math.Min(Fanout, level.Count - i);
                var page = ChunkListPage.EncodeInterior(height, i * LeavesPerNode(height - 1) * LeafCapacity, level.GetRange(i, n).ToArray());
                var tag = ChunkTag.Of(page);
                pages.Add((tag, page));
                parents.Add(tag);
            }
            level = parents;
        }
        return new TreeUpdate(level[0], pages);
    }

    /// <summary>Applies changes (entry index → new ref) to the tree at <paramref name="root"/> of <paramref name="entries"/> entries.</summary>
    public static async Task<TreeUpdate> UpdateAsync(ChunkTag root, long entries, IReadOnlyDictionary<long, ChunkRef> changes,
        PageLoader load, ParcelKeys keys, CancellationToken ct)
    {
        var pages = new List<(ChunkTag, byte[])>();
        if (changes.Count == 0) return new TreeUpdate(root, pages);
        foreach (var index in changes.Keys)
            if (index < 0 || index >= entries) throw new ArgumentOutOfRangeException(nameof(changes), $"entry {index} is outside 0..{entries - 1}");
        var byLeaf = changes.GroupBy(c => c.Key / LeafCapacity).ToDictionary(g => g.Key, g => g.ToList());
        var newRoot = await UpdateNodeAsync(root, Height(entries), 0, byLeaf, load, keys, pages, ct);
        return new TreeUpdate(newRoot, pages);
    }

    private static async Task<ChunkTag> UpdateNodeAsync(ChunkTag node, int level, long firstLeaf,
        Dictionary<long, List<KeyValuePair<long, ChunkRef>>> byLeaf, PageLoader load, ParcelKeys keys,
        List<(ChunkTag, byte[])> pages, CancellationToken ct)
    {
        byte[] page;
        if (level == 0)
        {
            var leaf = ChunkListPage.DecodeLeaf(await load(node, ct), keys);
            long first = firstLeaf * LeafCapacity;
            foreach (var (index, chunk) in byLeaf[firstLeaf]) leaf[index - first] = chunk;
            page = ChunkListPage.EncodeLeaf(first, leaf, keys);
        }
        else
        {
            var parsed = ChunkListPage.Parse(await load(node, ct));
            if (parsed.IsLeaf || parsed.Level != level) throw new MalformedDataException("keyring tree has an inconsistent shape");
            var children = parsed.Tags;
            long span = LeavesPerNode(level - 1);
            for (int slot = 0; slot < children.Length; slot++)
            {
                long childFirst = firstLeaf + slot * span;
                if (byLeaf.Keys.Any(l => l >= childFirst && l < childFirst + span))
                    children[slot] = await UpdateNodeAsync(children[slot], level - 1, childFirst, byLeaf, load, keys, pages, ct);
            }
            page = ChunkListPage.EncodeInterior(level, firstLeaf * LeafCapacity, children);
        }
        var tag = ChunkTag.Of(page);
        pages.Add((tag, page));
        return tag;
    }

    /// <summary>Loads the leaf holding entry <paramref name="leafIndex"/>·LeafCapacity by walking down from the root.</summary>
    public static async Task<ChunkRef[]> LoadLeafAsync(ChunkTag root, long entries, long leafIndex, PageLoader load, ParcelKeys keys, CancellationToken ct)
    {
        if (leafIndex < 0 || leafIndex >= LeafCount(entries)) throw new ArgumentOutOfRangeException(nameof(leafIndex));
        var node = root;
        for (int level = Height(entries); level > 0; level--)
        {
            var parsed = ChunkListPage.Parse(await load(node, ct));
            if (parsed.IsLeaf || parsed.Level != level) throw new MalformedDataException("keyring tree has an inconsistent shape");
            long slot = leafIndex / LeavesPerNode(level - 1) % Fanout;
            if (slot >= parsed.Tags.Length) throw new MalformedDataException("keyring tree is shorter than its version says");
            node = parsed.Tags[slot];
        }
        var leaf = ChunkListPage.DecodeLeaf(await load(node, ct), keys);
        int expected = (int)Math.Min(LeafCapacity, entries - leafIndex * LeafCapacity);
        if (leaf.Length != expected) throw new MalformedDataException("keyring leaf has the wrong number of entries");
        return leaf;
    }

    /// <summary>All entries in order, one leaf at a time.</summary>
    public static async IAsyncEnumerable<ChunkRef> ReadAllAsync(ChunkTag root, long entries, PageLoader load, ParcelKeys keys,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
    {
        for (long leaf = 0; leaf < LeafCount(entries); leaf++)
            foreach (var entry in await LoadLeafAsync(root, entries, leaf, load, keys, ct))
                yield return entry;
    }

    /// <summary>Every tag reachable from a root, pages and chunks, without keys (for commit checks, GC, fsck).</summary>
    public static async Task CollectTagsAsync(ChunkTag root, PageLoader load, ISet<ChunkTag> pageTags, ISet<ChunkTag> chunkTags, CancellationToken ct)
    {
        if (root.IsZeroChunk || !pageTags.Add(root)) return;
        var parsed = ChunkListPage.Parse(await load(root, ct));
        foreach (var tag in parsed.Tags)
        {
            if (parsed.IsLeaf) { if (!tag.IsZeroChunk) chunkTags.Add(tag); }
            else await CollectTagsAsync(tag, load, pageTags, chunkTags, ct);
        }
    }
}
