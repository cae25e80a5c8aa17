using System.Buffers.Binary;
using Isr.Format;

namespace Isr.Client.Disk;

/// <summary>
/// The site's durable record of chunks written since the base version: chunk index → (tag, key, length), each record
/// sealed under the parcel's journal key (keys never rest in plaintext). The ciphertext itself is in the site cache.
/// Appended and fsynced at every NBD FLUSH/FUA; replayed after a crash; replaced atomically after a commit.
/// <code>
/// header:  "ISRJ" u8 version=1, u64 base version
/// record:  u32 length, SealedBox(journal key, u64 index ‖ tag(32) ‖ key(32) ‖ u32 length, aad = header)
/// </code>
/// A torn last record (power loss mid-append) is ignored and overwritten: it was never acknowledged.
/// </summary>
public sealed class DirtyJournal : IDisposable
{
    private const string Context = "isr dirty journal v1";
    private const int HeaderSize = 13;
    private const int PayloadSize = 8 + 32 + 32 + 4;
    private readonly FileStream _file;
    private readonly byte[] _header;
    private readonly ParcelKeys _keys;

    public long BaseVersion { get; }
    public IReadOnlyDictionary<long, ChunkRef> Replayed { get; }

    private DirtyJournal(FileStream file, byte[] header, long baseVersion, ParcelKeys keys, Dictionary<long, ChunkRef> replayed)
    {
        (_file, _header, BaseVersion, _keys, Replayed) = (file, header, baseVersion, keys, replayed);
    }

    public static bool Exists(string path) => File.Exists(path);

    /// <summary>Bytes journaled so far (grows with every flush; readable without keys from the file's size).</summary>
    public long Length => _file.Length;

    /// <summary>Base version recorded in an existing journal, readable without keys.</summary>
    public static long? PeekBaseVersion(string path)
    {
        if (!File.Exists(path)) return null;
        var head = new byte[HeaderSize];
        using var f = File.OpenRead(path);
        return f.Read(head) == HeaderSize && head.AsSpan(0, 4).SequenceEqual("ISRJ"u8) ? BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(5)) : null;
    }

    /// <summary>Opens the journal at <paramref name="path"/>, creating an empty one for <paramref name="baseVersion"/> if there is none.</summary>
    public static DirtyJournal Open(string path, long baseVersion, ParcelKeys keys)
    {
        if (!File.Exists(path)) WriteEmpty(path, baseVersion);
        var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        try
        {
            var header = new byte[HeaderSize];
            if (file.Read(header) != HeaderSize || !header.AsSpan(0, 4).SequenceEqual("ISRJ"u8) || header[4] != 1)
                throw new MalformedDataException($"{path} is not a dirty journal");
            long recordedBase = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(5));
            var replayed = new Dictionary<long, ChunkRef>();
            long good = HeaderSize;
            var lengthBytes = new byte[4];
            while (file.Read(lengthBytes) == 4)
            {
                int length = BinaryPrimitives.ReadInt32LittleEndian(lengthBytes);
                if (length != PayloadSize + SealedBox.Overhead) break;
                var box = new byte[length];
                if (file.Read(box) != length) break;
                byte[] payload;
                try { payload = SealedBox.Open(keys.JournalKey, box, Context, header); }
                catch (MalformedDataException) { break; }
                long index = BinaryPrimitives.ReadInt64LittleEndian(payload);
                replayed[index] = new ChunkRef(new ChunkTag(new Hash32(payload.AsSpan(8, 32))), new ChunkKey(new Hash32(payload.AsSpan(40, 32))),
                    BinaryPrimitives.ReadInt32LittleEndian(payload.AsSpan(72)));
                good = file.Position;
            }
            if (recordedBase != baseVersion)
            {
                if (replayed.Count > 0)
                    throw new MalformedDataException($"this site has changes based on version {recordedBase}, not on version {baseVersion}: check them in or discard them first");
                file.Dispose();
                WriteEmpty(path, baseVersion); // no changes: simply follow the newer version
                return Open(path, baseVersion, keys);
            }
            file.SetLength(good);
            file.Position = good;
            return new DirtyJournal(file, header, recordedBase, keys, replayed);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Appends records and makes them durable before returning.</summary>
    public void Append(IEnumerable<KeyValuePair<long, ChunkRef>> entries)
    {
        using var buffer = new MemoryStream();
        var payload = new byte[PayloadSize];
        Span<byte> length = stackalloc byte[4];
        foreach (var (index, chunk) in entries)
        {
            BinaryPrimitives.WriteInt64LittleEndian(payload, index);
            chunk.Tag.Hash.WriteTo(payload.AsSpan(8));
            chunk.Key.Hash.WriteTo(payload.AsSpan(40));
            BinaryPrimitives.WriteInt32LittleEndian(payload.AsSpan(72), chunk.Length);
            var box = SealedBox.Seal(_keys.JournalKey, payload, Context, _header);
            BinaryPrimitives.WriteInt32LittleEndian(length, box.Length);
            buffer.Write(length);
            buffer.Write(box);
        }
        long end = _file.Position;
        try
        {
            _file.Write(buffer.GetBuffer(), 0, (int)buffer.Length);
            _file.Flush(flushToDisk: true);
        }
        catch (IOException e)
        {
            // Cut a partial append off, or the next append would follow a torn record and be lost at replay.
            _file.SetLength(end);
            _file.Position = end;
            if (Cache.CacheSpace.IsDiskFull(e))
                throw new Cache.SiteDiskFullException($"the site's disk is full at {_file.Name}: this flush was not journaled; every earlier flush is kept", e);
            throw;
        }
    }

    /// <summary>Replaces the journal with an empty one for a new base version (after a commit, or to discard changes).</summary>
    public static void WriteEmpty(string path, long baseVersion)
    {
        var header = new byte[HeaderSize];
        "ISRJ"u8.CopyTo(header);
        header[4] = 1;
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(5), baseVersion);
        Durable.WriteFileAtomically(path, header);
    }

    /// <summary>Replaces the journal at <paramref name="path"/> atomically with one for a new base holding <paramref name="entries"/>,
    /// and opens it. This journal must be disposed by the caller afterwards.</summary>
    public static DirtyJournal Rewrite(string path, long baseVersion, IEnumerable<KeyValuePair<long, ChunkRef>> entries, ParcelKeys keys)
    {
        var temp = path + ".rewrite";
        File.Delete(temp);
        using (var fresh = Open(temp, baseVersion, keys)) fresh.Append(entries);
        File.Move(temp, path, overwrite: true);
        return Open(path, baseVersion, keys);
    }

    public void Dispose() => _file.Dispose();
}
