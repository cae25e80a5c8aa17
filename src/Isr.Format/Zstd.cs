using ZstdSharp;

namespace Isr.Format;

/// <summary>zstd level 1: measured as the sweet spot of ratio and speed for disk chunks. One (de)compressor per thread avoids per-chunk allocation.</summary>
internal static class Zstd
{
    public const int Level = 1;
    [ThreadStatic] private static Compressor? t_compressor;
    [ThreadStatic] private static Decompressor? t_decompressor;

    public static int MaxCompressedLength(int length) => Compressor.GetCompressBound(length);

    /// <summary>Returns the compressed length, or -1 if compression does not fit in <paramref name="destination"/>.</summary>
    public static int TryCompress(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        t_compressor ??= new Compressor(Level);
        return t_compressor.TryWrap(source, destination, out int written) ? written : -1;
    }

    public static int Decompress(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        t_decompressor ??= new Decompressor();
        int written;
        try
        {
            if (!t_decompressor.TryUnwrap(source, destination, out written))
                throw new ChunkIntegrityException("compressed chunk does not fit its declared length");
        }
        catch (ZstdException e)
        {
            throw new ChunkIntegrityException($"compressed chunk is corrupt: {e.Message}");
        }
        return written;
    }
}
