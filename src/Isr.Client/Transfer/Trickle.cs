using Isr.Client.Homes;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Transfer;

/// <summary>
/// Uploads dirty disk chunks to the home while the VM runs (bandwidth-limited, one request at a time), so that the
/// check-in after a suspend sends only what changed since: its "missing" query skips what was trickled. A chunk goes
/// once it has stayed the same for <see cref="Settle"/> (a chunk the guest keeps rewriting is sent once, late); blobs
/// are read from the site cache, where a flush put them. Uploading a blob no version references yet is harmless: it is
/// ciphertext, and the server's garbage collection keeps recent uploads for a grace period (and a check-in uploads
/// again whatever the home no longer holds).
/// </summary>
public sealed class Trickle(Func<IEnumerable<ChunkRef>> dirty, IChunkStore cache, IChunkStore home, TokenBucket? limit = null)
{
    private const int BatchSize = 16;
    private readonly Dictionary<ChunkTag, DateTimeOffset> _firstSeen = new();
    private readonly HashSet<ChunkTag> _sent = new();
    private readonly SemaphoreSlim _pass = new(1, 1);
    private long _chunks, _bytes, _passes;

    /// <summary>How long a dirty chunk must stay unchanged before it is sent.</summary>
    public TimeSpan Settle { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Chunks and bytes uploaded (not counting those the home already held).</summary>
    public long Chunks => Interlocked.Read(ref _chunks);
    public long Bytes => Interlocked.Read(ref _bytes);
    public long Passes => Interlocked.Read(ref _passes);

    /// <summary>Runs passes every <see cref="Interval"/> until cancelled; a failing pass (home unreachable) is retried at the next.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(Interval, ct);
                await RunOnceAsync(ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
            catch (Exception e) when (e is IOException or HttpRequestException or ServerUnreachableException or ServerException) { }
        }
    }

    /// <summary>One pass: uploads the settled dirty chunks not sent yet that the home lacks. Returns what it sent.</summary>
    public async Task<(int Chunks, long Bytes)> RunOnceAsync(CancellationToken ct, DateTimeOffset? now = null)
    {
        await _pass.WaitAsync(ct);
        try
        {
            Interlocked.Increment(ref _passes);
            var at = now ?? DateTimeOffset.UtcNow;
            var current = dirty().Where(c => !c.IsZeroChunk).Select(c => c.Tag).ToHashSet();
            foreach (var gone in _firstSeen.Keys.Where(t => !current.Contains(t)).ToList()) _firstSeen.Remove(gone);
            var ready = new List<ChunkTag>();
            foreach (var tag in current)
            {
                if (_sent.Contains(tag)) continue;
                if (!_firstSeen.TryGetValue(tag, out var seen)) _firstSeen[tag] = seen = at;
                if (at - seen >= Settle) ready.Add(tag);
            }
            if (ready.Count == 0) return (0, 0);
            var missing = await home.MissingAsync(ready, ct);
            foreach (var held in ready.Except(missing)) _sent.Add(held);
            int chunks = 0;
            long bytes = 0;
            foreach (var batch in missing.Chunk(home is IBatchChunkStore ? BatchSize : 1))
            {
                if (limit != null) await limit.WaitAsync(ct);
                var blobs = new List<(ChunkTag, byte[])>(batch.Length);
                foreach (var tag in batch)
                    if (await cache.GetAsync(tag, ct) is { } blob && tag.Matches(blob)) blobs.Add((tag, blob));
                if (blobs.Count == 0) continue;
                if (home is IBatchChunkStore batching) await batching.PutBatchAsync(blobs, ct);
                else await home.PutAsync(blobs[0].Item1, blobs[0].Item2, ct);
                long sent = blobs.Sum(b => (long)b.Item2.Length);
                limit?.Consume(sent);
                foreach (var (tag, _) in blobs) _sent.Add(tag);
                chunks += blobs.Count;
                bytes += sent;
                Interlocked.Add(ref _chunks, blobs.Count);
                Interlocked.Add(ref _bytes, sent);
            }
            return (chunks, bytes);
        }
        finally
        {
            _pass.Release();
        }
    }
}
