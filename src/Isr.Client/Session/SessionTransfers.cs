using System.Diagnostics;
using System.Text.Json.Serialization;
using Isr.Client.Cache;
using Isr.Client.Disk;
using Isr.Client.Homes;
using Isr.Client.Site;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Vmm;

namespace Isr.Client.Session;

/// <summary>State-transfer policies at resume (the seeds' Figure 4/5).</summary>
[JsonConverter(typeof(CamelCaseEnumConverter<TransferPolicy>))]
public enum TransferPolicy
{
    /// <summary>Memory image first, disk chunks when the guest reads them (plus working-set and background prefetch).</summary>
    Demand,
    /// <summary>Copy-in: every blob of the version into the site cache before the VM starts.</summary>
    Baseline,
}

/// <summary>What to fetch ahead of the guest after a resume.</summary>
[JsonConverter(typeof(CamelCaseEnumConverter<PrefetchMode>))]
public enum PrefetchMode
{
    None,
    /// <summary>The chunks the guest touched first after the previous resume, in that order, from `cont` on (default).</summary>
    WorkingSet,
    /// <summary>The working set, then the rest of the disk in the background at low priority.</summary>
    All,
}

/// <summary>A session's transfers beyond demand fetching; bytes are ciphertext as moved. <see cref="SessionStats.HomeBytes"/>
/// counts what the session's fetcher got from the home (demand: the guest's misses, the memory image, keyring leaves,
/// the working set's among them); prefetch and copy-in fetch on their own terms (never stalling the guest's fetches:
/// a guest read of a chunk being prefetched waits for that fetch) and are counted apart.</summary>
/// <param name="CopyInBytes">Fetched from the home by the baseline policy's copy-in, before the VM started.</param>
/// <param name="DemandHomeBytes">Fetched from the home because the guest (or the memory image) needed it.</param>
/// <param name="PrefetchBytes">Fetched from the home by working-set and background prefetch (chunks, the working set; the background prefetch's keyring leaves).</param>
/// <param name="PrefetchHits">Chunks the guest read for the first time that prefetch had fetched.</param>
/// <param name="WorkingSetReplayed">Chunks in the working set recorded at the previous resume (fetched first).</param>
/// <param name="WorkingSetRecorded">Chunks recorded so far for the next resume.</param>
/// <param name="TouchedChunks">Distinct disk chunks the guest has read.</param>
/// <param name="TrickledBytes">Dirty chunks uploaded in the background while the VM ran (check-in skips them).</param>
public sealed record SessionTransferStats(
    TransferPolicy Policy, long CopyInBytes, long CopyInBlobs, long DemandHomeBytes, long PrefetchBytes, long PrefetchChunks, long PrefetchHits,
    long WorkingSetReplayed, long WorkingSetRecorded, long TouchedChunks, bool PrefetchDone, long TrickledChunks, long TrickledBytes,
    long TotalHomeBytes);

/// <summary>
/// The transfers of one session beyond demand fetching: baseline copy-in, working-set replay (alongside the memory
/// image), background prefetch of the rest of the disk (yielding to the guest's misses), working-set recording, and
/// trickle upload of dirty chunks (server homes). Stopped at suspend.
/// </summary>
public sealed class SessionTransfers : IAsyncDisposable
{
    private readonly OpenedParcel _parcel;
    private readonly SiteDirectory _site;
    private readonly ChunkFetcher _fetcher;
    private readonly ParcelDisk _disk;
    private readonly VersionRecord _version;
    private readonly ResumeOptions _options;
    private readonly Action<string>? _log;
    private readonly WorkingSetRecorder _recorder;
    private readonly Prefetcher _prefetcher;
    private readonly CancellationTokenSource _stop = new();
    private Hoarder? _copyIn;
    private Storage.IChunkStore? _copyInSource;
    private readonly Storage.IChunkStore _directSource;
    private readonly Hoarder _direct; // prefetch's own fetches: cache → home, verified, no retries (a failing home stops prefetch, never the guest)
    private Trickle? _trickle;
    private Task _workingSet = Task.CompletedTask, _background = Task.CompletedTask, _trickling = Task.CompletedTask;
    private long _replayed, _hits;
    private volatile bool _prefetchDone;

