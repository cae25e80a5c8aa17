using System.Globalization;
using Isr.Client.Transfer;
using Isr.Format;

/// <summary>
/// Storage cost of successive memory images (raw QEMU migration streams, what isr stores at each suspend), with the
/// product's own capture path: <see cref="MemoryImage.CaptureAsync"/> cuts and encodes each image, its blobs go into
/// one store model (convergent tags: a blob already stored by any earlier image is not stored again), and the chunk
/// list pages <see cref="ChunkListTree.Build"/> writes for the image are counted the same way. Other FastCDC
/// parameters, and a chunking aligned to the stream's page records (<see cref="MigrationPages.AlignedChunks"/>), can be
/// weighed next to the format's; fixed 64 KiB block differencing (same offset in the previous image) is the simple
/// reference, page differencing by guest address (<see cref="PageDiff"/>) the page-granular one.
/// Usage: Isr.Bench.Storage --memory OUT.tsv [--cdc MIN:AVG:MAX,...] [--aligned PAGES,...] IMAGE1 IMAGE2 ...
///   (--cdc sizes in KiB, default the format's 16:64:256; --aligned: average pages per chunk, default none)
/// </summary>
internal static class MemorySeries
{
    private const int BlockDiffSize = 64 << 10;

    /// <summary>One way of cutting an image into chunks: encodes each (through the callback) and returns the refs.</summary>
    private delegate Task<IReadOnlyList<ChunkRef>> Capture(byte[] image, ChunkCodec codec, Func<ChunkTag, byte[], CancellationToken, ValueTask> store);

    public static async Task<int> RunAsync(string[] args)
    {
        var rest = args.ToList();
        string? Option(string name)
        {
            int i = rest.IndexOf(name);
            if (i < 0) return null;
            var value = rest[i + 1];
            rest.RemoveRange(i, 2);
            return value;
        }
        var schemes = new List<(string Name, Capture Capture)>();
        foreach (var spec in (Option("--cdc") ?? "16:64:256").Split(','))
        {
            var c = ParseChunker(spec);
            schemes.Add(($"cdc{c.MinSize >> 10}-{c.AverageSize >> 10}-{c.MaxSize >> 10}",
                (image, codec, store) => MemoryImage.CaptureAsync(new MemoryStream(image, writable: false), codec, store, CancellationToken.None, c)));
        }
        foreach (var spec in Option("--aligned")?.Split(',') ?? [])
        {
            int pages = int.Parse(spec, CultureInfo.InvariantCulture);
            schemes.Add(($"aligned{pages}p", async (image, codec, store) =>
            {
                var refs = new List<ChunkRef>();
                foreach (var (offset, length) in MigrationPages.AlignedChunks(image, pages))
                {
                    var (chunk, blob) = codec.Encode(image.AsSpan(offset, length));
                    await store(chunk.Tag, blob, CancellationToken.None);
                    refs.Add(chunk);
                }
                return refs;
            }));
        }
        if (rest.Count < 2) { Console.Error.WriteLine("usage: Isr.Bench.Storage --memory OUT.tsv [--cdc MIN:AVG:MAX,...] [--aligned PAGES,...] IMAGE..."); return 2; }
        var images = rest.Skip(1).ToList();
        var codec = new ChunkCodec(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
        var keys = ParcelKeys.Generate();
        var stores = schemes.Select(_ => (Blobs: new HashSet<ChunkTag>(), Pages: new HashSet<ChunkTag>())).ToArray();

        using var output = new StreamWriter(rest[0]);
        output.WriteLine("version\timage\tstream_bytes\t" + string.Join('\t', schemes.Select(s => $"{s.Name}_chunks\t{s.Name}_blobs\t{s.Name}_pages"))
            + "\tblock64k_raw\tblock64k_zstd1\tchanged64k_blocks\tpagediff_zstd1\tchanged_pages\tram_pages");
        var pageDiff = new PageDiff();
        for (int v = 0; v < images.Count; v++)
        {
            var t0 = DateTime.UtcNow;
            var image = await File.ReadAllBytesAsync(images[v]);
            var row = new List<long> { v + 1, image.Length };
            for (int s = 0; s < schemes.Count; s++)
            {
                var (blobs, pages) = stores[s];
                long added = 0, pageBytes = 0;
                var refs = await schemes[s].Capture(image, codec, (tag, blob, _) =>
                {
                    lock (blobs) if (blobs.Add(tag)) added += blob.Length;
                    return ValueTask.CompletedTask;
                });
                if (refs.Sum(r => (long)r.Length) != image.Length) throw new InvalidOperationException($"{schemes[s].Name} lost bytes of {images[v]}");
                foreach (var (tag, page) in ChunkListTree.Build(refs, keys).NewPages)
                    if (pages.Add(tag)) pageBytes += page.Length;
                row.AddRange([refs.Count, added, pageBytes]);
            }
            var blocks = BlockDifference(images[v], v > 0 ? images[v - 1] : null);
            var byPage = pageDiff.Add(image);
            row.AddRange([blocks.Raw, blocks.Zstd, blocks.Blocks, byPage.Bytes, byPage.ChangedPages, byPage.Pages]);
            var cells = row.Select(n => n.ToString(CultureInfo.InvariantCulture)).ToList();
            cells.Insert(1, Path.GetFileName(images[v]));
            output.WriteLine(string.Join('\t', cells));
            output.Flush();
            Console.Error.WriteLine($"{cells[1]}: {string.Join(' ', cells.Skip(2))} ({(DateTime.UtcNow - t0).TotalSeconds:F0} s)");
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
}
