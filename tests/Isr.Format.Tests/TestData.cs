using System.Text;
using Isr.Format;

namespace Isr.Format.Tests;

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
        var line = Encoding.ASCII.GetBytes("the quick brown fox jumps over the lazy dog 0123456789\n");
        var bytes = new byte[length];
        for (int i = 0; i < length; i++) bytes[i] = line[i % line.Length];
        return bytes;
    }

    public static byte[] Secret(int seed) => Random(32, seed);

    public static Hash32 RandomHash(Random rng)
    {
        var bytes = new byte[32];
        rng.NextBytes(bytes);
        return new Hash32(bytes);
    }

    /// <summary>Fake references (no real chunks behind them): every 7th is a zero chunk.</summary>
    public static ChunkRef[] Refs(int count, int seed)
    {
        var rng = new Random(seed);
        var refs = new ChunkRef[count];
        for (int i = 0; i < count; i++)
            refs[i] = i % 7 == 3 ? ChunkRef.Zero(4096) : new ChunkRef(new ChunkTag(RandomHash(rng)), new ChunkKey(RandomHash(rng)), rng.Next(1, 65536));
        return refs;
    }
}

/// <summary>Pages by tag in memory, verifying each page against its tag on load, counting loads.</summary>
internal sealed class MemoryPages
{
    public Dictionary<ChunkTag, byte[]> Pages { get; } = new();
    public int Loads { get; private set; }

    public void AddAll(TreeUpdate update)
    {
        foreach (var (tag, page) in update.NewPages)
        {
            Assert.True(tag.Matches(page), "a page of a tree update does not match its tag");
            Pages[tag] = page;
        }
    }

    public ValueTask<byte[]> Load(ChunkTag tag, CancellationToken ct)
    {
        Loads++;
        if (!Pages.TryGetValue(tag, out var page)) throw new KeyNotFoundException($"no page {tag}");
        return ValueTask.FromResult(page);
    }
}