    public SessionTransfers(OpenedParcel parcel, SiteDirectory site, ChunkFetcher fetcher, ParcelDisk disk, VersionRecord version,
        ResumeOptions options, Action<string>? log = null)
    {
        (_parcel, _site, _fetcher, _disk, _version, _options, _log) = (parcel, site, fetcher, disk, version, options, log);
        _directSource = Source();
        _direct = new Hoarder(site.Cache, _directSource, new HoardOptions { Concurrency = 8 });
        // Through the fetcher's map of fetches in flight: a guest read of a chunk being prefetched waits for it instead
        // of asking the link for it a second time, and the replay skips what the guest is fetching.
        _prefetcher = new Prefetcher(async (tag, ct) => await fetcher.PrefetchAsync(tag, _direct.FetchAsync, ct), site.Cache.Contains, () => disk.Misses,
            () => fetcher.HomeFetchesInFlight);
        _recorder = new WorkingSetRecorder(disk.ChunkCount)
        {
            FirstTouch = index => { if (_prefetcher.Fetched(index)) Interlocked.Increment(ref _hits); },
        };
        disk.ChunkRead = _recorder.Touch;
    }

    /// <summary>Prefetch and copy-in ask the lookaside sources first too (each counting what came from them).</summary>
    private Storage.IChunkStore Source() =>
        _fetcher.Lookaside is { } lookaside ? new Lookaside.LookasideFirstStore(lookaside, _parcel.Home.Chunks) : _parcel.Home.Chunks;

    private static long FromLookaside(Storage.IChunkStore? source) => (source as Lookaside.LookasideFirstStore)?.LookasideBytes ?? 0;

    public WorkingSetRecorder Recorder => _recorder;
    public Prefetcher Prefetcher => _prefetcher;
    public Trickle? Trickle => _trickle;

    /// <summary>Baseline policy: fetches every blob of the version into the site cache (many requests in flight).</summary>
    public async Task CopyInAsync(IProgress<string>? progress, CancellationToken ct)
    {
        _copyInSource = Source();
        _copyIn = new Hoarder(_site.Cache, _copyInSource, new HoardOptions { Concurrency = 16 });
        progress?.Report($"copying in version {_version.Number} before starting the VM (baseline policy)");
        int lastTenth = -1;
        var report = new InlineProgress<HoardProgress>(p =>
        {
            int tenth = p.ToFetch == 0 ? 10 : p.Done * 10 / p.ToFetch;
            if (tenth == lastTenth || p.Done == 0) return;
            lastTenth = tenth;
            progress?.Report($"copy-in: {p.Done} of {p.ToFetch} blobs, {p.BytesFetched / 1e6:F1} MB");
        });
        var result = await _copyIn.HoardAsync(_parcel.Name, _version, report, w => progress?.Report("WARNING: " + w), ct);
        progress?.Report($"copy-in done: {result.Fetched} blobs ({result.BytesFetched / 1e6:F1} MB) fetched, {result.AlreadyCached} were cached");
    }

    /// <summary>Requests of the working-set replay in flight. A guest read that misses shares the link with them: with 8 the
    /// guest waited 16–18 s on fetches at 10 Mbit/s, with 4 (or 2) 11–12 s (docs/benchmarks/policies-ws.md), and 4 keep
    /// a fast link busy.</summary>
    private const int WorkingSetConcurrency = 4;

    private WorkingSetOrder? _workingSetOrder;

    private bool Replays => _options.Prefetch != PrefetchMode.None && _version.HasWorkingSet;

    private async Task<WorkingSetOrder> WorkingSetOrderAsync(CancellationToken ct)
    {
        if (_workingSetOrder is { } known) return known;
        var tag = ChunkTag.Parse(_version.WorkingSetTag!);
        var blob = await _site.Cache.GetAsync(tag, ct) is { } cached && tag.Matches(cached) ? cached : await _direct.FetchAsync(tag, ct);
        var order = WorkingSet.Open(blob, _parcel.Keys, _parcel.Info.Id);
        Interlocked.Exchange(ref _replayed, order.Count);
        return _workingSetOrder = order;
    }

