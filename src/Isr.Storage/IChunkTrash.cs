using Isr.Format;

namespace Isr.Storage;

/// <summary>
/// Garbage collection's two-step delete: a blob is first set aside (reads and existence checks no longer see it; an
/// upload of the same blob stores it anew), then restored or purged. Purging removes only the set-aside copy, never a
/// blob stored again meanwhile.
/// </summary>
public interface IChunkTrash
{
    /// <summary>Moves the blob aside; false if the store does not hold it.</summary>
    ValueTask<bool> SetAsideAsync(ChunkTag tag, CancellationToken ct);

    /// <summary>Puts a set-aside blob back (a no-op if it is not set aside).</summary>
    ValueTask RestoreAsync(ChunkTag tag, CancellationToken ct);

    /// <summary>Deletes the set-aside copy.</summary>
    ValueTask PurgeAsync(ChunkTag tag, CancellationToken ct);

    /// <summary>Blobs set aside and neither restored nor purged (a collection was interrupted).</summary>
    IAsyncEnumerable<ChunkTag> ListSetAsideAsync(CancellationToken ct);
}
