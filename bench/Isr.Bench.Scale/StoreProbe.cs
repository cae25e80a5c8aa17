using System.Diagnostics;
using Isr.Format;
using Isr.Storage.S3;

namespace Isr.Bench.Scale;

/// <summary>The S3 chunk store alone, without isr-server: PUT, HEAD and GET rates at a given width, and the two
/// existence strategies of <see cref="S3ChunkStore.MissingAsync"/> (one HEAD per tag, or listing the fan-out prefixes)
/// for growing batch sizes (<see cref="S3ChunkStoreOptions.ListMinTags"/>).</summary>
public static class StoreProbe
{
    public static async Task RunAsync(S3ChunkStoreOptions options, int objects, int chunkSize, TextWriter output, CancellationToken ct)
    {
        options = options with { Prefix = $"probe-{Guid.NewGuid():N}/" };
        using var store = new S3ChunkStore(options);
        await store.EnsureBucketAsync(ct);
        var rng = new Random(1);
        var blobs = Enumerable.Range(0, objects).Select(_ => { var b = new byte[chunkSize]; rng.NextBytes(b); return (Tag: ChunkTag.Of(b), Blob: b); }).ToList();
        var width = new ParallelOptions { MaxDegreeOfParallelism = options.Concurrency, CancellationToken = ct };

        output.WriteLine($"| operation ({objects} objects of {chunkSize} B, {options.Concurrency} in flight) | requests/s | MB/s |");
        output.WriteLine("|---|---|---|");
        async Task TimeAsync(string what, Func<(ChunkTag Tag, byte[] Blob), CancellationToken, ValueTask> op)
        {
            var clock = Stopwatch.StartNew();
            await Parallel.ForEachAsync(blobs, width, async (b, token) => await op(b, token));
            double s = clock.Elapsed.TotalSeconds;
            output.WriteLine($"| {what} | {objects / s:F0} | {(what == "HEAD" ? "" : $"{(double)objects * chunkSize / s / 1e6:F1}")} |");
        }
        await TimeAsync("PUT", (b, t) => store.PutAsync(b.Tag, b.Blob, t));
        await TimeAsync("HEAD", async (b, t) => await store.ExistsAsync(b.Tag, t));
        await TimeAsync("GET", async (b, t) => await store.GetAsync(b.Tag, t));

        output.WriteLine();
        output.WriteLine($"| MissingAsync batch (half stored; store holds {objects}) | HEAD per tag ms | list every prefix ms | default rule ms |");
        output.WriteLine("|---|---|---|---|");
        var strategies = new[] { int.MaxValue, 1, options.ListMinTags }.Select(min => new S3ChunkStore(options with { ListMinTags = min })).ToList();
        for (int n = 64; n <= objects * 2; n *= 4)
        {
            var query = blobs.Take(n / 2).Select(b => b.Tag).Concat(Enumerable.Range(0, n - n / 2).Select(i => ChunkTag.Of(BitConverter.GetBytes(i)))).ToList();
            var times = new List<double>();
            foreach (var strategy in strategies)
            {
                var clock = Stopwatch.StartNew();
                var missing = await strategy.MissingAsync(query, ct);
                times.Add(clock.Elapsed.TotalMilliseconds);
                if (!missing.SequenceEqual(query.Skip(n / 2))) throw new InvalidOperationException("a strategy answered wrongly");
            }
            output.WriteLine($"| {n} | {string.Join(" | ", times.Select(t => t.ToString("F0")))} |");
        }
        foreach (var strategy in strategies) strategy.Dispose();
        foreach (var b in blobs) await store.DeleteAsync(b.Tag, ct);
    }
}
