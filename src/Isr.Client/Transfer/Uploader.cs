using Isr.Storage;
using Isr.Format;

namespace Isr.Client.Transfer;

/// <summary>Sends blobs from the site cache to the parcel's home: asks which are missing in one batch, then uploads those in parallel.</summary>
public static class Uploader
{
    public static async Task<(int Count, long Bytes)> UploadMissingAsync(IChunkStore cache, IChunkStore home, IReadOnlyCollection<ChunkTag> tags,
        IProgress<long>? progress, CancellationToken ct)
    {
        var missing = await home.MissingAsync(tags, ct);
        long bytes = 0;
        await Parallel.ForEachAsync(missing, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = 8 }, async (tag, token) =>
        {
            var blob = await cache.GetAsync(tag, token) ?? throw new ChunkIntegrityException($"chunk {tag} is not in the site cache");
            await home.PutAsync(tag, blob, token);
            long sent = Interlocked.Add(ref bytes, blob.Length);
            progress?.Report(sent);
        });
        return (missing.Count, bytes);
    }
}
