using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Isr.Format;
using ZstdSharp;

// Per-core throughput of the chunk write pipeline (ChunkCodec.Encode: HMAC-SHA256 key, zstd-1, AES-256-GCM, SHA-256 tag)
// and read pipeline (ChunkCodec.Decode), next to each primitive alone, at several chunk sizes, in one run, on one thread.
// Usage: Isr.Bench.DataPath [--data IMAGE] [--mib N] [--seconds S] [--reps R] [--out FILE.md]
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
string? dataPath = null;
int sampleMiB = 64;
double seconds = 0.6;
int reps = 3;
string outPath = Path.Combine("docs", "benchmarks", "datapath.md");
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--data": dataPath = args[++i]; break;
        case "--mib": sampleMiB = int.Parse(args[++i]); break;
        case "--seconds": seconds = double.Parse(args[++i]); break;
        case "--reps": reps = int.Parse(args[++i]); break;
        case "--out": outPath = args[++i]; break;
        default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
    }
}
int[] chunkSizes = [4 << 10, 16 << 10, 64 << 10, 256 << 10];
const int Block = 256 << 10;

var (data, dataDescription) = dataPath != null ? Data.FromImage(dataPath, sampleMiB, Block) : Data.Synthetic(sampleMiB, Block);
Console.Error.WriteLine($"data: {dataDescription}");

var secret = RandomNumberGenerator.GetBytes(32);
var codec = new ChunkCodec(secret);
var rows = new List<Row>();
var sw = Stopwatch.StartNew();

