using Isr.Format;
using Isr.Storage;
using Isr.Storage.Metadata;

namespace Isr.Server.Admin;

public sealed record PrunedParcel(string Owner, string Parcel, IReadOnlyList<long> Removed);

public sealed record GcReport(int ReferencedBlobs, int StoredBlobs, int Deleted, long DeletedBytes, int SparedRecent);

public sealed record FsckProblem(string Owner, string Parcel, long Version, string Tag, string Kind);

public sealed record FsckReport(int Versions, int BlobsChecked, IReadOnlyList<FsckProblem> Problems)
{
    public bool Clean => Problems.Count == 0;
}

public sealed record StatsReport(MetadataStats Metadata, long StoredBlobs, long StoredBytes);

/// <summary>Thrown by garbage collection when a referenced page cannot be read: its children are unknown, so nothing
/// may be deleted until fsck's findings are dealt with.</summary>
public sealed class GcRefusedException(string message) : Exception(message);

/// <summary>Server-side maintenance without keys: retention, garbage collection, integrity check, statistics.</summary>
public sealed class Maintenance(IMetadataStore metadata, IChunkStore chunks, TimeProvider clock)
{
    /// <summary>Called for each blob garbage collection has decided to delete (set aside, holdings forgotten), right
    /// before the irreversible purge: tests interleave uploads and commits at that point.</summary>
    public Func<ChunkTag, CancellationToken, Task>? BeforePurge { get; init; }

    /// <summary>Applies <see cref="PrunePolicy"/> with <paramref name="keep"/> to every parcel (or those named <paramref name="parcel"/>).</summary>
    public async Task<IReadOnlyList<PrunedParcel>> PruneAsync(int keep, string? parcel, string? owner, CancellationToken ct)
    {
        var result = new List<PrunedParcel>();
        foreach (var p in await metadata.ListAllParcelsAsync(ct))
        {
            if (parcel is not null && p.Name != parcel) continue;
            if (owner is not null && p.Owner != owner) continue;
            var removed = await metadata.PruneAsync(p.Key, keep, ct);
            result.Add(new PrunedParcel(p.Owner, p.Name, removed.Select(v => v.Number).ToList()));
        }
        return result;
    }

    /// <summary>Deletes every stored blob that no version references, except blobs stored, uploaded or reported present
    /// to a client within <paramref name="grace"/>: an upload for a commit in progress is never collected, as long as
    /// the commit follows its last upload or missing query within the grace period.</summary>
    /// <remarks>
    /// Why a committed blob is never deleted: a blob is first set aside (moved out of sight; reads and the commit's
    /// existence check no longer find it, an upload stores it anew), and only then are its holdings forgotten, if
    /// nobody has uploaded it or been told it is present since the cutoff; otherwise it is restored. Every commit
    /// follows, within the grace period, an upload or a "missing" answer for each new blob it references, and precedes
    /// nothing of that in time. So a commit whose check found the blob before it was set aside had its upload or answer
    /// recorded before that, and the forgetting step sees it and restores the blob; a commit checking later finds the
    /// blob missing (the client uploads it again, which stores a new copy that the purge of the set-aside one leaves
    /// alone). An interrupted collection leaves blobs set aside: the next one starts by restoring them.
    /// </remarks>
    public async Task<GcReport> CollectGarbageAsync(TimeSpan grace, CancellationToken ct)
    {
        var trash = chunks as IChunkTrash ?? throw new NotSupportedException($"{chunks} cannot set blobs aside for garbage collection");
        await foreach (var tag in trash.ListSetAsideAsync(ct)) await trash.RestoreAsync(tag, ct);
        var cutoff = clock.GetUtcNow() - grace;
        var pages = new HashSet<ChunkTag>();
        var referenced = new HashSet<ChunkTag>();
        foreach (var v in await metadata.ListAllVersionsAsync(ct))
        {
            foreach (var root in v.Record.RootTags())
            {
                if (v.Record.SealedTags().Contains(root)) { referenced.Add(root); continue; } // descriptor, working set
                try
                {
                    await ChunkListTree.CollectTagsAsync(root, async (tag, token) =>
                    {
                        var blob = await chunks.GetAsync(tag, token) ?? throw new GcRefusedException($"page {tag} is missing");
                        return tag.Matches(blob) ? blob : throw new GcRefusedException($"page {tag} is corrupt");
                    }, pages, referenced, ct);
                }
                catch (Exception e) when (e is GcRefusedException or MalformedDataException)
                {
                    throw new GcRefusedException($"{v.Owner}/{v.Parcel} version {v.Record.Number}: {e.Message}; nothing was deleted (run fsck)");
                }
            }
        }
        referenced.UnionWith(pages);

        var candidates = new List<StoredChunk>();
        int stored = 0;
        await foreach (var chunk in InventoryAsync(ct))
        {
            stored++;
            if (!referenced.Contains(chunk.Tag)) candidates.Add(chunk);
        }
        int deleted = 0, spared = 0;
        long bytes = 0;
        await metadata.AdvanceCollectionEpochAsync(ct); // servers drop their "complete page" memory
        foreach (var batch in candidates.Chunk(1000))
        {
            var seen = await metadata.LastSeenAsync(batch.Select(c => c.Tag).ToList(), ct);
            // Several blobs at a time, as an object store's round trip would otherwise bound the collection (see remarks
            // for why each blob is set aside before its holdings are forgotten).
            await Parallel.ForEachAsync(batch, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (chunk, token) =>
            {
                // Spared: stored recently (even if no holder is recorded yet), seen recently, or seen since the listing.
                if (chunk.Stored >= cutoff || (seen.TryGetValue(chunk.Tag, out var last) && last >= cutoff)
                    || !await trash.SetAsideAsync(chunk.Tag, token))
                {
                    Interlocked.Increment(ref spared);
                    return;
                }
                if (!await metadata.ForgetBlobAsync(chunk.Tag, cutoff, token))
                {
                    await trash.RestoreAsync(chunk.Tag, token);
                    Interlocked.Increment(ref spared);
                    return;
                }
                if (BeforePurge is not null) await BeforePurge(chunk.Tag, token);
                await trash.PurgeAsync(chunk.Tag, token);
                Interlocked.Increment(ref deleted);
                Interlocked.Add(ref bytes, chunk.Size);
            });
        }
        await metadata.AdvanceCollectionEpochAsync(ct);
        return new GcReport(referenced.Count, stored, deleted, bytes, spared);
    }

