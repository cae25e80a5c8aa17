using System.Globalization;
using Isr.Client.Transfer;
using Isr.Format;

/// <summary>
/// Storage cost of successive memory images (raw QEMU migration streams, what isr stores at each suspend), with the
/// product's own capture path: <see cref="MemoryImage.CaptureAsync"/> cuts and encodes each image, its blobs go into
/// one store model (convergent tags: a blob already stored by any earlier image is not stored again), and the chunk
/// list pages <see cref="ChunkListTree.Build"/> writes for the image are counted the same way. Other chunker
/// parameters can be weighed next to the format's; fixed 64 KiB block differencing (same offset in the previous
/// image) is the simple reference, page differencing by guest address (<see cref="PageDiff"/>) the page-granular bound.
/// Usage: Isr.Bench.Storage --memory OUT.tsv [--cdc MIN:AVG:MAX,...] IMAGE1 IMAGE2 ...   (sizes in KiB; default the format's)
/// </summary>
internal static class MemorySeries
{
    private const int BlockDiffSize = 64 << 10;

    public static async Task<int> RunAsync(string[] args)
    {
        var rest = args.ToList();
        var chunkers = new List<FastCdc> { new() };
        int cdc = rest.IndexOf("--cdc");
        if (cdc >= 0)
        {
            chunkers = rest[cdc + 1].Split(',').Select(ParseChunker).ToList();
            rest.RemoveRange(cdc, 2);
        }
        if (rest.Count < 2) { Console.Error.WriteLine("usage: Isr.Bench.Storage --memory OUT.tsv [--cdc MIN:AVG:MAX,...] IMAGE..."); return 2; }
        var images = rest.Skip(1).ToList();
        var codec = new ChunkCodec(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
        var keys = ParcelKeys.Generate();
        var stores = chunkers.Select(_ => (Blobs: new HashSet<ChunkTag>(), Pages: new HashSet<ChunkTag>())).ToArray();

        using var output = new StreamWriter(rest[0]);
        output.WriteLine("version\timage\tstream_bytes\t" + string.Join('\t', chunkers.Select(c => $"{Name(c)}_chunks\t{Name(c)}_blobs\t{Name(c)}_pages"))
            + "\tblock64k_raw\tblock64k_zstd1\tchanged64k_blocks\tpagediff_zstd1\tchanged_pages\tram_pages");
        var pageDiff = new PageDiff();
        for (int v = 0; v < images.Count; v++)
        {
            var t0 = DateTime.UtcNow;
            long length; using (var probe = File.OpenRead(images[v])) length = probe.Length;
            var row = new List<string> { (v + 1).ToString(CultureInfo.InvariantCulture), Path.GetFileName(images[v]), length.ToString(CultureInfo.InvariantCulture) };
            for (int c = 0; c < chunkers.Count; c++)
            {
                var (blobs, pages) = stores[c];
                long added = 0, pageBytes = 0;
                IReadOnlyList<ChunkRef> refs;
                await using (var source = File.OpenRead(images[v]))
                    refs = await MemoryImage.CaptureAsync(source, codec, (tag, blob, _) =>
                    {
                        lock (blobs) if (blobs.Add(tag)) added += blob.Length;
                        return ValueTask.CompletedTask;
                    }, CancellationToken.None, chunkers[c]);
                foreach (var (tag, page) in ChunkListTree.Build(refs, keys).NewPages)
                    if (pages.Add(tag)) pageBytes += page.Length;
                row.AddRange([refs.Count.ToString(CultureInfo.InvariantCulture), added.ToString(CultureInfo.InvariantCulture), pageBytes.ToString(CultureInfo.InvariantCulture)]);
            }
            var blocks = BlockDifference(images[v], v > 0 ? images[v - 1] : null);
            var byPage = pageDiff.Add(await File.ReadAllBytesAsync(images[v]));
            row.AddRange(new long[] { blocks.Raw, blocks.Zstd, blocks.Blocks, byPage.Bytes, byPage.ChangedPages, byPage.Pages }.Select(n => n.ToString(CultureInfo.InvariantCulture)));
            output.WriteLine(string.Join('\t', row));
            output.Flush();
            Console.Error.WriteLine($"{row[1]}: {string.Join(' ', row.Skip(2))} ({(DateTime.UtcNow - t0).TotalSeconds:F0} s)");
        }
        return 0;
    }

    private static BlockDiff BlockDifference(string image, string? previous)
    {
        var blocks = new BlockDiff(BlockDiffSize);
        const int Window = 4 << 20;
        var cur = new byte[Window];
        var prev = new byte[Window];
        using var fc = File.OpenRead(image);
        using var fp = previous is null ? null : File.OpenRead(previous);
        while (true)
        {
            int n = fc.ReadAtLeast(cur, Window, throwOnEndOfStream: false);
            if (n == 0) return blocks;
            int p = fp?.ReadAtLeast(prev, Window, throwOnEndOfStream: false) ?? 0;
            blocks.Add(cur.AsSpan(0, n), prev.AsSpan(0, p));
        }
    }

    private static FastCdc ParseChunker(string spec)
    {
        var kib = spec.Split(':').Select(s => int.Parse(s, CultureInfo.InvariantCulture) << 10).ToArray();
        if (kib.Length != 3) throw new ArgumentException($"--cdc wants MIN:AVG:MAX in KiB, not '{spec}'");
        return new FastCdc(kib[0], kib[1], kib[2]);
    }

    private static string Name(FastCdc c) => $"cdc{c.MinSize >> 10}-{c.AverageSize >> 10}-{c.MaxSize >> 10}";
}