foreach (int size in chunkSizes)
{
    // Chunks: consecutive pieces of the sample, all-zero ones skipped (ChunkCodec never sees them).
    var chunks = new List<byte[]>();
    for (int off = 0; off + size <= data.Length; off += size)
    {
        var c = data.AsSpan(off, size);
        if (!ChunkCodec.IsAllZero(c)) chunks.Add(c.ToArray());
    }
    long plainBytes = chunks.Sum(c => (long)c.Length);
    var encoded = chunks.Select(c => codec.Encode(c)).ToArray();
    long blobBytes = encoded.Sum(e => (long)e.Blob.Length);
    // Inputs the pipeline hands to each primitive: compressed body (for AES) and blob (for the tag hash).
    var compressor = new Compressor(Zstd1Level.Value);
    var decompressor = new Decompressor();
    var bodies = chunks.Select(c => compressor.Wrap(c).ToArray()).Select((b, i) => b.Length < chunks[i].Length ? b : chunks[i]).ToArray();
    var keys = chunks.Select(c => HMACSHA256.HashData(secret, c)).ToArray();
    var aesOut = bodies.Select(b => new byte[b.Length]).ToArray();
    var tags = bodies.Select(b => new byte[16]).ToArray();
    var sealedBodies = new byte[bodies.Length][];
    for (int i = 0; i < bodies.Length; i++)
    {
        using var aes = new AesGcm(keys[i], 16);
        aes.Encrypt(new byte[12], bodies[i], aesOut[i], tags[i]);
        sealedBodies[i] = (byte[])aesOut[i].Clone();
    }
    var plainOut = new byte[size];
    var scratch = new byte[Compressor.GetCompressBound(size)];
    var digest = new byte[32];
    var nonce = new byte[12];
    var compressedFlags = bodies.Select((b, i) => b.Length < chunks[i].Length).ToArray();

    double Measure(string what, Action<int> op)
    {
        // One warm-up pass, then reps timed runs of >= seconds each; throughput in plaintext bytes per second.
        for (int i = 0; i < chunks.Count; i++) op(i);
        var results = new List<double>();
        var wallResults = new List<double>();
        for (int r = 0; r < reps; r++)
        {
            long bytes = 0;
            var (wall, cpu) = Clock.Start();
            do
            {
                for (int i = 0; i < chunks.Count; i++) { op(i); bytes += chunks[i].Length; }
            } while (Clock.CpuSeconds(cpu) < seconds && wall.Elapsed.TotalSeconds < 20 * seconds);
            results.Add(bytes / Clock.CpuSeconds(cpu));
            wallResults.Add(bytes / wall.Elapsed.TotalSeconds);
        }
        results.Sort();
        wallResults.Sort();
        double median = results[results.Count / 2];
        Console.Error.WriteLine($"{size >> 10,4} KiB {what,-28} {median / 1e9,7:F3} GB/s per CPU-second ({wallResults[wallResults.Count / 2] / 1e9:F3} wall)");
        return median;
    }

    // Primitives on the plaintext chunk (GB/s of plaintext).
    double sha = Measure("SHA-256(plain)", i => SHA256.HashData(chunks[i], digest));
    double hmac = Measure("HMAC-SHA256(plain)", i => HMACSHA256.HashData(secret, chunks[i], digest));
    double aesEncPlain = Measure("AES-GCM enc(plain)+key", i =>
    {
        using var aes = new AesGcm(keys[i], 16);
        aes.Encrypt(nonce, chunks[i], plainOut.AsSpan(0, chunks[i].Length), tags[i]);
    });
    var plainSealed = new byte[chunks.Count][];
    var plainTags = new byte[chunks.Count][];
    for (int i = 0; i < chunks.Count; i++)
    {
        plainSealed[i] = new byte[chunks[i].Length];
        plainTags[i] = new byte[16];
        using var aes = new AesGcm(keys[i], 16);
        aes.Encrypt(nonce, chunks[i], plainSealed[i], plainTags[i]);
    }
    double aesDecPlain = Measure("AES-GCM dec(plain)+key", i =>
    {
        using var aes = new AesGcm(keys[i], 16);
        aes.Decrypt(nonce, plainSealed[i], plainTags[i], plainOut.AsSpan(0, chunks[i].Length));
    });
    double zc = Measure("zstd-1 compress", i => compressor.Wrap(chunks[i], scratch));
    double zd = Measure("zstd decompress", i =>
    {
        if (compressedFlags[i]) decompressor.Unwrap(bodies[i], plainOut);
    });
    // The primitives as the pipeline uses them: AES over the compressed body, SHA-256 over the blob.
    double aesEncBody = Measure("AES-GCM enc(body)+key", i =>
    {
        using var aes = new AesGcm(keys[i], 16);
        aes.Encrypt(nonce, bodies[i], aesOut[i], tags[i]);
    });
    double aesDecBody = Measure("AES-GCM dec(body)+key", i =>
    {
        using var aes = new AesGcm(keys[i], 16);
        aes.Decrypt(nonce, sealedBodies[i], tags[i], aesOut[i]);
    });
    double shaBlob = Measure("SHA-256(blob)", i => SHA256.HashData(encoded[i].Blob, digest));
    // zstd decompress counts only compressed chunks; stored ones cost a copy (ignored, as in the sum).
    double write = Measure("write pipeline (Encode)", i => codec.Encode(chunks[i]));
    double read = Measure("read pipeline (Decode)", i => codec.Decode(encoded[i].Blob, encoded[i].Ref, plainOut));
    double writeSum = 1 / (1 / hmac + 1 / zc + 1 / aesEncBody + 1 / shaBlob);
    double readSum = 1 / (1 / shaBlob + 1 / aesDecBody + 1 / zd + 1 / hmac);
    rows.Add(new Row(size, chunks.Count, plainBytes, blobBytes, sha, hmac, aesEncPlain, aesDecPlain, zc, zd,
        aesEncBody, aesDecBody, shaBlob, write, writeSum, read, readSum));
}

// FastCDC over the whole sample, contiguous (zero blocks included, as a memory image would be).
double cdc;
{
    var cdcChunker = new FastCdc();
    int count = 0;
    var results = new List<double>();
    for (int r = 0; r <= reps; r++)
    {
        long bytes = 0;
        var (wall, cpu) = Clock.Start();
        do
        {
            count = 0;
            var span = data.AsSpan();
            while (span.Length > 0) { int cut = cdcChunker.Cut(span); span = span[cut..]; count++; }
            bytes += data.Length;
        } while (Clock.CpuSeconds(cpu) < seconds && wall.Elapsed.TotalSeconds < 20 * seconds);
        if (r > 0) results.Add(bytes / Clock.CpuSeconds(cpu));
    }
    results.Sort();
    cdc = results[results.Count / 2];
    Console.Error.WriteLine($"FastCdc (16/64/256 KiB) {cdc / 1e9:F3} GB/s, {count} chunks, mean {data.Length / count / 1024} KiB");
}
Console.Error.WriteLine($"total {sw.Elapsed.TotalSeconds:F0} s");

