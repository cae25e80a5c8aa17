using Isr.Format;

namespace Isr.Storage;

/// <summary>A stored blob as the store's own listing describes it.</summary>
/// <param name="Stored">When the store last wrote it (file mtime, object LastModified): garbage collection spares young
/// blobs even when no holder is recorded for them yet.</param>
public sealed record StoredChunk(ChunkTag Tag, long Size, DateTimeOffset Stored);

/// <summary>Engines whose listing comes with sizes and times at no extra cost (a directory, an S3 bucket listing).</summary>
public interface IChunkInventory
{
    IAsyncEnumerable<StoredChunk> InventoryAsync(CancellationToken ct);
}
