using System.Collections.Concurrent;
using Isr.Format;

namespace Isr.Client.Transfer;

/// <summary>One disk chunk to prefetch: its index in the disk and its reference in the version.</summary>
public readonly record struct PrefetchItem(long Index, ChunkRef Chunk);

public sealed record PrefetchOptions
{
    /// <summary>Fetches in flight.</summary>
    public int Concurrency { get; init; } = 2;
    /// <summary>Hold back while the guest is missing chunks (its demand goes first).</summary>
    public bool YieldToDemand { get; init; } = true;
    /// <summary>How long demand must be quiet before prefetching goes on.</summary>
    public TimeSpan Quiet { get; init; } = TimeSpan.FromMilliseconds(100);
    /// <summary>Fetches in flight while the guest waits on one from the home: fewer prefetch bytes on the link ahead of
    /// the guest's, and the link still busy.</summary>
    public int ConcurrencyWhileGuestFetches { get; init; } = int.MaxValue;
    /// <summary>How long a prefetch holds back at most while the guest fetches (its fetches may take long: the home down).</summary>
    public TimeSpan HoldBackAtMost { get; init; } = TimeSpan.FromMilliseconds(200);
}

/// <summary>
/// Fetches disk chunks into the site cache ahead of the guest, in a given order: the recorded working set at resume
/// (all out, from `cont` on), then the rest of the disk in the background (a few at a time, pausing while
/// the guest's own misses are being served). Chunks already cached are skipped, each index is tried once, and failures
/// are left to the guest's own read (which retries). Counts what it fetched so statistics can tell prefetch from demand.
/// <paramref name="fetch"/> returns null for a chunk someone else is fetching already (the guest's own read).
/// </summary>
/// <paramref name="guestFetches"/> tells how many of the guest's fetches wait on the home now.
public sealed class Prefetcher(Func<ChunkTag, CancellationToken, ValueTask<byte[]?>> fetch, Func<ChunkTag, bool> isCached, Func<long>? demandActivity = null,
    Func<int>? guestFetches = null)
{
    private readonly ConcurrentDictionary<long, byte> _tried = new();
    private readonly ConcurrentDictionary<long, byte> _fetched = new();
    private long _chunks, _bytes, _skipped, _failed, _failedInARow;
    private int _running; // fetches in flight (HoldBackAsync)

    /// <summary>Failures in a row after which a run gives up (the home is not answering; the guest's own reads will wait for it).</summary>
    public int GiveUpAfterFailures { get; init; } = 8;

    /// <summary>Chunks and bytes this prefetcher fetched (not found in the cache).</summary>
    public long Chunks => Interlocked.Read(ref _chunks);
    public long Bytes => Interlocked.Read(ref _bytes);
    /// <summary>Chunks that were in the cache already (or zero chunks, or tried before, or being fetched by the guest).</summary>
    public long Skipped => Interlocked.Read(ref _skipped);
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Whether this prefetcher fetched the chunk at <paramref name="index"/> (for prefetch-hit accounting).</summary>
    public bool Fetched(long index) => _fetched.ContainsKey(index);

    public async Task RunAsync(IAsyncEnumerable<PrefetchItem> order, PrefetchOptions options, CancellationToken ct)
    {
        long lastDemand = demandActivity?.Invoke() ?? 0;
        var demandGate = new SemaphoreSlim(1, 1);
        async Task YieldAsync(CancellationToken token)
        {
            if (!options.YieldToDemand || demandActivity is null) return;
            await demandGate.WaitAsync(token);
            try
            {
                // Go on only after demand has been quiet for a while.
                while (demandActivity() is var now && now != Interlocked.Read(ref lastDemand))
                {
                    Interlocked.Exchange(ref lastDemand, now);
                    await Task.Delay(options.Quiet, token);
                }
            }
            finally { demandGate.Release(); }
        }

        using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(ct);
        try
        {
        await Parallel.ForEachAsync(order, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.Concurrency), CancellationToken = giveUp.Token },
            async (item, token) =>
            {
                if (item.Chunk.IsZeroChunk || !_tried.TryAdd(item.Index, 0) || isCached(item.Chunk.Tag))
                {
                    Interlocked.Increment(ref _skipped);
                    return;
                }
                await YieldAsync(token);
                await HoldBackAsync(options, token);
                try
                {
                    if (await fetch(item.Chunk.Tag, token) is not { } blob)
                    {
                        Interlocked.Increment(ref _skipped);
                        return;
                    }
                    Interlocked.Add(ref _bytes, blob.Length);
                    Interlocked.Increment(ref _chunks);
                    _fetched.TryAdd(item.Index, 0);
                    Interlocked.Exchange(ref _failedInARow, 0);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    Interlocked.Increment(ref _failed); // the guest's own read will try again and report
                    if (Interlocked.Increment(ref _failedInARow) >= GiveUpAfterFailures) giveUp.Cancel();
                }
                finally { Interlocked.Decrement(ref _running); }
            });
        }
        catch (OperationCanceledException) when (giveUp.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new IOException($"prefetch gave up after {GiveUpAfterFailures} failed fetches in a row");
        }
    }

    /// <summary>Takes a place among the fetches in flight; while the guest fetches from the home, waits (a little at most)
    /// until fewer than <see cref="PrefetchOptions.ConcurrencyWhileGuestFetches"/> are.</summary>
    private async Task HoldBackAsync(PrefetchOptions options, CancellationToken ct)
    {
        long until = Environment.TickCount64 + (long)options.HoldBackAtMost.TotalMilliseconds;
        while (true)
        {
            int running = Volatile.Read(ref _running);
            bool held = guestFetches is not null && guestFetches() > 0 && running >= options.ConcurrencyWhileGuestFetches && Environment.TickCount64 < until;
            if (!held && Interlocked.CompareExchange(ref _running, running + 1, running) == running) return;
            if (held) await Task.Delay(1, ct);
        }
    }

    /// <summary>Chunk references in disk order, numbered.</summary>
    public static async IAsyncEnumerable<PrefetchItem> Indexed(IAsyncEnumerable<ChunkRef> refs,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
    {
        long index = 0;
        await foreach (var chunk in refs.WithCancellation(ct)) yield return new PrefetchItem(index++, chunk);
    }

    /// <summary>Every chunk of a disk in index order.</summary>
    public static async IAsyncEnumerable<PrefetchItem> DiskOrder(Func<CancellationToken, Task<IReadOnlyList<ChunkRef>>> allRefs,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
    {
        var refs = await allRefs(ct);
        for (int i = 0; i < refs.Count; i++) yield return new PrefetchItem(i, refs[i]);
    }
}
