using Isr.Client.Cache;
using Isr.Client.Disk;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Tests;

internal static class TestData
{
    public static byte[] Random(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    public static byte[] Compressible(int length)
    {
        var line = "all work and no play makes jack a dull boy\n"u8;
        var bytes = new byte[length];
        for (int i = 0; i < length; i++) bytes[i] = line[i % line.Length];
        return bytes;
    }
}

/// <summary>A temporary directory removed at the end of the test.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "isr-client-tests-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public string this[string relative] => System.IO.Path.Combine(Path, relative);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Builds base versions the way an import would: encode each non-zero chunk, store blobs and keyring pages.</summary>
internal static class Versions
{
    public static async Task<(VersionRecord Version, ChunkRef[] Refs)> BuildAsync(byte[] image, int chunkSize, ChunkCodec codec, ParcelKeys keys,
        IChunkStore store, string parcelId = "parcel-under-test", long number = 1)
    {
        long chunks = (image.LongLength + chunkSize - 1) / chunkSize;
        var refs = new ChunkRef[chunks];
        for (long i = 0; i < chunks; i++)
        {
            var plaintext = image.AsSpan((int)(i * chunkSize), (int)Math.Min(chunkSize, image.Length - i * chunkSize));
            if (ChunkCodec.IsAllZero(plaintext)) { refs[i] = ChunkRef.Zero(plaintext.Length); continue; }
            var (chunk, blob) = codec.Encode(plaintext);
            await store.PutAsync(chunk.Tag, blob, default);
            refs[i] = chunk;
        }
        var tree = ChunkListTree.Build(refs, keys);
        foreach (var (tag, page) in tree.NewPages) await store.PutAsync(tag, page, default);
        var descriptor = SealedBox.Seal(keys.MetadataKey, "{\"machine\":\"q35\"}"u8, "isr descriptor v1");
        await store.PutAsync(ChunkTag.Of(descriptor), descriptor, default);
        var version = new VersionRecord
        {
            ParcelId = parcelId,
            Number = number,
            Parent = number == 1 ? null : number - 1,
            Created = DateTimeOffset.UtcNow,
            ChunkSize = chunkSize,
            DiskSize = image.Length,
            DiskRoot = tree.Root.ToString(),
            DescriptorTag = ChunkTag.Of(descriptor).ToString(),
        }.Sign(keys);
        return (version, refs);
    }
}

/// <summary>A base version in a home store, a site cache, and a journal path: what a site needs to open a parcel disk.</summary>
internal sealed class DiskSetup : IDisposable
{
    public TempDir Dir { get; } = new();
    public ParcelKeys Keys { get; } = ParcelKeys.Generate();
    public ChunkCodec Codec { get; } = new(TestData.Random(32, 1234));
    public DirectoryChunkStore Home { get; }
    public DirectoryChunkStore Cache { get; }
    public string JournalPath => Dir["site/dirty.journal"];
    public string SourcePath => Dir["source.img"];
    public byte[] Image { get; private set; } = [];
    public ChunkRef[] BaseRefs { get; private set; } = [];
    public VersionRecord Base { get; private set; } = null!;
    public int ChunkSize => Base.ChunkSize;

    /// <summary>Stores skip fsync here: it only matters across power loss, which tests do not simulate, and costs seconds.</summary>
    private DiskSetup()
    {
        Home = new DirectoryChunkStore(Dir["home"], durable: false);
        Cache = new DirectoryChunkStore(Dir["site/cache"], durable: false);
    }

    public static async Task<DiskSetup> CreateAsync(byte[] image, int chunkSize)
    {
        var setup = new DiskSetup { Image = image };
        File.WriteAllBytes(setup.SourcePath, image);
        (setup.Base, setup.BaseRefs) = await Versions.BuildAsync(image, chunkSize, setup.Codec, setup.Keys, setup.Home);
        return setup;
    }

    /// <summary>16 KiB chunks, 40 full chunks and a partial one; zero chunks at 3, 4, 10 and 20; a compressible chunk at 12.</summary>
    public static Task<DiskSetup> CreateStandardAsync(int seed = 1)
    {
        const int chunkSize = 16 << 10;
        var image = TestData.Random(40 * chunkSize + 3000, seed);
        foreach (int zero in new[] { 3, 4, 10, 20 }) Array.Clear(image, zero * chunkSize, chunkSize);
        TestData.Compressible(chunkSize).CopyTo(image, 12 * chunkSize);
        return CreateAsync(image, chunkSize);
    }

    public ParcelDisk OpenDisk(VersionRecord? version = null, string? journalPath = null, DirectoryChunkStore? cache = null)
    {
        var v = version ?? Base;
        return new ParcelDisk(v, Keys, Codec, new ChunkFetcher(cache ?? Cache, Home), DirtyJournal.Open(journalPath ?? JournalPath, v.Number, Keys));
    }

    public void Dispose() => Dir.Dispose();
}

internal static class DiskExtensions
{
    public static async Task<byte[]> ReadAllAsync(this ParcelDisk disk)
    {
        var buffer = new byte[disk.Size];
        await disk.ReadAsync(0, buffer, default);
        return buffer;
    }

    public static async Task<byte[]> ReadAsync(this ParcelDisk disk, long offset, int length)
    {
        var buffer = new byte[length];
        await disk.ReadAsync(offset, buffer, default);
        return buffer;
    }
}