string G(double bps) => (bps / 1e9).ToString("F3", CultureInfo.InvariantCulture);
var md = new StringBuilder();
md.AppendLine("# Data path: chunk pipelines and primitives, per core");
md.AppendLine();
md.AppendLine($"Measured {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC by `bench/Isr.Bench.DataPath` on one thread; nproc = {Environment.ProcessorCount}, " +
              $"{System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}. " +
              "The host is shared with other jobs (load average " + LoadAverage() + " at the end of the run): throughput is therefore " +
              "computed from this process's **CPU time** (`Environment.CpuUsage`), not wall time, i.e. bytes per CPU-second of one core; " +
              "contention for caches and memory bandwidth still adds noise (±20%).");
md.AppendLine();
md.AppendLine("Command (from the repository root):");
md.AppendLine();
md.AppendLine("```sh");
md.AppendLine("dotnet run -c Release --project bench/Isr.Bench.DataPath -- " + string.Join(' ', args.Select(a => a.StartsWith('/') ? Path.GetFileName(a) : a)));
md.AppendLine("```");
md.AppendLine();
md.AppendLine($"Data: {dataDescription}. Each chunk size cuts the sample into consecutive chunks; all-zero chunks are skipped " +
              "(the client never encodes them). Every figure is **GB/s of plaintext** (10^9 bytes/s), the median of " +
              $"{reps} timed runs of ≥{seconds} s each after a warm-up pass.");
md.AppendLine();
md.AppendLine("## Pipelines vs the sum of their primitives");
md.AppendLine();
md.AppendLine("*sum* = 1 / Σ(1/primitive) for the primitives the pipeline runs, each measured alone on the inputs the pipeline " +
              "gives it: write = HMAC-SHA256(plain) + zstd-1 compress + AES-256-GCM encrypt(compressed body, incl. per-chunk key setup) " +
              "+ SHA-256(blob); read = SHA-256(blob) + AES-GCM decrypt(body) + zstd decompress + HMAC-SHA256(plain) (the key check). " +
              "*ratio* = pipeline / sum (1.00 = no overhead beyond the primitives).");
md.AppendLine();
md.AppendLine("| chunk | chunks | blob/plain | write pipeline | write sum | write ratio | read pipeline | read sum | read ratio |");
md.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
foreach (var r in rows)
    md.AppendLine($"| {r.Size >> 10} KiB | {r.Chunks} | {(double)r.BlobBytes / r.PlainBytes:F3} | {G(r.Write)} | {G(r.WriteSum)} | {r.Write / r.WriteSum:F2} | {G(r.Read)} | {G(r.ReadSum)} | {r.Read / r.ReadSum:F2} |");
md.AppendLine();
md.AppendLine("## Primitives alone");
md.AppendLine();
md.AppendLine("On the plaintext chunks (AES-GCM includes creating the `AesGcm` object with the chunk's key, as the pipeline must), and, " +
              "in the last three columns, on the inputs the pipeline actually gives them (compressed body, blob), still in GB/s of plaintext.");
md.AppendLine();
md.AppendLine("| chunk | SHA-256 | HMAC-SHA256 | AES-GCM enc | AES-GCM dec | zstd-1 comp | zstd decomp | AES enc (body) | AES dec (body) | SHA-256 (blob) |");
md.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
foreach (var r in rows)
    md.AppendLine($"| {r.Size >> 10} KiB | {G(r.Sha)} | {G(r.Hmac)} | {G(r.AesEnc)} | {G(r.AesDec)} | {G(r.ZstdC)} | {G(r.ZstdD)} | {G(r.AesEncBody)} | {G(r.AesDecBody)} | {G(r.ShaBlob)} |");
md.AppendLine();
md.AppendLine("zstd decompress counts the plaintext of every chunk but only decompresses those stored compressed " +
              "(incompressible chunks are stored raw and cost a copy in the read pipeline).");
