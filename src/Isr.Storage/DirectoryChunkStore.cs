using System.Runtime.CompilerServices;
using Isr.Format;

namespace Isr.Storage;

/// <summary>
/// Blobs as files named by tag under a two-level fan-out (ab/cd/abcd…), so no directory grows past 65 536 entries.
/// A blob is written to a temporary file, flushed and renamed into place: a crash leaves either no file or the whole blob.
/// </summary>
public sealed class DirectoryChunkStore : IChunkStore, IChunkInventory, IChunkTrash
{
    private readonly string _root;
    private readonly string _incoming;
    private readonly string _trash;
    private readonly bool _durable;

    /// <param name="durable">fsync each blob before it becomes visible (authoritative stores); a cache may skip it.</param>
    public DirectoryChunkStore(string root, bool durable = true)
    {
        _root = Path.GetFullPath(root);
        _incoming = Path.Combine(_root, "incoming");
        _trash = Path.Combine(_root, "trash");
        _durable = durable;
        Directory.CreateDirectory(_incoming);
    }

    public string Root => _root;

    public override string ToString() => $"store {Path.GetDirectoryName(_root)}";

    public string PathOf(ChunkTag tag)
    {
        var hex = tag.ToString();
        return Path.Combine(_root, hex[..2], hex[2..4], hex);
    }

    public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
    {
        var path = PathOf(tag);
        if (!File.Exists(path)) return null; // a miss without an exception: a site cache misses on every chunk a lookaside source supplies
        try
        {
            return await File.ReadAllBytesAsync(path, ct);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
    }

    public bool Contains(ChunkTag tag) => File.Exists(PathOf(tag));

    public async ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct)
    {
        if (!tag.Matches(blob.Span)) throw new ChunkIntegrityException($"blob does not match tag {tag}");
        var path = PathOf(tag);
        if (File.Exists(path)) return;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var temp = Path.Combine(_incoming, $"{tag}.{Guid.NewGuid():N}");
        try
        {
            await using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.Asynchronous))
            {
                await file.WriteAsync(blob, ct);
                if (_durable) file.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    public ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct) =>
        ValueTask.FromResult<IReadOnlyList<ChunkTag>>(tags.Where(t => !Contains(t)).ToList());

    public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct)
    {
        try { File.Delete(PathOf(tag)); }
        catch (DirectoryNotFoundException) { } // never stored: deleting is a no-op, as for a missing file in an existing directory
        return ValueTask.CompletedTask;
    }

    private string TrashOf(ChunkTag tag) => Path.Combine(_trash, tag.ToString());

    // Renames within one file system: atomic, so a blob is always either in place or set aside.
    public ValueTask<bool> SetAsideAsync(ChunkTag tag, CancellationToken ct)
    {
        Directory.CreateDirectory(_trash);
        try { File.Move(PathOf(tag), TrashOf(tag), overwrite: true); return ValueTask.FromResult(true); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return ValueTask.FromResult(false); }
    }

    public ValueTask RestoreAsync(ChunkTag tag, CancellationToken ct)
    {
        var path = PathOf(tag);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        // stored again meanwhile: the same bytes (the tag is their hash), either copy will do
        try { File.Move(TrashOf(tag), path, overwrite: true); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { }
        return ValueTask.CompletedTask;
    }

    public ValueTask PurgeAsync(ChunkTag tag, CancellationToken ct)
    {
        try { File.Delete(TrashOf(tag)); } catch (DirectoryNotFoundException) { }
        return ValueTask.CompletedTask;
    }

    public async IAsyncEnumerable<ChunkTag> ListSetAsideAsync([EnumeratorCancellation] CancellationToken ct)
    {
        await Task.Yield();
        if (!Directory.Exists(_trash)) yield break;
        foreach (var file in Directory.EnumerateFiles(_trash))
            if (Path.GetFileName(file).Length == 64) yield return ChunkTag.Parse(Path.GetFileName(file));
    }

    public async IAsyncEnumerable<ChunkTag> ListAsync([EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var chunk in InventoryAsync(ct)) yield return chunk.Tag;
    }

    public async IAsyncEnumerable<StoredChunk> InventoryAsync([EnumeratorCancellation] CancellationToken ct)
    {
        await Task.Yield();
        foreach (var first in Directory.EnumerateDirectories(_root, "??"))
            foreach (var second in Directory.EnumerateDirectories(first, "??"))
                foreach (var file in new DirectoryInfo(second).EnumerateFiles())
                {
                    ct.ThrowIfCancellationRequested();
                    if (file.Name.Length == 64) yield return new StoredChunk(ChunkTag.Parse(file.Name), file.Length, file.LastWriteTimeUtc);
                }
    }

    /// <summary>Total bytes of stored blobs.</summary>
    public long StoredBytes() =>
        Directory.EnumerateDirectories(_root, "??").SelectMany(d => Directory.EnumerateFiles(d, "*", SearchOption.AllDirectories))
            .Sum(f => new FileInfo(f).Length);
}
