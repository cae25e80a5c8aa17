using System.Buffers.Binary;
using System.IO.Compression;

namespace Isr.Vmm.Tests;

/// <summary>
/// An 8-bit RGB image from an X window dump (what <c>xwd</c> writes) or a binary PPM (what QEMU's screendump writes),
/// written out as PNG so a person can look at it. XWD: ZPixmap at 16, 24 and 32 bits per pixel, true/direct colour
/// through the masks and indexed colour through the colormap (what Xvfb's 24-bit screens produce).
/// </summary>
internal sealed class RgbImage
{
    private RgbImage(int width, int height, byte[] rgb) => (Width, Height, Rgb) = (width, height, rgb);

    public int Width { get; }
    public int Height { get; }

    /// <summary>Row-major, three bytes (R, G, B) per pixel.</summary>
    public byte[] Rgb { get; }

    public static RgbImage ParseXwd(byte[] data)
    {
        if (data.Length < 100)
            throw new InvalidDataException("Not an XWD file: shorter than its header.");
        // xwd writes the header big-endian whatever the host.
        uint H(int index) => BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(index * 4, 4));
        var headerSize = (int)H(0);
        if (H(1) != 7)
            throw new InvalidDataException($"Not an XWD version 7 file (version {H(1)}).");
        if (H(2) != 2)
            throw new InvalidDataException($"XWD pixmap format {H(2)} is not ZPixmap.");
        int width = (int)H(4), height = (int)H(5);
        var lsbFirst = H(7) == 0;
        var bitsPerPixel = (int)H(11);
        var bytesPerLine = (int)H(12);
        var visualClass = H(13);
        uint redMask = H(14), greenMask = H(15), blueMask = H(16);
        var colormapEntries = (int)H(19); // ncolors: entries actually written
        if (bitsPerPixel is not (16 or 24 or 32))
            throw new InvalidDataException($"XWD with {bitsPerPixel} bits per pixel is not handled.");

        var colormapOffset = headerSize;
        var pixelsOffset = colormapOffset + colormapEntries * 12;
        if (data.Length < pixelsOffset + (long)bytesPerLine * height)
            throw new InvalidDataException("XWD file is truncated.");

        // Indexed visuals (StaticGray..PseudoColor = 0..3) look pixels up in the colormap; True/DirectColor use masks.
        Dictionary<uint, (byte R, byte G, byte B)>? colormap = null;
        if (visualClass < 4)
        {
            colormap = [];
            for (var i = 0; i < colormapEntries; i++)
            {
                var entry = data.AsSpan(colormapOffset + i * 12, 12);
                colormap[BinaryPrimitives.ReadUInt32BigEndian(entry)] =
                    (entry[4], entry[6], entry[8]); // 16-bit channels, big-endian: the high byte
            }
        }

