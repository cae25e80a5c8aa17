using Isr.Format;
using ZstdSharp;

/// <summary>
/// Fixed-block differencing, the simplest peer: a version stores each non-zero block that differs from the block at
/// the same offset of the previous version (no dedup across positions or versions), raw or compressed with zstd-1.
/// </summary>
internal sealed class BlockDiff(int blockSize)
{
    private readonly Compressor _zstd = new(1);
    private readonly byte[] _scratch = new byte[Compressor.GetCompressBound(blockSize)];

    public int BlockSize { get; } = blockSize;
    public long Raw { get; private set; }
    public long Zstd { get; private set; }
    public long Blocks { get; private set; }

    /// <summary>Adds the blocks of <paramref name="current"/> (at a block-aligned offset) that differ from
    /// <paramref name="previous"/>, the previous version's bytes at the same offset (shorter where it ended).</summary>
    public void Add(ReadOnlySpan<byte> current, ReadOnlySpan<byte> previous)
    {
        for (int b = 0; b < current.Length; b += BlockSize)
        {
            int len = Math.Min(BlockSize, current.Length - b);
            var c = current.Slice(b, len);
            if (b + len <= previous.Length && c.SequenceEqual(previous.Slice(b, len))) continue;
            if (ChunkCodec.IsAllZero(c)) continue;
            Blocks++;
            Raw += len;
            Zstd += Math.Min(len, _zstd.Wrap(c, _scratch));
        }
    }
}
