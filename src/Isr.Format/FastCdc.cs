using System.Buffers;

namespace Isr.Format;

/// <summary>
/// Content-defined chunking (FastCDC with normalized chunking) for memory images. QEMU's migration stream is not
/// page-aligned, so fixed blocks shared only 11% between two suspends here; content-defined cuts realign after any
/// insertion, and a second suspend stored 1.5 MB instead of 26 MB. The gear table and masks are part of the format:
/// changing them changes every cut.
/// </summary>
public sealed class FastCdc
{
    public int MinSize { get; }
    public int AverageSize { get; }
    public int MaxSize { get; }
    private readonly ulong _maskSmall, _maskLarge;
    private static readonly ulong[] Gear = BuildGear();

    public FastCdc(int minSize = 16 << 10, int averageSize = 64 << 10, int maxSize = 256 << 10)
    {
        if (!(0 < minSize && minSize < averageSize && averageSize < maxSize) || !int.IsPow2(averageSize))
            throw new ArgumentException("need 0 < min < average < max and a power-of-two average");
        (MinSize, AverageSize, MaxSize) = (minSize, averageSize, maxSize);
        int bits = int.Log2(averageSize);
        // Normalized chunking: harder to cut before the average, easier after; masks use the high bits, which depend on the last 64 bytes.
        _maskSmall = ~0UL << (64 - (bits + 2));
        _maskLarge = ~0UL << (64 - (bits - 2));
    }

    /// <summary>Length of the first chunk of <paramref name="data"/> (all of it if it is shorter than the minimum).</summary>
    public int Cut(ReadOnlySpan<byte> data)
    {
        int n = Math.Min(data.Length, MaxSize);
        if (n <= MinSize) return n;
        int normal = Math.Min(AverageSize, n);
        ulong fp = 0;
        int i = MinSize;
        for (; i < normal; i++)
        {
            fp = (fp << 1) + Gear[data[i]];
            if ((fp & _maskSmall) == 0) return i + 1;
        }
        for (; i < n; i++)
        {
            fp = (fp << 1) + Gear[data[i]];
            if ((fp & _maskLarge) == 0) return i + 1;
        }
        return n;
    }

    /// <summary>Reads the stream to its end and hands over each chunk (a fresh array the consumer may keep).</summary>
    public async Task SplitAsync(Stream input, Func<byte[], ValueTask> onChunk, CancellationToken ct)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxSize * 2);
        try
        {
            int filled = 0;
            bool eof = false;
            while (true)
            {
                while (!eof && filled < MaxSize)
                {
                    int read = await input.ReadAsync(buffer.AsMemory(filled, buffer.Length - filled), ct);
                    if (read == 0) eof = true;
                    filled += read;
                }
                if (filled == 0) return;
                int cut = Cut(buffer.AsSpan(0, filled));
                await onChunk(buffer.AsSpan(0, cut).ToArray());
                Buffer.BlockCopy(buffer, cut, buffer, 0, filled - cut);
                filled -= cut;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static ulong[] BuildGear()
    {
        // SplitMix64 from a fixed seed: reproducible, documented in docs/FORMAT.md.
        var table = new ulong[256];
        ulong state = 0x1557_2ECD_0BEE_F00DUL;
        for (int i = 0; i < table.Length; i++)
        {
            state += 0x9E37_79B9_7F4A_7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
            table[i] = z ^ (z >> 31);
        }
        return table;
    }
}
