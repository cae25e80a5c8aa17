using System.Collections.Concurrent;
using System.Globalization;
using Isr.Format;

// Storage cost of a series of disk image versions (raw, same size), in one pass per version:
//  - isr's chunk store at several chunk sizes: what committing each version as the next version of one parcel adds to
//    the store, computed with the real format code: ChunkCodec.Encode (convergent: equal plaintext -> equal blob, stored
//    once) for every non-zero chunk that differs from the previous version, plus the keyring pages ChunkListTree.Build /
//    UpdateAsync writes. Zero chunks are never stored. Version records (~1 KiB each) are not counted.
//  - fixed 64 KiB block differencing: the non-zero blocks that differ from the previous version, raw and zstd-1.
// Usage: Isr.Bench.Storage OUT.tsv IMAGE1 IMAGE2 ...   (one TSV row per version: bytes added)
//        Isr.Bench.Storage --memory ...                 (memory images: see MemorySeries.cs)
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (args.Length > 0 && args[0] == "--memory") return await MemorySeries.RunAsync(args[1..]);
if (args.Length < 2) { Console.Error.WriteLine("usage: Isr.Bench.Storage OUT.tsv IMAGE... | --memory ..."); return 2; }
string outPath = args[0];
var images = args[1..];
int[] sizes = [16 << 10, 64 << 10, 256 << 10];
const int BlockDiffSize = 64 << 10;
var codec = new ChunkCodec(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
var keys = ParcelKeys.Generate();

var states = sizes.Select(s => new IsrState(s)).ToArray();
using var output = new StreamWriter(outPath);
output.WriteLine("version\timage\t" + string.Join('\t', sizes.Select(s => $"isr{s >> 10}k_blobs\tisr{s >> 10}k_pages")) + "\tblock64k_raw\tblock64k_zstd1\tchanged64k_blocks");
string? previous = null;
for (int v = 0; v < images.Length; v++)
{
    var t0 = DateTime.UtcNow;
    string image = images[v];
    long length; using (var probe = File.OpenRead(image)) length = probe.Length; // follows symlinks, unlike FileInfo
    // Block differencing (64 KiB) and the changed-chunk maps for every isr chunk size, from one read of both images.
    var blocks = new BlockDiff(BlockDiffSize);
    const int Window = 4 << 20; // multiple of every chunk size
    var cur = new byte[Window];
    var prev = new byte[Window];
    var changes = states.Select(_ => new Dictionary<long, ChunkRef>()).ToArray();
    var added = new long[states.Length];
    using (var fc = File.OpenRead(image))
    using (var fp = previous is null ? null : File.OpenRead(previous))
    {
        for (long off = 0; off < length; off += Window)
        {
            int n = fc.ReadAtLeast(cur, Window, throwOnEndOfStream: false);
            if (fp is not null) fp.ReadAtLeast(prev, Window, throwOnEndOfStream: false); else Array.Clear(prev);
            if (n == 0) break;
            blocks.Add(cur.AsSpan(0, n), prev.AsSpan(0, n));
            for (int s = 0; s < states.Length; s++)
            {
                var st = states[s];
                // Encode changed chunks in parallel (2 workers), then add them to the store model in order.
                var work = new List<(long Index, int Offset, int Len)>();
                for (int b = 0; b < n; b += st.ChunkSize)
                {
                    int len = Math.Min(st.ChunkSize, n - b);
                    if (st.Refs is not null && cur.AsSpan(b, len).SequenceEqual(prev.AsSpan(b, len))) continue;
                    work.Add(((off + b) / st.ChunkSize, b, len));
                }
                var encoded = new (ChunkRef Ref, int BlobLength)[work.Count];
                Parallel.For(0, work.Count, new ParallelOptions { MaxDegreeOfParallelism = 2 }, i =>
                {
                    var (_, o, l) = work[i];
                    var span = cur.AsSpan(o, l);
                    if (ChunkCodec.IsAllZero(span)) { encoded[i] = (ChunkRef.Zero(l), 0); return; }
                    var (r, blob) = codec.Encode(span);
                    encoded[i] = (r, blob.Length);
                });
                for (int i = 0; i < work.Count; i++)
                {
                    var (r, blobLength) = encoded[i];
                    if (!r.IsZeroChunk && st.Blobs.Add(r.Tag)) added[s] += blobLength;
                    changes[s][work[i].Index] = r;
                }
            }
        }
    }
    var row = new List<string> { (v + 1).ToString(), Path.GetFileName(image) };
    for (int s = 0; s < states.Length; s++)
    {
        var st = states[s];
        long chunks = (length + st.ChunkSize - 1) / st.ChunkSize;
        TreeUpdate tree;
        if (st.Refs is null)
        {
            var refs = new ChunkRef[chunks];
            for (long i = 0; i < chunks; i++) refs[i] = changes[s].TryGetValue(i, out var r) ? r : ChunkRef.Zero((int)Math.Min(st.ChunkSize, length - i * st.ChunkSize));
            st.Refs = refs;
            tree = ChunkListTree.Build(refs, keys);
        }
        else
        {
            // Only entries whose ref changed (a chunk rewritten with the same bytes is not a change).
            var real = changes[s].Where(kv => kv.Value != st.Refs[kv.Key]).ToDictionary(kv => kv.Key, kv => kv.Value);
            tree = await ChunkListTree.UpdateAsync(st.Root, chunks, real, (tag, _) => ValueTask.FromResult(st.Pages[tag]), keys, CancellationToken.None);
            foreach (var (i, r) in real) st.Refs[i] = r;
        }
        long pageBytes = 0;
        foreach (var (tag, page) in tree.NewPages)
            if (st.Pages.TryAdd(tag, page)) pageBytes += page.Length;
        st.Root = tree.Root;
        row.Add(added[s].ToString());
        row.Add(pageBytes.ToString());
    }
    row.Add(blocks.Raw.ToString());
    row.Add(blocks.Zstd.ToString());
    row.Add(blocks.Blocks.ToString());
    output.WriteLine(string.Join('\t', row));
    output.Flush();
    Console.Error.WriteLine($"v{v + 1} {Path.GetFileName(image)}: " + string.Join(' ', row.Skip(2)) + $" ({(DateTime.UtcNow - t0).TotalSeconds:F0} s)");
    previous = image;
}
return 0;

internal sealed class IsrState(int chunkSize)
{
    public int ChunkSize { get; } = chunkSize;
    public HashSet<ChunkTag> Blobs { get; } = [];
    public Dictionary<ChunkTag, byte[]> Pages { get; } = [];
    public ChunkRef[]? Refs { get; set; }
    public ChunkTag Root { get; set; }
}