    /// <summary>Checks that every blob each version references is stored and matches its tag.</summary>
    public async Task<FsckReport> CheckAsync(CancellationToken ct)
    {
        var good = new HashSet<ChunkTag>();          // blobs verified against their tag
        var completePages = new HashSet<ChunkTag>(); // pages whose whole subtree is good
        var problems = new List<FsckProblem>();
        var versions = await metadata.ListAllVersionsAsync(ct);
        foreach (var v in versions)
        {
            void Report(ChunkTag tag, string kind) => problems.Add(new FsckProblem(v.Owner, v.Parcel, v.Record.Number, tag.ToString(), kind));

            async Task<byte[]?> VerifyAsync(ChunkTag tag, bool keep)
            {
                if (good.Contains(tag) && !keep) return [];
                var blob = await chunks.GetAsync(tag, ct);
                if (blob is null) { Report(tag, "missing"); return null; }
                if (!tag.Matches(blob)) { Report(tag, "corrupt"); return null; }
                good.Add(tag);
                return blob;
            }

            async Task<bool> WalkAsync(ChunkTag page)
            {
                if (completePages.Contains(page)) return true;
                var blob = await VerifyAsync(page, keep: true);
                if (blob is null) return false;
                ChunkListPage parsed;
                try { parsed = ChunkListPage.Parse(blob); }
                catch (MalformedDataException) { Report(page, "malformed"); return false; }
                bool ok = true;
                foreach (var child in parsed.Tags)
                {
                    if (parsed.IsLeaf) { if (!child.IsZeroChunk && await VerifyAsync(child, keep: false) is null) ok = false; }
                    else if (!await WalkAsync(child)) ok = false;
                }
                if (ok) completePages.Add(page);
                return ok;
            }

            foreach (var sealedBlob in v.Record.SealedTags()) await VerifyAsync(sealedBlob, keep: false);
            foreach (var root in v.Record.TreeRootTags()) await WalkAsync(root);
        }
        return new FsckReport(versions.Count, good.Count, problems);
    }

    public async Task<StatsReport> StatsAsync(CancellationToken ct)
    {
        long count = 0, bytes = 0;
        await foreach (var chunk in InventoryAsync(ct)) { count++; bytes += chunk.Size; }
        return new StatsReport(await metadata.GetStatsAsync(ct), count, bytes);
    }

    /// <summary>The store's listing with sizes and store times (every server engine keeps them).</summary>
    private IAsyncEnumerable<StoredChunk> InventoryAsync(CancellationToken ct) =>
        (chunks as IChunkInventory ?? throw new NotSupportedException($"{chunks} cannot list its blobs with sizes and times")).InventoryAsync(ct);
}
