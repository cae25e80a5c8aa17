using Isr.Client.Homes;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Transfer;

/// <summary>Sends blobs from the site cache to the parcel's home: asks which are missing in one batch, then uploads those
/// in parallel, several blobs per request where the home takes batches.</summary>
public static class Uploader
{
    /// <summary>Blobs per upload request: ~4 MiB at 64 KiB chunks, so a request is short but round trips are few.</summary>
    private const int BatchSize = 64;

    public static async Task<(int Count, long Bytes)> UploadMissingAsync(IChunkStore cache, IChunkStore home, IReadOnlyCollection<ChunkTag> tags,
        IProgress<long>? progress, CancellationToken ct, Action<long>? onTotal = null)
    {
        var missing = await home.MissingAsync(tags, ct);
        if (onTotal != null && cache is DirectoryChunkStore files)
            onTotal(missing.Sum(t => new FileInfo(files.PathOf(t)) is { Exists: true } file ? file.Length : 0));
        long bytes = 0;
        var batches = home is IBatchChunkStore ? missing.Chunk(BatchSize) : missing.Select(t => new[] { t });
        await Parallel.ForEachAsync(batches, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = 4 }, async (batch, token) =>
        {
            var blobs = new List<(ChunkTag, byte[])>(batch.Length);
            foreach (var tag in batch)
                blobs.Add((tag, await cache.GetAsync(tag, token) ?? throw new ChunkIntegrityException($"chunk {tag} is not in the site cache")));
            if (home is IBatchChunkStore batching) await batching.PutBatchAsync(blobs, token);
            else await home.PutAsync(blobs[0].Item1, blobs[0].Item2, token);
            long sent = Interlocked.Add(ref bytes, blobs.Sum(b => (long)b.Item2.Length));
            progress?.Report(sent);
        });
        return (missing.Count, bytes);
    }
}