    // Keyring leaves through the session's fetcher: the guest's first reads need the same ones at the same time.
    private IAsyncEnumerable<PrefetchItem> WorkingSetItems(IReadOnlyList<long> order, CancellationToken ct) =>
        WorkingSet.ResolveAsync(order, _version, _fetcher.LoadPageAsync, _parcel.Keys, ct);

    /// <summary>The replay's share of the link after `cont`: the guest's misses outside the working set take the rest.</summary>
    private const double ReplayShareOfLink = 0.85;
    /// <summary>Chunks fetched to learn their size (and the link's rate, if the resume fetched too little to tell) before planning.</summary>
    private const int HeadProbeChunks = 16;

    /// <summary>Before `cont`: the working set's head, planned by <see cref="WorkingSetHead"/> from the recorded touch times so
    /// that the replay from `cont` on keeps ahead of the guest, at most <paramref name="maxBytes"/> from the home. On a slow
    /// link the guest's first seconds read faster than the replay arrives; this moves that wait into the resume. A failure
    /// leaves it to the replay; a format-1 working set (no times) has no head.</summary>
    /// <param name="bytesPerSecond">The link's rate as the resume measured it (0: unknown, measured on the first chunks).</param>
    /// <returns>The bytes it fetched and the chunks it planned in all; null if there was nothing to plan by.</returns>
    public async Task<(long Bytes, int Planned)?> PrefetchWorkingSetHeadAsync(double bytesPerSecond, long maxBytes, CancellationToken ct)
    {
        if (!Replays || maxBytes <= 0) return null;
        long startBytes = _prefetcher.Bytes, startChunks = _prefetcher.Chunks;
        int planned = 0;
        try
        {
            var order = await WorkingSetOrderAsync(ct);
            if (order.TouchedMs is not { } times) return null;
            var due = new Dictionary<long, double>(order.Count);
            for (int i = 0; i < order.Count; i++) due.TryAdd(order.Indices[i], times[i] / 1000.0);
            var items = new List<PrefetchItem>(order.Count);
            await foreach (var item in WorkingSetItems(order.Indices, ct)) items.Add(item);
            var options = new PrefetchOptions { Concurrency = WorkingSetConcurrency, YieldToDemand = false };
            List<PrefetchItem> ToFetch() => items.Where(i => !i.Chunk.IsZeroChunk && !_site.Cache.Contains(i.Chunk.Tag)).ToList();
            int Plan(List<PrefetchItem> toFetch, double size, double rate) =>
                rate > 0 ? WorkingSetHead.Chunks(toFetch.Select(i => due[i.Index]).ToList(), size, rate * ReplayShareOfLink) : toFetch.Count;
            async Task FetchAsync(List<PrefetchItem> toFetch, int chunks, double size)
            {
                chunks = (int)Math.Min(Math.Min(chunks, toFetch.Count), (maxBytes - (_prefetcher.Bytes - startBytes)) / size);
                if (chunks <= 0) return;
                planned += chunks;
                await _prefetcher.RunAsync(toFetch.Take(chunks).ToAsyncEnumerable(), options, ct);
            }

            // The probe learns the chunks' size on the link (and the link's rate, if the resume could not tell) from the
            // first few: planned as if each took a whole chunk, at most HeadProbeChunks. Then the plan with what it learned.
            long started = Stopwatch.GetTimestamp();
            var first = ToFetch();
            await FetchAsync(first, Math.Min(HeadProbeChunks, Plan(first, _disk.ChunkSize, bytesPerSecond)), _disk.ChunkSize);
            long probed = _prefetcher.Chunks - startChunks, probedBytes = _prefetcher.Bytes - startBytes;
            if (probed > 0)
            {
                double rate = bytesPerSecond > 0 ? bytesPerSecond : probedBytes / Stopwatch.GetElapsedTime(started).TotalSeconds;
                var rest = ToFetch();
                await FetchAsync(rest, Plan(rest, (double)probedBytes / probed, rate), (double)probedBytes / probed);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            _log?.Invoke($"working-set prefetch of '{_parcel.Name}' before cont stopped: {e.Message}");
        }
        return (_prefetcher.Bytes - startBytes, planned);
    }

    /// <summary>Called at `cont`: the recorder stamps touches with guest time from now on, and the working set recorded at
    /// the previous resume is fetched in its order (what the head fetched is skipped).</summary>
    public void StartWorkingSetReplay()
    {
        long cont = Stopwatch.GetTimestamp();
        var stalledBefore = _disk.GuestStallTime;
        _recorder.StartClock(() => Stopwatch.GetElapsedTime(cont) - (_disk.GuestStallTime - stalledBefore));
        if (!Replays) return;
        var ct = _stop.Token;
        _workingSet = Task.Run(async () =>
        {
            try
            {
                await _prefetcher.RunAsync(WorkingSetItems((await WorkingSetOrderAsync(ct)).Indices, ct),
                    new PrefetchOptions { Concurrency = WorkingSetConcurrency, ConcurrencyWhileGuestFetches = 1, YieldToDemand = false }, ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
            catch (Exception e) { _log?.Invoke($"working-set prefetch of '{_parcel.Name}' stopped: {e.Message}"); }
        }, CancellationToken.None);
    }

    /// <summary>Once the guest runs: prefetch the rest of the disk at low priority, and trickle dirty chunks home (server homes).</summary>
    public void StartBackground()
    {
        var ct = _stop.Token;
        if (_options.Prefetch == PrefetchMode.All)
            _background = Task.Run(async () =>
            {
                try
                {
                    await _workingSet;
                    var rest = Prefetcher.Indexed(ChunkListTree.ReadAllAsync(_version.DiskRootTag, _version.DiskChunks, _direct.LoadPageAsync, _parcel.Keys, ct), ct);
                    await _prefetcher.RunAsync(rest, new PrefetchOptions { Concurrency = 2, YieldToDemand = true }, ct);
                    _prefetchDone = true;
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
                catch (Exception e) { _log?.Invoke($"background prefetch of '{_parcel.Name}' stopped: {e.Message}"); }
            }, CancellationToken.None);
        if (_parcel.Home is ServerParcelHome && _options.TrickleBytesPerSecond is > 0 and var rate)
        {
            _trickle = new Trickle(() => _disk.FlushedChanges.Values, _site.Cache, _parcel.Home.Chunks, new TokenBucket(rate));
            _trickling = Task.Run(() => _trickle.RunAsync(ct), CancellationToken.None);
        }
    }

    /// <summary>Stops prefetch and trickle (at suspend); what they moved stays.</summary>
    public async Task StopAsync()
    {
        if (!_stop.IsCancellationRequested) _stop.Cancel();
        foreach (var task in new[] { _workingSet, _background, _trickling })
            try { await task; } catch (Exception) { /* logged by the task; stopping must not fail a suspend */ }
    }

    /// <summary>Seals the chunk order recorded since the resume into the site cache (durable): the next version names it.</summary>
    public async Task<ChunkTag?> SealWorkingSetAsync(CancellationToken ct)
    {
        var order = _recorder.Snapshot();
        if (order.Count == 0) return null;
        var (tag, blob) = WorkingSet.Seal(order, _parcel.Keys, _parcel.Info.Id);
        await _site.DurableCache.PutAsync(tag, blob, ct);
        return tag;
    }

    public SessionTransferStats Stats()
    {
        long demand = _fetcher.Counters.HomeBytes, copyIn = (_copyIn?.BytesFetched ?? 0) - FromLookaside(_copyInSource),
            prefetch = _direct.BytesFetched - FromLookaside(_directSource);
        return new SessionTransferStats(_options.Policy, copyIn, _copyIn?.BlobsFetched ?? 0, demand,
            prefetch, _prefetcher.Chunks, Interlocked.Read(ref _hits), Interlocked.Read(ref _replayed), _recorder.Recorded,
            _recorder.Touched, _prefetchDone, _trickle?.Chunks ?? 0, _trickle?.Bytes ?? 0, demand + prefetch + copyIn);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }
}

/// <summary>Reports on the caller's thread (Progress&lt;T&gt; would post to the thread pool, out of order).</summary>
public sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