md.AppendLine();
md.AppendLine($"## FastCDC");
md.AppendLine();
md.AppendLine($"`FastCdc` (min 16, average 64, max 256 KiB) over the whole sample as one stream: **{G(cdc)} GB/s**.");
md.AppendLine();
md.AppendLine($"Run time of the benchmark: {sw.Elapsed.TotalSeconds:F0} s (wall).");
Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
File.WriteAllText(outPath, md.ToString());
Console.Error.WriteLine($"wrote {outPath}");
return 0;

static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

internal record Row(int Size, int Chunks, long PlainBytes, long BlobBytes, double Sha, double Hmac, double AesEnc, double AesDec,
    double ZstdC, double ZstdD, double AesEncBody, double AesDecBody, double ShaBlob, double Write, double WriteSum, double Read, double ReadSum);

/// <summary>Wall clock and this process's CPU time: on a shared host the CPU time is what "per core" means.</summary>
internal static class Clock
{
    public static (Stopwatch Wall, TimeSpan Cpu) Start() => (Stopwatch.StartNew(), Environment.CpuUsage.TotalTime);
    public static double CpuSeconds(TimeSpan start) => Math.Max(1e-6, (Environment.CpuUsage.TotalTime - start).TotalSeconds);
}

internal static class Zstd1Level
{
    public const int Value = 1;
}

internal static class Data
{
    /// <summary>Non-zero 256 KiB blocks of a disk image, spread evenly over it, up to <paramref name="mib"/> MiB.</summary>
    public static (byte[], string) FromImage(string path, int mib, int block)
    {
        var nonZero = new List<long>();
        var buf = new byte[block];
        using (var f = File.OpenRead(path))
        {
            for (long off = 0; ; off += block)
            {
                int n = f.ReadAtLeast(buf, block, throwOnEndOfStream: false);
                if (n < block) break;
                if (buf.AsSpan().ContainsAnyExcept((byte)0)) nonZero.Add(off);
            }
        }
        int want = Math.Min(nonZero.Count, (int)((long)mib * 1024 * 1024 / block));
        var result = new byte[(long)want * block];
        using (var f = File.OpenRead(path))
        {
            for (int i = 0; i < want; i++)
            {
                f.Position = nonZero[(int)((long)i * nonZero.Count / want)];
                f.ReadExactly(result.AsSpan(i * block, block));
            }
        }
        return (result, $"{want * (long)block >> 20} MiB: {want} non-zero 256 KiB blocks spread evenly over the " +
                        $"{nonZero.Count * (long)block >> 20} MiB of non-zero blocks of `{Path.GetFileName(path)}` (the realistic guest's disk image, " +
                        "scripts/guest-realistic)");
    }

    /// <summary>A mix: 40% generated text, 30% executable code from /usr/bin, 15% random, 15% sparse (mostly zero).</summary>
    public static (byte[], string) Synthetic(int mib, int block)
    {
        int blocks = mib * 1024 * 1024 / block;
        var result = new byte[(long)blocks * block];
        var rng = new Random(42);
        string[] words = "suspend resume parcel chunk server client disk memory image network the of and to a in is for".Split(' ');
        var bins = Directory.Exists("/usr/bin") ? Directory.GetFiles("/usr/bin").Where(p => new FileInfo(p).Length > block).Take(200).ToArray() : [];
        for (int b = 0; b < blocks; b++)
        {
            var dst = result.AsSpan(b * block, block);
            int kind = b % 20;
            if (kind < 8)
            {
                var sb = new StringBuilder();
                while (sb.Length < block) sb.Append(words[rng.Next(words.Length)]).Append(rng.Next(12) == 0 ? '\n' : ' ');
                Encoding.ASCII.GetBytes(sb.ToString(0, block), dst);
            }
            else if (kind < 14 && bins.Length > 0)
            {
                var p = bins[rng.Next(bins.Length)];
                using var f = File.OpenRead(p);
                f.Position = rng.NextInt64(0, f.Length - block);
                f.ReadExactly(dst);
            }
            else if (kind < 17) rng.NextBytes(dst);
            else for (int k = 0; k < 64; k++) dst[rng.Next(block)] = (byte)rng.Next(256);
        }
        return (result, $"{mib} MiB synthetic mix: 40% generated text, 30% pieces of executables, 15% random, 15% mostly zero");
    }
}
