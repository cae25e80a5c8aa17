using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Isr.Format;
using Microsoft.Win32.SafeHandles;

namespace Isr.Client.Lookaside;

/// <summary>Where one chunk of plaintext lies on read-only media.</summary>
public readonly record struct MediaChunk(int File, long Offset, int Length);

/// <summary>
/// An index of read-only media (a raw disk image, or a directory of them, e.g. a distribution's base image) for one
/// user: the image cut the parcel's way (fixed-size disk chunks), each chunk encoded with the user's convergent codec,
/// and the resulting tag mapped to the chunk's place. Tags depend on the user's domain secret (the chunk key is
/// HMAC(domain secret, plaintext)), so the index can only be built with the user's keys, and it would tell whoever
/// reads it which of the user's blobs are public base data: it is sealed under a key derived from the domain secret
/// and kept at the site (ISR_HOME/media-index/), never on the media. At resume a hit is read from the media and
/// encrypted on the fly; the chain then checks the blob against the authoritative tag, so changed media cost only a miss.
/// <code>
/// sealed body = "ISRM" ‖ u8 1 ‖ u32 chunk size ‖ u16 files ‖ files × (u16 length ‖ UTF-8 full path ‖ u64 size)
///             ‖ u32 count ‖ count × (tag(32) ‖ u16 file ‖ u64 offset ‖ u32 length)
/// </code>
/// </summary>
public sealed class MediaIndex
{
    private const string Context = "isr lookaside index v1";
    private static readonly byte[] Magic = "ISRM\u0001"u8.ToArray();

    public int ChunkSize { get; }
    public IReadOnlyList<string> Files { get; }
    public IReadOnlyDictionary<ChunkTag, MediaChunk> Chunks { get; }

    private MediaIndex(int chunkSize, IReadOnlyList<string> files, IReadOnlyDictionary<ChunkTag, MediaChunk> chunks) =>
        (ChunkSize, Files, Chunks) = (chunkSize, files, chunks);

    /// <summary>The image files of PATH: the file itself, or a directory's regular files (recursively, in a fixed order).</summary>
    public static IReadOnlyList<string> ImageFiles(string path) =>
        File.Exists(path) ? [Path.GetFullPath(path)]
        : Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Select(Path.GetFullPath).Order(StringComparer.Ordinal).ToList()
        : throw new FileNotFoundException($"{path} does not exist");

