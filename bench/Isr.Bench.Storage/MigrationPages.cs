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

    /// <summary>Non-zero pages as (block ‖ guest address) → offset of the page's bytes in <paramref name="stream"/>,
    /// and where the RAM sections end (the device state follows).</summary>
    public static (Dictionary<string, int> Pages, int RamEnd) Parse(ReadOnlySpan<byte> stream)
    {
        if (stream.Length < 8 || !stream[..4].SequenceEqual("QEVM"u8)) throw new InvalidDataException("not a QEMU migration stream");
        var pages = new Dictionary<string, int>();
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
                if ((flags & FlagZero) != 0) pos += 1;
                else if ((flags & FlagPage) != 0) { pages[$"{block}:{addr:x}"] = pos; pos += PageSize; }
                else throw new InvalidDataException($"RAM record with flags 0x{flags:x} at {pos - 8}: not a plain stream");
            }
        }
        return (pages, pos);
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
        var (pages, ramEnd) = MigrationPages.Parse(stream);
        var hashes = new Dictionary<string, UInt128>(pages.Count);
        Span<byte> digest = stackalloc byte[32];
        long bytes = 0;
        int changed = 0;
        foreach (var (key, offset) in pages)
        {
            var page = stream.AsSpan(offset, MigrationPages.PageSize);
            System.Security.Cryptography.SHA256.HashData(page, digest);
            var hash = BinaryPrimitives.ReadUInt128LittleEndian(digest);
            hashes[key] = hash;
            if (_previous.TryGetValue(key, out var old) && old == hash) continue;
            changed++;
            bytes += Math.Min(page.Length, _zstd.Wrap(page).Length);
        }
        bytes += _zstd.Wrap(stream.AsSpan(ramEnd)).Length;
        _previous = hashes;
        return (bytes, changed, pages.Count);
    }
}
