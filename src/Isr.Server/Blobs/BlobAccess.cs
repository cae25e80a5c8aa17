using System.Collections.Concurrent;
using Isr.Format;
using Isr.Server.Api;
using Isr.Storage;
using Isr.Storage.Metadata;

namespace Isr.Server.Blobs;

/// <summary>
/// Blobs as one user sees them: a blob "is there" for a user only if it is stored and the user holds it (uploaded it,
/// bytes verified against the tag). Knowing a tag is thus never enough to learn whether another user stores that blob,
/// nor to download it or to reference it in a version.
/// </summary>
public sealed class BlobAccess(IMetadataStore metadata, IChunkStore chunks, TimeProvider clock)
{
    public IChunkStore Chunks => chunks;

    /// <summary>Those of <paramref name="tags"/> the user cannot count on (not held or not stored), in input order.
    /// With <paramref name="touch"/>, held ones get their last-seen time refreshed (garbage collection's grace period
    /// starts again).</summary>
    public async Task<List<ChunkTag>> MissingAsync(long userId, IReadOnlyCollection<ChunkTag> tags, bool touch, CancellationToken ct)
    {
        var wanted = tags.Where(t => !t.IsZeroChunk).ToList();
        if (wanted.Count == 0) return [];
        var held = await metadata.HeldBlobsAsync(userId, wanted, touch ? clock.GetUtcNow() : null, ct);
        var notStored = held.Count == 0 ? [] : (await chunks.MissingAsync(held.ToList(), ct)).ToHashSet();
        var seen = new HashSet<ChunkTag>();
        return wanted.Where(t => (!held.Contains(t) || notStored.Contains(t)) && seen.Add(t)).ToList();
    }
}

/// <summary>
/// Commit rule 2: every blob reachable from a version's roots is there for the user (checked without keys).
/// Pages whose whole subtree was found complete are remembered per user, and so are the chunks of complete leaves: a
/// commit that changes k leaves of a 300k-chunk disk walks only the new pages and asks only about the chunks new in them
/// (a changed leaf's other ~1000 entries were there at the last commit; asking about all of them touched ~20k rows per
/// check-in of the realistic guest, 0.1–0.4 s). The memory is dropped whenever garbage collection has run since
/// (collection epoch), and when it grows past <see cref="MaxRemembered"/> blobs (~100 MB).
/// </summary>
public sealed class CommitChecker(IMetadataStore metadata, BlobAccess blobs)
{
    private const int MaxRemembered = 2_000_000;
    private readonly ConcurrentDictionary<(long User, ChunkTag Page), byte> _complete = new();
    /// <summary>Chunks of complete leaves. Apart from the pages: a chunk is never a complete tree (a root that is a chunk is refused).</summary>
    private readonly ConcurrentDictionary<(long User, ChunkTag Chunk), byte> _held = new();
    private long _epoch = -1;

    /// <summary>Missing blobs (pages, chunks, the descriptor), empty if the version is complete.
    /// Throws <see cref="ApiException"/> 400 if a page is not a keyring page. <paramref name="touch"/>: refresh the
    /// last-seen time of what it asks about, as a commit must; a check that only learns the trees (at server start)
    /// changes nothing.</summary>
    public async Task<List<ChunkTag>> FindMissingAsync(long userId, VersionRecord version, bool touch, CancellationToken ct)
    {
        var epoch = await metadata.GetCollectionEpochAsync(ct);
        if (Interlocked.Exchange(ref _epoch, epoch) != epoch || _complete.Count + _held.Count > MaxRemembered)
        {
            _complete.Clear();
            _held.Clear();
        }

        var missing = new List<ChunkTag>();
        missing.AddRange(await blobs.MissingAsync(userId, version.SealedTags().ToList(), touch, ct)); // descriptor, working set
        // The trees level by level: one holder query per level for its pages and one for its leaves' chunks. Two per page
        // (each a write transaction, as the query refreshes last-seen) cost a commit with a new memory image 0.1–0.4 s.
        var roots = version.TreeRootTags().Distinct().ToList();
        var incomplete = new HashSet<ChunkTag>();
        var children = new Dictionary<ChunkTag, IReadOnlyList<ChunkTag>>(); // interior pages' child pages
        var leafChunks = new Dictionary<ChunkTag, IReadOnlyList<ChunkTag>>();
        var visited = new HashSet<ChunkTag>();
        var level = roots.Where(p => !_complete.ContainsKey((userId, p)) && visited.Add(p)).ToList();
        while (level.Count > 0)
        {
            var absent = (await blobs.MissingAsync(userId, level, touch, ct)).ToHashSet();
            var leaves = new List<(ChunkTag Page, IReadOnlyList<ChunkTag> Chunks)>();
            var next = new List<ChunkTag>();
            foreach (var page in level)
            {
                var bytes = absent.Contains(page) ? null : await blobs.Chunks.GetAsync(page, ct);
                if (bytes is null || !page.Matches(bytes)) { missing.Add(page); incomplete.Add(page); continue; } // vanished or damaged: uploaded again
                ChunkListPage parsed;
                try { parsed = ChunkListPage.Parse(bytes); }
                catch (MalformedDataException e) { throw ApiException.BadRequest($"blob {page} is not a keyring page: {e.Message}"); }
                if (parsed.IsLeaf) { leaves.Add((page, leafChunks[page] = parsed.Tags)); continue; }
                if (parsed.Tags.Any(child => child.IsZeroChunk)) throw ApiException.BadRequest($"keyring page {page} has an empty child");
                children[page] = parsed.Tags;
                next.AddRange(parsed.Tags.Where(child => !_complete.ContainsKey((userId, child)) && visited.Add(child)));
            }
            var unknown = leaves.SelectMany(l => l.Chunks).Where(c => !_held.ContainsKey((userId, c))).Distinct().ToList();
            var absentChunks = (await blobs.MissingAsync(userId, unknown, touch, ct)).ToHashSet();
            foreach (var (page, chunks) in leaves)
            {
                var gone = chunks.Where(absentChunks.Contains).ToList();
                if (gone.Count > 0) { missing.AddRange(gone); incomplete.Add(page); }
            }
            level = next;
        }
        foreach (var root in roots) RememberIfComplete(userId, root, incomplete, children, leafChunks);
        return missing.Distinct().ToList();
    }

    /// <summary>Whether a check found nothing missing below <paramref name="page"/> and still remembers it.</summary>
    internal bool RemembersComplete(long userId, ChunkTag page) => _complete.ContainsKey((userId, page));

    /// <summary>Whether nothing below <paramref name="page"/> is missing; such pages, and the chunks of such leaves, are
    /// remembered (children first).</summary>
    private bool RememberIfComplete(long userId, ChunkTag page, HashSet<ChunkTag> incomplete, Dictionary<ChunkTag, IReadOnlyList<ChunkTag>> children,
        Dictionary<ChunkTag, IReadOnlyList<ChunkTag>> leafChunks)
    {
        if (_complete.ContainsKey((userId, page))) return true;
        if (incomplete.Contains(page)) return false;
        if (children.TryGetValue(page, out var kids) && !kids.All(k => RememberIfComplete(userId, k, incomplete, children, leafChunks)))
        {
            incomplete.Add(page);
            return false;
        }
        _complete.TryAdd((userId, page), 0);
        if (leafChunks.TryGetValue(page, out var chunks))
            foreach (var chunk in chunks.Where(c => !c.IsZeroChunk)) _held.TryAdd((userId, chunk), 0);
        return true;
    }
}
