using System.Buffers.Binary;

namespace Isr.Format;

/// <summary>
/// One page of a chunk-list tree (the keyring of a disk, or the chunk list of a memory image). docs/FORMAT.md, "Pages".
/// <code>
///  0  "ISRK"            magic
///  4  u8  version       = 1
///  5  u8  kind          0 leaf, 1 interior
///  6  u8  level         0 for leaves
///  7  u8  reserved      = 0
///  8  u64 first index   first entry covered by this page
/// 16  u32 count         entries in this page
/// 20  count × tag(32)   leaf: chunk tags (all-zero = zero chunk); interior: child page tags      — plaintext
///  …  leaf only: SealedBox(page key, count × (key(32) ‖ u32 length), aad = everything above)     — encrypted
/// </code>
/// The page is named by SHA-256 of all its bytes. A reader without keys (the server) lists every tag a version
/// references from the plaintext part; keys stay encrypted.
/// </summary>
public sealed class ChunkListPage
{
    public const byte FormatVersion = 1;
    public const int HeaderSize = 20;
    private const string KeySectionContext = "isr keyring page v1";
    private const int KeyEntrySize = 36;

    public bool IsLeaf { get; }
    public int Level { get; }
    public long FirstIndex { get; }
    public ChunkTag[] Tags { get; }

    private ChunkListPage(bool isLeaf, int level, long firstIndex, ChunkTag[] tags)
    {
        IsLeaf = isLeaf;
        Level = level;
        FirstIndex = firstIndex;
        Tags = tags;
    }

    public static byte[] EncodeLeaf(long firstIndex, ReadOnlySpan<ChunkRef> entries, ParcelKeys keys)
    {
        var tags = new ChunkTag[entries.Length];
        for (int i = 0; i < tags.Length; i++) tags[i] = entries[i].Tag;
        var head = EncodeHead(leaf: true, level: 0, firstIndex, tags);
        var keySection = new byte[entries.Length * KeyEntrySize];
        for (int i = 0; i < entries.Length; i++)
        {
            var slot = keySection.AsSpan(i * KeyEntrySize, KeyEntrySize);
            entries[i].Key.Hash.WriteTo(slot);
            BinaryPrimitives.WriteUInt32LittleEndian(slot[32..], (uint)entries[i].Length);
        }
        return [.. head, .. SealedBox.Seal(keys.PageKey, keySection, KeySectionContext, head)];
    }

    public static byte[] EncodeInterior(int level, long firstIndex, ReadOnlySpan<ChunkTag> children)
    {
        return EncodeHead(leaf: false, level, firstIndex, children);
    }

    private static byte[] EncodeHead(bool leaf, int level, long firstIndex, ReadOnlySpan<ChunkTag> tags)
    {
        int count = tags.Length;
        var head = new byte[HeaderSize + count * Hash32.Size];
        "ISRK"u8.CopyTo(head);
        head[4] = FormatVersion;
        head[5] = leaf ? (byte)0 : (byte)1;
        head[6] = (byte)level;
        BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(8), firstIndex);
        BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(16), count);
        for (int i = 0; i < count; i++) tags[i].Hash.WriteTo(head.AsSpan(HeaderSize + i * Hash32.Size));
        return head;
    }

    /// <summary>Parses the plaintext part; needs no keys. Throws <see cref="MalformedDataException"/> on anything malformed.</summary>
    public static ChunkListPage Parse(ReadOnlySpan<byte> page)
    {
        if (page.Length < HeaderSize || !page[..4].SequenceEqual("ISRK"u8)) throw new MalformedDataException("not a keyring page");
        if (page[4] != FormatVersion) throw new MalformedDataException($"keyring page version {page[4]} is not supported");
        if (page[5] > 1 || page[7] != 0) throw new MalformedDataException("keyring page has a bad kind");
        bool leaf = page[5] == 0;
        int level = page[6];
        if (leaf != (level == 0)) throw new MalformedDataException("keyring page level does not match its kind");
        long first = BinaryPrimitives.ReadInt64LittleEndian(page[8..]);
        int count = BinaryPrimitives.ReadInt32LittleEndian(page[16..]);
        if (first < 0 || count < 0 || count > ChunkListTree.Fanout || HeaderSize + (long)count * Hash32.Size > page.Length)
            throw new MalformedDataException("keyring page has a bad range");
        int expected = HeaderSize + count * Hash32.Size + (leaf ? SealedBox.Overhead + count * KeyEntrySize : 0);
        if (page.Length != expected) throw new MalformedDataException("keyring page has the wrong length");
        var tags = new ChunkTag[count];
        for (int i = 0; i < count; i++) tags[i] = new ChunkTag(new Hash32(page.Slice(HeaderSize + i * Hash32.Size, Hash32.Size)));
        return new ChunkListPage(leaf, level, first, tags);
    }

    /// <summary>Parses a leaf and decrypts its key section.</summary>
    public static ChunkRef[] DecodeLeaf(ReadOnlySpan<byte> page, ParcelKeys keys)
    {
        var parsed = Parse(page);
        if (!parsed.IsLeaf) throw new MalformedDataException("expected a leaf keyring page");
        int headLength = HeaderSize + parsed.Tags.Length * Hash32.Size;
        var keySection = SealedBox.Open(keys.PageKey, page[headLength..], KeySectionContext, page[..headLength]);
        var entries = new ChunkRef[parsed.Tags.Length];
        for (int i = 0; i < entries.Length; i++)
        {
            var slot = keySection.AsSpan(i * KeyEntrySize, KeyEntrySize);
            int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(slot[32..]);
            if (length < 0 || length > ChunkCodec.MaxPlaintext) throw new MalformedDataException("keyring entry has a bad length");
            entries[i] = new ChunkRef(parsed.Tags[i], new ChunkKey(new Hash32(slot[..32])), length);
        }
        return entries;
    }
}
