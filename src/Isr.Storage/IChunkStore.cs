using Isr.Format;

namespace Isr.Storage;

/// <summary>
/// Blobs (chunks and keyring pages) by tag. Every engine (a local directory, an object store) implements this one
/// narrow interface; cross-cutting behaviour (verification, caching, fault injection) wraps it.
/// </summary>
public interface IChunkStore
{
    /// <summary>Returns the blob, or null if the store does not hold it. Does not verify: callers check the tag.</summary>
    ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct);

    /// <summary>Stores a blob under its tag. Idempotent. Throws <see cref="ChunkIntegrityException"/> if the bytes do not match the tag.</summary>
    ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct);

    /// <summary>Those of <paramref name="tags"/> that the store does not hold.</summary>
    ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct);

    ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct);

    IAsyncEnumerable<ChunkTag> ListAsync(CancellationToken ct);
}
