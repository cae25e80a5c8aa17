using System.Collections.Concurrent;
using System.Threading.Channels;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Cache;

/// <summary>Where a chunk came from, for statistics.</summary>
public enum ChunkSource { Cache, Lookaside, Home }

/// <summary>A blob the fetcher is still trying to get from the home, and why it has not arrived.</summary>
public sealed record FetchStall(ChunkTag Tag, DateTimeOffset Since, int Attempts, string LastError);

/// <summary>The home could not be reached for a chunk; the fetch goes on in the background and lands in the cache.</summary>
public sealed class FetchStalledException(ChunkTag tag, string reason)
    : IOException($"waiting for chunk {tag}: {reason}")
{
    public ChunkTag Tag { get; } = tag;
}

/// <summary>
/// Gets a blob by tag: the site cache first, then the lookaside sources (hints, verified and skipped when failing), then
/// the parcel's home (the store or the server). Every blob is verified
/// against its tag before use; a corrupt cached copy is dropped and fetched again. Concurrent requests for one tag share
/// one fetch. A home that cannot be reached is retried with exponential backoff (for as long as
/// <paramref name="giveUpAfter"/>, forever for a running session), and waiters may choose to be told at the first
/// failure (<see cref="GetOrStallAsync"/>) so that the VM pauses instead of the guest waiting on one request.
/// A blob from a lookaside source is cached behind the caller's back (write-behind), not on its path (the source is
/// local and fast), and not at all when it is read only once (<see cref="GetOnceAsync"/>).
/// </summary>
public sealed class ChunkFetcher(DirectoryChunkStore cache, IChunkStore home, TimeSpan? giveUpAfter = null, CacheSpace? space = null,
    Lookaside.LookasideChain? lookaside = null) : IDisposable
{
    private static readonly TimeSpan FirstBackoff = TimeSpan.FromMilliseconds(250), MaxBackoff = TimeSpan.FromSeconds(8);
    private const int IntegrityAttempts = 3;

    /// <param name="keepLookaside">Whether a blob from a lookaside source is cached (not for one read only once).</param>
    /// <param name="byPrefetch">Run by a prefetcher on its own terms (<see cref="PrefetchAsync"/>): a waiter whose fetch
    /// fails starts one of its own.</param>
    private sealed class Fetch(bool keepLookaside, bool byPrefetch = false)
    {
        public bool KeepLookaside { get; } = keepLookaside;
        public bool ByPrefetch { get; } = byPrefetch;
        public readonly TaskCompletionSource<byte[]> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource Stalled = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly ConcurrentDictionary<ChunkTag, Fetch> _inFlight = new();
    private readonly ConcurrentDictionary<ChunkTag, FetchStall> _stalls = new();
    private readonly ConcurrentDictionary<ChunkTag, string> _failures = new();
    private readonly CancellationTokenSource _lifetime = new();
    private readonly TimeSpan _giveUpAfter = giveUpAfter ?? TimeSpan.FromSeconds(60);
    /// <summary>Lookaside blobs waiting to be cached. Bounded, dropping when full: a blob not kept is still at its source.</summary>
    private readonly Channel<(ChunkTag Tag, byte[] Blob)> _toKeep =
        Channel.CreateBounded<(ChunkTag, byte[])>(new BoundedChannelOptions(KeepBehindBlobs) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private const int KeepBehindBlobs = 512;
    private Task? _keeper;
    private int _homeFetches;
    public TransferCounters Counters { get; } = new();
    /// <summary>Fetches of this fetcher (not prefetches) waiting on the home now: the guest's misses, the memory image.</summary>
    public int HomeFetchesInFlight => Volatile.Read(ref _homeFetches);

    public IChunkStore Home => home;
    public DirectoryChunkStore Cache => cache;
    public Lookaside.LookasideChain? Lookaside => lookaside;
    /// <summary>Writes into the cache within its limit, evicting clean blobs of this home when needed.</summary>
    public CacheSpace Space { get; } = space ?? new CacheSpace(cache, new DirectoryChunkStore(cache.Root, durable: true), null);
    /// <summary>Blobs being retried because the home cannot be reached.</summary>
    public IReadOnlyCollection<FetchStall> Stalls => _stalls.Values.ToList();
    /// <summary>Blobs that failed verification at every source (never handed out).</summary>
    public IReadOnlyDictionary<ChunkTag, string> Failures => _failures;

    /// <summary>The blob, waiting through retries while the home is unreachable.</summary>
    public ValueTask<byte[]> GetAsync(ChunkTag tag, CancellationToken ct) => new(AwaitAsync(tag, keepLookaside: true, ct));

    /// <summary>
    /// A blob read once, the memory image at resume: one from a lookaside source is not cached. The source is local, and
    /// copying ~60 MB of image into the cache took CPU the resume needed (docs/benchmarks/lookaside.md); a blob from the
    /// home is still cached, as fetching it again is dear.
    /// </summary>
    public ValueTask<byte[]> GetOnceAsync(ChunkTag tag, CancellationToken ct) => new(AwaitAsync(tag, keepLookaside: false, ct));

    /// <summary>The blob, or <see cref="FetchStalledException"/> as soon as the home fails to answer; the fetch goes on.</summary>
    public async Task<byte[]> GetOrStallAsync(ChunkTag tag, CancellationToken ct)
    {
        var (prefetched, fetch) = await JoinAsync(tag, keepLookaside: true, ct);
        if (prefetched != null) return prefetched;
        var first = await Task.WhenAny(fetch!.Done.Task, fetch.Stalled.Task).WaitAsync(ct);
        if (first == fetch.Done.Task || fetch.Done.Task.IsCompleted) return await fetch.Done.Task;
        throw new FetchStalledException(tag, _stalls.TryGetValue(tag, out var stall) ? stall.LastError : "the home does not answer");
    }

    private async Task<byte[]> AwaitAsync(ChunkTag tag, bool keepLookaside, CancellationToken ct)
    {
        var (prefetched, fetch) = await JoinAsync(tag, keepLookaside, ct);
        return prefetched ?? await fetch!.Done.Task.WaitAsync(ct);
    }

    /// <summary>The blob of a prefetch of <paramref name="tag"/> in flight, or else a fetch of the caller's own. A failed
    /// prefetch is not the caller's failure: a prefetch gives up sooner than a guest read may, and each tries a chunk once.</summary>
    private async Task<(byte[]? Prefetched, Fetch? Own)> JoinAsync(ChunkTag tag, bool keepLookaside, CancellationToken ct)
    {
        while (true)
        {
            var fetch = Start(tag, keepLookaside);
            if (!fetch.ByPrefetch) return (null, fetch);
            try { return (await fetch.Done.Task.WaitAsync(ct), null); }
            catch (Exception) when (!ct.IsCancellationRequested) { }
        }
    }

    /// <summary>
    /// Runs <paramref name="fetch"/> for a prefetcher, in view of the guest's reads: a read of the same blob meanwhile
    /// waits for it instead of sending a second request over the link. Returns null, fetching nothing, when the blob
    /// is being fetched already (by the guest or another prefetch). The prefetcher's bytes are its own to count.
    /// </summary>
    public async Task<byte[]?> PrefetchAsync(ChunkTag tag, Func<ChunkTag, CancellationToken, Task<byte[]>> fetch, CancellationToken ct)
    {
        var mine = new Fetch(keepLookaside: true, byPrefetch: true);
        if (!_inFlight.TryAdd(tag, mine)) return null;
        try
        {
            var blob = await fetch(tag, ct);
            _inFlight.TryRemove(new KeyValuePair<ChunkTag, Fetch>(tag, mine)); // cached by now: a later read finds it there
            mine.Done.TrySetResult(blob);
            return blob;
        }
        catch (Exception e)
        {
            _inFlight.TryRemove(new KeyValuePair<ChunkTag, Fetch>(tag, mine));
            mine.Done.TrySetException(e);
            throw;
        }
    }

    private Fetch Start(ChunkTag tag, bool keepLookaside = true)
    {
        while (true)
        {
            if (_inFlight.TryGetValue(tag, out var running)) return running;
            // Register before starting: a fetch that completes synchronously must not leave its finished entry behind,
            // or a failure would be returned for this tag forever.
            var fetch = new Fetch(keepLookaside);
            if (!_inFlight.TryAdd(tag, fetch)) continue;
            _ = CompleteAsync(tag, fetch);
            return fetch;
        }
    }

    private async Task CompleteAsync(ChunkTag tag, Fetch fetch)
    {
        byte[]? blob = null;
        Exception? error = null;
        try { blob = await FetchAsync(tag, fetch); }
        catch (Exception e) { error = e; }
        // Leave the map before waking waiters: a request made after this one returned must start a fresh fetch.
        _inFlight.TryRemove(new KeyValuePair<ChunkTag, Fetch>(tag, fetch));
        _stalls.TryRemove(tag, out _);
        if (error is OperationCanceledException oce) fetch.Done.TrySetCanceled(oce.CancellationToken);
        else if (error != null) fetch.Done.TrySetException(error);
        else fetch.Done.TrySetResult(blob!);
    }

    private async Task<byte[]> FetchAsync(ChunkTag tag, Fetch fetch)
    {
        var ct = _lifetime.Token;
        var cached = await cache.GetAsync(tag, ct);
        if (cached != null)
        {
            if (tag.Matches(cached)) { Counters.Add(ChunkSource.Cache, cached.Length); return cached; }
            await cache.DeleteAsync(tag, ct); // corrupt cached copy: never used, fetched again below
        }
        if (lookaside != null && await lookaside.TryGetAsync(tag, ct) is var (hinted, _))
        {
            Counters.Add(ChunkSource.Lookaside, hinted.Length);
            if (fetch.KeepLookaside) KeepBehind(tag, hinted);
            return hinted;
        }
        Interlocked.Increment(ref _homeFetches);
        try { return await FetchFromHomeAsync(tag, fetch, ct); }
        finally { Interlocked.Decrement(ref _homeFetches); }
    }

    private async Task<byte[]> FetchFromHomeAsync(ChunkTag tag, Fetch fetch, CancellationToken ct)
    {
        var backoff = FirstBackoff;
        var since = DateTimeOffset.UtcNow;
        int attempts = 0, corrupt = 0;
        while (true)
        {
            attempts++;
            string problem;
            try
            {
                var blob = await home.GetAsync(tag, ct) ?? throw Failed(tag, $"chunk {tag} is missing from {home}");
                if (tag.Matches(blob))
                {
                    Counters.Add(ChunkSource.Home, blob.Length);
                    await KeepAsync(tag, blob, ct);
                    return blob;
                }
                if (++corrupt >= IntegrityAttempts) throw Failed(tag, $"chunk {tag} from {home} does not match its tag ({corrupt} attempts)");
                problem = "the copy received does not match its tag";
            }
            catch (Exception e) when (IsTransient(e, ct))
            {
                problem = e.Message;
            }
            if (_giveUpAfter != Timeout.InfiniteTimeSpan && DateTimeOffset.UtcNow - since > _giveUpAfter)
                throw new IOException($"gave up on chunk {tag} after {attempts} attempts over {_giveUpAfter.TotalSeconds:F0} s: {problem}");
            _stalls[tag] = new FetchStall(tag, since, attempts, problem);
            fetch.Stalled.TrySetResult();
            await Task.Delay(backoff, ct);
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
        }
    }

    private ChunkIntegrityException Failed(ChunkTag tag, string message)
    {
        _failures[tag] = message;
        return new ChunkIntegrityException(message);
    }

    /// <summary>Failures that may go away by themselves: an unreachable or restarting home. Not: a refusal or our own cancellation.</summary>
    private static bool IsTransient(Exception e, CancellationToken ct) => e switch
    {
        OperationCanceledException => !ct.IsCancellationRequested,
        FileNotFoundException or DirectoryNotFoundException => false,
        Homes.ServerException s => (int)s.Status >= 500 || s.Status == 0 && s.Code != "certificate_mismatch",
        IOException or HttpRequestException or TimeoutException => true,
        _ => false,
    };

    public ValueTask<byte[]> LoadPageAsync(ChunkTag tag, CancellationToken ct) => GetAsync(tag, ct);

    public void Dispose()
    {
        _toKeep.Writer.TryComplete();
        _lifetime.Cancel();
    }

    private void KeepBehind(ChunkTag tag, byte[] blob)
    {
        if (!_toKeep.Writer.TryWrite((tag, blob))) return;
        if (_keeper is null) lock (_toKeep) _keeper ??= Task.Run(KeepLoopAsync);
    }

    private async Task KeepLoopAsync()
    {
        try
        {
            await foreach (var (tag, blob) in _toKeep.Reader.ReadAllAsync(_lifetime.Token))
            {
                try { await KeepAsync(tag, blob, _lifetime.Token); }
                catch (IOException) { } // only a cache: the blob is still at its source
            }
        }
        catch (OperationCanceledException) { } // the session ended: what is not kept yet stays at its source
    }

    /// <summary>Caches a verified blob within the cache's limit; one that does not fit is served uncached (the cache
    /// being full of changes not yet at home).</summary>
    private async ValueTask KeepAsync(ChunkTag tag, byte[] blob, CancellationToken ct)
    {
        try { await Space.PutCleanAsync(tag, blob, home, ct); }
        catch (Transfer.CacheFullException) { }
    }
}

public sealed class TransferCounters
{
    private long _cacheBytes, _cacheHits, _lookasideBytes, _lookasideHits, _homeBytes, _homeFetches;
    public long CacheBytes => Interlocked.Read(ref _cacheBytes);
    public long CacheHits => Interlocked.Read(ref _cacheHits);
    public long LookasideBytes => Interlocked.Read(ref _lookasideBytes);
    public long LookasideHits => Interlocked.Read(ref _lookasideHits);
    public long HomeBytes => Interlocked.Read(ref _homeBytes);
    public long HomeFetches => Interlocked.Read(ref _homeFetches);

    public void Add(ChunkSource source, long bytes)
    {
        switch (source)
        {
            case ChunkSource.Cache: Interlocked.Add(ref _cacheBytes, bytes); Interlocked.Increment(ref _cacheHits); break;
            case ChunkSource.Lookaside: Interlocked.Add(ref _lookasideBytes, bytes); Interlocked.Increment(ref _lookasideHits); break;
            default: Interlocked.Add(ref _homeBytes, bytes); Interlocked.Increment(ref _homeFetches); break;
        }
    }
}