    /// <summary>Cuts every file into <paramref name="chunkSize"/> chunks (all-zero chunks are never stored, so not indexed).</summary>
    public static async Task<MediaIndex> BuildAsync(string path, int chunkSize, ChunkCodec codec, IProgress<double>? progress, CancellationToken ct)
    {
        var files = ImageFiles(path);
        if (files.Count > ushort.MaxValue) throw new ArgumentException($"{path} holds more than {ushort.MaxValue} files");
        long total = Math.Max(1, files.Sum(f => new FileInfo(f).Length)), done = 0;
        var chunks = new Dictionary<ChunkTag, MediaChunk>();
        var buffer = new byte[chunkSize];
        for (int f = 0; f < files.Count; f++)
        {
            await using var stream = new FileStream(files[f], FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
            for (long offset = 0; ; offset += chunkSize)
            {
                int n = await stream.ReadAtLeastAsync(buffer, chunkSize, throwOnEndOfStream: false, ct);
                if (n == 0) break;
                var plaintext = buffer.AsSpan(0, n);
                if (!ChunkCodec.IsAllZero(plaintext)) chunks.TryAdd(codec.Encode(plaintext).Ref.Tag, new MediaChunk(f, offset, n));
                progress?.Report((done += n) / (double)total);
                if (n < chunkSize) break;
            }
        }
        return new MediaIndex(chunkSize, files, chunks);
    }

    private static byte[] Key(UserSecrets secrets) => HKDF.DeriveKey(HashAlgorithmName.SHA256, secrets.DomainSecret, 32, info: Encoding.UTF8.GetBytes(Context));

    public byte[] Seal(UserSecrets secrets)
    {
        using var body = new MemoryStream();
        var w = new BinaryWriter(body);
        w.Write(Magic);
        w.Write((uint)ChunkSize);
        w.Write((ushort)Files.Count);
        foreach (var file in Files)
        {
            var name = Encoding.UTF8.GetBytes(file);
            w.Write((ushort)name.Length);
            w.Write(name);
            w.Write((ulong)new FileInfo(file).Length);
        }
        w.Write((uint)Chunks.Count);
        foreach (var (tag, at) in Chunks)
        {
            w.Write(tag.Hash.ToArray());
            w.Write((ushort)at.File);
            w.Write((ulong)at.Offset);
            w.Write((uint)at.Length);
        }
        w.Flush();
        return SealedBox.Seal(Key(secrets), body.ToArray(), Context);
    }

    /// <summary>Opens a sealed index; throws <see cref="MalformedDataException"/> for another user's or a damaged index.</summary>
    public static MediaIndex Open(byte[] sealedIndex, UserSecrets secrets)
    {
        var body = SealedBox.Open(Key(secrets), sealedIndex, Context);
        try
        {
            var r = new BinaryReader(new MemoryStream(body));
            if (!r.ReadBytes(Magic.Length).AsSpan().SequenceEqual(Magic)) throw new MalformedDataException("not a media index");
            int chunkSize = (int)r.ReadUInt32();
            var files = new List<string>();
            for (int i = r.ReadUInt16(); i > 0; i--)
            {
                files.Add(Encoding.UTF8.GetString(r.ReadBytes(r.ReadUInt16())));
                r.ReadUInt64();
            }
            var chunks = new Dictionary<ChunkTag, MediaChunk>();
            for (uint i = r.ReadUInt32(); i > 0; i--)
            {
                var tag = new ChunkTag(new Hash32(r.ReadBytes(Hash32.Size)));
                var at = new MediaChunk(r.ReadUInt16(), (long)r.ReadUInt64(), (int)r.ReadUInt32());
                if (at.File >= files.Count || at.Length <= 0 || at.Length > chunkSize) throw new MalformedDataException("media index entry out of range");
                chunks[tag] = at;
            }
            return new MediaIndex(chunkSize, files, chunks);
        }
        catch (EndOfStreamException)
        {
            throw new MalformedDataException("media index is truncated");
        }
    }

    /// <summary>Where the site keeps the sealed index of PATH (beside, not inside, the ISR_HOME/lookaside list of sources).</summary>
    public static string SitePath(Site.SiteDirectory site, string path) =>
        Path.Combine(site.Root, "media-index", Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Path.GetFullPath(path))))[..32] + ".index");
}

/// <summary>Read-only media as a lookaside source: a hit is read from the media and encrypted with the user's codec.</summary>
public sealed class MediaSource(string path, MediaIndex index, ChunkCodec codec) : ILookasideSource
{
    private readonly Dictionary<int, SafeFileHandle> _files = new();

    public string Name => $"media {path}";

    public async ValueTask<byte[]?> TryGetAsync(ChunkTag tag, CancellationToken ct)
    {
        if (!index.Chunks.TryGetValue(tag, out var at)) return null;
        var plaintext = new byte[at.Length];
        var handle = Handle(at.File);
        int n = await RandomAccess.ReadAsync(handle, plaintext, at.Offset, ct);
        if (n != at.Length) return null; // the media changed since it was indexed
        return codec.Encode(plaintext).Blob;
    }

    private SafeFileHandle Handle(int file)
    {
        lock (_files)
        {
            if (!_files.TryGetValue(file, out var handle))
                _files[file] = handle = File.OpenHandle(index.Files[file], FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.Asynchronous);
            return handle;
        }
    }

    public void Dispose()
    {
        lock (_files) foreach (var handle in _files.Values) handle.Dispose();
    }
}