        var bytesPerPixel = bitsPerPixel / 8;
        var rgb = new byte[width * height * 3];
        for (var y = 0; y < height; y++)
        {
            var row = data.AsSpan(pixelsOffset + y * bytesPerLine, bytesPerLine);
            for (var x = 0; x < width; x++)
            {
                var p = row.Slice(x * bytesPerPixel, bytesPerPixel);
                uint pixel = 0;
                for (var b = 0; b < bytesPerPixel; b++)
                    pixel |= (uint)p[lsbFirst ? b : bytesPerPixel - 1 - b] << (8 * b);
                var o = (y * width + x) * 3;
                if (colormap is not null)
                {
                    var (r, g, bl) = colormap.TryGetValue(pixel, out var c) ? c : default;
                    (rgb[o], rgb[o + 1], rgb[o + 2]) = (r, g, bl);
                }
                else
                {
                    rgb[o] = Channel(pixel, redMask);
                    rgb[o + 1] = Channel(pixel, greenMask);
                    rgb[o + 2] = Channel(pixel, blueMask);
                }
            }
        }
        return new RgbImage(width, height, rgb);
    }

    /// <summary>Binary PPM (P6) with 8-bit samples.</summary>
    public static RgbImage ParsePpm(byte[] data)
    {
        var position = 0;
        string Token()
        {
            while (position < data.Length && (char.IsWhiteSpace((char)data[position]) || data[position] == '#'))
            {
                if (data[position] == '#')
                    while (position < data.Length && data[position] != '\n')
                        position++;
                else
                    position++;
            }
            var start = position;
            while (position < data.Length && !char.IsWhiteSpace((char)data[position]))
                position++;
            return System.Text.Encoding.ASCII.GetString(data, start, position - start);
        }
        if (Token() != "P6")
            throw new InvalidDataException("Not a binary PPM (P6).");
        int width = int.Parse(Token()), height = int.Parse(Token()), max = int.Parse(Token());
        if (max != 255)
            throw new InvalidDataException($"PPM with maximum sample {max} is not handled.");
        position++; // the single whitespace byte before the samples
        if (data.Length - position < width * height * 3)
            throw new InvalidDataException("PPM file is truncated.");
        return new RgbImage(width, height, data.AsSpan(position, width * height * 3).ToArray());
    }

    private int Pixel(int x, int y)
    {
        var o = (y * Width + x) * 3;
        return (Rgb[o] << 16) | (Rgb[o + 1] << 8) | Rgb[o + 2];
    }

    /// <summary>
    /// Where <paramref name="part"/> appears in this image pixel for pixel (e.g. the guest's screen inside a screenshot
    /// of the desktop), or null. Candidates are anchored on the part's first pixel that differs from its top-left
    /// one, so mostly flat images are cheap.
    /// </summary>
    public (int X, int Y)? Find(RgbImage part)
    {
        if (part.Width > Width || part.Height > Height)
            return null;
        var corner = part.Pixel(0, 0);
        (int X, int Y) anchor = (0, 0);
        for (var i = 0; i < part.Width * part.Height; i++)
            if (part.Pixel(i % part.Width, i / part.Width) != corner)
            {
                anchor = (i % part.Width, i / part.Width);
                break;
            }
        var anchorColour = part.Pixel(anchor.X, anchor.Y);
        for (var y = anchor.Y; y <= Height - part.Height + anchor.Y; y++)
            for (var x = anchor.X; x <= Width - part.Width + anchor.X; x++)
            {
                if (Pixel(x, y) != anchorColour)
                    continue;
                int ox = x - anchor.X, oy = y - anchor.Y;
                if (Matches(part, ox, oy))
                    return (ox, oy);
            }
        return null;
    }

    private bool Matches(RgbImage part, int ox, int oy)
    {
        for (var y = 0; y < part.Height; y++)
            if (!Rgb.AsSpan(((oy + y) * Width + ox) * 3, part.Width * 3).SequenceEqual(part.Rgb.AsSpan(y * part.Width * 3, part.Width * 3)))
                return false;
        return true;
    }

    private static byte Channel(uint pixel, uint mask)
    {
        if (mask == 0)
            return 0;
        var shift = System.Numerics.BitOperations.TrailingZeroCount(mask);
        var bits = System.Numerics.BitOperations.PopCount(mask);
        var value = (pixel & mask) >> shift;
        return bits >= 8 ? (byte)(value >> (bits - 8)) : (byte)(value * 255 / ((1u << bits) - 1));
    }

    /// <summary>How many pixels have each colour, most frequent first.</summary>
    public List<(int Rgb, int Count)> Histogram()
    {
        var counts = new Dictionary<int, int>();
        for (var i = 0; i < Rgb.Length; i += 3)
        {
            var key = (Rgb[i] << 16) | (Rgb[i + 1] << 8) | Rgb[i + 2];
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }
        return [.. counts.Select(kv => (kv.Key, kv.Value)).OrderByDescending(c => c.Value)];
    }

    /// <summary>Pixels whose colour differs from <paramref name="rgb"/> (0xRRGGBB).</summary>
    public int PixelsOtherThan(int rgb)
    {
        var n = 0;
        for (var i = 0; i < Rgb.Length; i += 3)
            if (((Rgb[i] << 16) | (Rgb[i + 1] << 8) | Rgb[i + 2]) != rgb)
                n++;
        return n;
    }

    /// <summary>8-bit RGB PNG, filter 0 on every row (the file stays small: screens are mostly flat colour).</summary>
    public void SavePng(string path)
    {
        using var file = File.Create(path);
        file.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(0), Width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), Height);
        header[8] = 8; // bit depth
        header[9] = 2; // colour type: RGB
        WriteChunk(file, "IHDR", header);
        var raw = new MemoryStream();
        using (var z = new ZLibStream(raw, CompressionLevel.Optimal, leaveOpen: true))
        {
            for (var y = 0; y < Height; y++)
            {
                z.WriteByte(0);
                z.Write(Rgb, y * Width * 3, Width * 3);
            }
        }
        WriteChunk(file, "IDAT", raw.ToArray());
        WriteChunk(file, "IEND", []);
    }

    private static void WriteChunk(Stream s, string type, byte[] payload)
    {
        var buffer = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(buffer, payload.Length);
        s.Write(buffer);
        var typeBytes = System.Text.Encoding.ASCII.GetBytes(type);
        s.Write(typeBytes);
        s.Write(payload);
        BinaryPrimitives.WriteUInt32BigEndian(buffer, Crc32(typeBytes, payload));
        s.Write(buffer);
    }

    private static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
    {
        var c = (uint)n;
        for (var k = 0; k < 8; k++)
            c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    private static uint Crc32(byte[] a, byte[] b)
    {
        var c = 0xFFFFFFFFu;
        foreach (var part in (byte[][])[a, b])
            foreach (var x in part)
                c = CrcTable[(c ^ x) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }
}
