using Isr.Format;
using Isr.Storage;
using Isr.Storage.Metadata;

namespace Isr.Server.Admin;

public sealed record MigrationReport(int Users, int Sessions, int Parcels, int Versions, int Locks, int BlobHoldings,
    long ChunksCopied, long ChunksAlreadyThere, FsckReport? Check);

/// <summary>
/// <c>isr-server migrate</c>: copies a deployment to other engines without loss. Blobs go first (any store to any
/// store, only those the target lacks, several at a time, each verified against its tag by the target's put), then
/// the metadata in one transaction — so an interrupted migration leaves an empty target metadata store and can be run
/// again, copying only the blobs still missing. The servers of the source must be stopped meanwhile.
/// </summary>
public static class Migration
{
    public static async Task<MigrationReport> RunAsync(IMetadataStore source, IChunkStore sourceChunks, IMetadataStore target,
        IChunkStore? targetChunks, int parallelism, IProgress<(long Done, long Total)>? progress, bool check, CancellationToken ct)
    {
        await target.InitializeAsync(ct);
        if (await target.GetStatsAsync(ct) is { Users: > 0 } or { Parcels: > 0 })
            throw new MetadataConflictException("the target metadata store is not empty: migrate only into a new database");
        var (copied, present) = targetChunks is null ? (0L, 0L) : await CopyChunksAsync(sourceChunks, targetChunks, parallelism, progress, ct);
        var snapshot = await source.ExportAsync(ct);
        await target.ImportAsync(snapshot, ct);
        var report = check ? await new Maintenance(target, targetChunks ?? sourceChunks, TimeProvider.System).CheckAsync(ct) : null;
        return new MigrationReport(snapshot.Users.Count, snapshot.Sessions.Count, snapshot.Parcels.Count, snapshot.Versions.Count,
            snapshot.Locks.Count, snapshot.Holdings.Count, copied, present, report);
    }

    /// <summary>Copies every blob of <paramref name="source"/> that <paramref name="target"/> lacks; returns how many were
    /// copied and how many the target held already.</summary>
    public static async Task<(long Copied, long AlreadyThere)> CopyChunksAsync(IChunkStore source, IChunkStore target, int parallelism,
        IProgress<(long Done, long Total)>? progress, CancellationToken ct)
    {
        var all = new List<ChunkTag>();
        await foreach (var tag in source.ListAsync(ct)) all.Add(tag);
        var missing = new List<ChunkTag>();
        foreach (var batch in all.Chunk(4096)) missing.AddRange(await target.MissingAsync(batch, ct));
        long done = 0;
        progress?.Report((0, missing.Count));
        await Parallel.ForEachAsync(missing, new ParallelOptions { MaxDegreeOfParallelism = parallelism, CancellationToken = ct }, async (tag, token) =>
        {
            var blob = await source.GetAsync(tag, token) ?? throw new InvalidDataException($"blob {tag} vanished from the source while copying");
            await target.PutAsync(tag, blob, token);
            progress?.Report((Interlocked.Increment(ref done), missing.Count));
        });
        return (missing.Count, all.Count - missing.Count);
    }
}
