using System.Buffers.Binary;

/// <summary>
/// The RAM pages of a raw QEMU migration stream (QEMU 7.x, "ram" section, no capabilities set: what isr saves), for a
/// page-granular reference: which guest pages changed since the previous image, by guest address. Not isr's format;
/// it bounds what any chunking of the stream could store.
/// </summary>
internal static class MigrationPages
{
    // Section types and RAM record flags (QEMU migration/savevm.c, migration/ram.c).
    private const byte SectionStart = 1, SectionPart = 2, SectionEnd = 3, SectionFull = 4, Configuration = 7, SectionFooter = 0x7e;
    private const ulong FlagZero = 0x02, FlagMemSize = 0x04, FlagPage = 0x08, FlagEos = 0x10, FlagContinue = 0x20;
    public const int PageSize = 4096;

    /// <summary>One RAM record: a non-zero page (<see cref="Page"/>: offset of its 4 KiB) or a zero page (-1), and where it ends.</summary>
    public readonly record struct Record(string Key, int Page, int End);

    /// <summary>The RAM records of <paramref name="stream"/> in stream order (key = block ‖ guest address), and where
    /// the RAM sections end (the device state follows).</summary>
    public static (List<Record> Records, int RamEnd) Parse(ReadOnlySpan<byte> stream)
    {
        if (stream.Length < 8 || !stream[..4].SequenceEqual("QEVM"u8)) throw new InvalidDataException("not a QEMU migration stream");
        var pages = new List<Record>();
        int pos = 8;
        uint? ram = null;
        string block = "";
        while (pos < stream.Length)
        {
            int sectionAt = pos;
            byte type = stream[pos++];
            if (type is SectionStart or SectionFull)
            {
                uint id = BinaryPrimitives.ReadUInt32BigEndian(stream[pos..]);
                int len = stream[pos + 4];
                string name = System.Text.Encoding.ASCII.GetString(stream.Slice(pos + 5, len));
                if (name != "ram") return (pages, sectionAt);
                ram = id;
                pos += 5 + len + 8; // instance, version
            }
            else if (type is SectionPart or SectionEnd)
            {
                if (BinaryPrimitives.ReadUInt32BigEndian(stream[pos..]) != ram) return (pages, sectionAt);
                pos += 4;
            }
            else if (type == SectionFooter) { pos += 4; continue; }
            else if (type == Configuration) { pos += 4 + (int)BinaryPrimitives.ReadUInt32BigEndian(stream[pos..]); continue; }
            else return (pages, sectionAt);
            while (true)
            {
                ulong header = BinaryPrimitives.ReadUInt64BigEndian(stream[pos..]);
                pos += 8;
                ulong flags = header & 0xfff, addr = header & ~0xfffUL;
                if ((flags & FlagMemSize) != 0)
                {
                    for (long left = (long)addr; left > 0;) // the block list: name, used length
                    {
                        int len = stream[pos];
                        left -= (long)BinaryPrimitives.ReadUInt64BigEndian(stream[(pos + 1 + len)..]);
                        pos += 1 + len + 8;
                    }
                    continue;
                }
                if ((flags & FlagEos) != 0) break;
                if ((flags & FlagContinue) == 0)
                {
                    int len = stream[pos];
                    block = System.Text.Encoding.ASCII.GetString(stream.Slice(pos + 1, len));
                    pos += 1 + len;
                }
                if ((flags & FlagZero) != 0) { pos += 1; pages.Add(new($"{block}:{addr:x}", -1, pos)); }
                else if ((flags & FlagPage) != 0) { pages.Add(new($"{block}:{addr:x}", pos, pos + PageSize)); pos += PageSize; }
                else throw new InvalidDataException($"RAM record with flags 0x{flags:x} at {pos - 8}: not a plain stream");
            }
        }
        return (pages, pos);
    }

    public static UInt128 Hash(ReadOnlySpan<byte> page)
    {
        Span<byte> digest = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(page, digest);
        return BinaryPrimitives.ReadUInt128LittleEndian(digest);
    }

    /// <summary>
    /// A chunking aligned to the page records (an alternative weighed by the benchmark, not the format): cuts only where
    /// a RAM record ends, after a non-zero page whose content hash picks it (1 in <paramref name="averagePages"/>),
    /// with at least a quarter and at most 4× that many pages per chunk; the device state after the RAM with FastCDC.
    /// A changed page then dirties only the chunk it is in, and chunk boundaries never move with the bytes around them.
    /// </summary>
    public static List<(int Offset, int Length)> AlignedChunks(byte[] stream, int averagePages)
    {
        var (records, ramEnd) = Parse(stream);
        var chunks = new List<(int, int)>();
        int start = 0, pages = 0, minPages = Math.Max(1, averagePages / 4), maxPages = averagePages * 4;
        foreach (var (_, page, end) in records)
        {
            bool cut = false;
            if (page >= 0)
            {
                pages++;
                cut = pages >= maxPages || (pages >= minPages && Hash(stream.AsSpan(page, PageSize)) % (ulong)averagePages == 0);
            }
            if (cut || end - start >= maxPages * (PageSize + 8))
            {
                chunks.Add((start, end - start));
                (start, pages) = (end, 0);
            }
        }
        var cdc = new Isr.Format.FastCdc();
        while (start < stream.Length)
        {
            int end = start < ramEnd ? ramEnd : stream.Length;
            int n = start < ramEnd ? end - start : cdc.Cut(stream.AsSpan(start));
            chunks.Add((start, n));
            start += n;
        }
        return chunks;
    }
}

/// <summary>Page-granular differencing of successive streams: each non-zero guest page whose content differs from the
/// same address in the previous image, zstd-1 on its own, plus the device state after the RAM, compressed whole.</summary>
internal sealed class PageDiff
{
    private readonly ZstdSharp.Compressor _zstd = new(1);
    private Dictionary<string, UInt128> _previous = [];

    public (long Bytes, int ChangedPages, int Pages) Add(byte[] stream)
    {
        var (records, ramEnd) = MigrationPages.Parse(stream);
        var hashes = new Dictionary<string, UInt128>(records.Count);
        long bytes = 0;
        int changed = 0;
        foreach (var (key, offset, _) in records)
        {
            if (offset < 0) continue;
            var page = stream.AsSpan(offset, MigrationPages.PageSize);
            var hash = MigrationPages.Hash(page);
            hashes[key] = hash;
            if (_previous.TryGetValue(key, out var old) && old == hash) continue;
            changed++;
            bytes += Math.Min(page.Length, _zstd.Wrap(page).Length);
        }
        bytes += _zstd.Wrap(stream.AsSpan(ramEnd)).Length;
        _previous = hashes;
        return (bytes, changed, hashes.Count);
    }
}
