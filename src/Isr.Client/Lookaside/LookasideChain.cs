using System.Diagnostics;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Lookaside;

/// <summary>
/// A place that may hold blobs of the parcel (a dongle, read-only media, a jukebox on the LAN). Only a hint: whatever
/// it returns is checked against the tag by <see cref="LookasideChain"/>. It must answer fast: null for "don't have".
/// </summary>
public interface ILookasideSource : IDisposable
{
    /// <summary>For statistics and messages: "dongle /media/usb", "jukebox http://…".</summary>
    string Name { get; }

    /// <summary>The blob, or null if this source does not have it. May throw when the source fails.</summary>
    ValueTask<byte[]?> TryGetAsync(ChunkTag tag, CancellationToken ct);
}

/// <param name="Source">The source's name.</param>
/// <param name="Hits">Blobs it gave that matched their tags (used).</param>
/// <param name="Bytes">Bytes of those blobs.</param>
/// <param name="Misses">"Don't have" answers.</param>
/// <param name="Rejected">Blobs that did not match their tags (stale or tampered; never used).</param>
/// <param name="Failures">Errors and timeouts.</param>
/// <param name="Skipped">Requests not sent because the source was cut off after failures.</param>
/// <param name="CutOff">Whether the source is being skipped now.</param>
/// <param name="Seconds">Time spent asking it, summed over requests (and checking what it gave): what it cost the fetches
/// that came to it, whether it had the blob or not.</param>
public sealed record LookasideStats(string Source, long Hits, long Bytes, long Misses, long Rejected, long Failures, long Skipped, bool CutOff,
    double Seconds);

public sealed record LookasideOptions
{
    /// <summary>How long one request may take before the source counts as failing and the home is asked instead.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMilliseconds(500);
    /// <summary>Failures (errors, timeouts, wrong blobs) in a row after which the source is skipped for <see cref="CutOffFor"/>.</summary>
    public int FailuresToCutOff { get; init; } = 3;
    public TimeSpan CutOffFor { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// The lookaside sources of a session, asked in order between the site cache and the home. A blob is used only if
/// SHA-256(blob) equals the authoritative tag (from the MAC'd version's keyring), so a stale, foreign or tampered
/// source costs a little time but never correctness. A source that is slow or failing is cut off (a circuit breaker)
/// and skipped without waiting until its cut-off ends; then one request tries it again.
/// </summary>
public sealed class LookasideChain : IDisposable
{
    private readonly Guarded[] _sources;
    private readonly LookasideOptions _options;

    public LookasideChain(IEnumerable<ILookasideSource> sources, LookasideOptions? options = null)
    {
        _options = options ?? new LookasideOptions();
        _sources = sources.Select(s => new Guarded(s)).ToArray();
    }

    public bool IsEmpty => _sources.Length == 0;
    public IReadOnlyList<LookasideStats> Stats => _sources.Select(g => g.Stats(DateTimeOffset.UtcNow)).ToList();

    /// <summary>The verified blob and the name of the source that had it, or null when none did.</summary>
    public async ValueTask<(byte[] Blob, string Source)?> TryGetAsync(ChunkTag tag, CancellationToken ct)
    {
        foreach (var guarded in _sources)
        {
            if (!guarded.Admit(DateTimeOffset.UtcNow)) continue;
            long asked = Stopwatch.GetTimestamp();
            byte[]? blob;
            using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                timeout.CancelAfter(_options.Timeout);
                try
                {
                    blob = await guarded.Source.TryGetAsync(tag, timeout.Token).AsTask().WaitAsync(timeout.Token);
                }
                catch (Exception) when (!ct.IsCancellationRequested)
                {
                    guarded.Failed(_options, asked);
                    continue;
                }
                catch (OperationCanceledException)
                {
                    guarded.Abandoned(); // our caller gave up: says nothing about the source
                    throw;
                }
            }
            if (blob is null) { guarded.Missed(asked); continue; }
            if (!tag.Matches(blob)) { guarded.Rejected(_options, asked); continue; }
            guarded.Hit(blob.Length, asked);
            return (blob, guarded.Source.Name);
        }
        return null;
    }

    public void Dispose()
    {
        foreach (var guarded in _sources) guarded.Source.Dispose();
    }

    /// <summary>One source with its counters and breaker state.</summary>
    private sealed class Guarded(ILookasideSource source)
    {
        private readonly Lock _lock = new();
        private long _hits, _bytes, _misses, _rejected, _failures, _skipped, _ticks;
        private int _inARow;
        private DateTimeOffset _cutOffUntil = DateTimeOffset.MinValue;
        private bool _probing;

        public ILookasideSource Source => source;

        /// <summary>Whether to ask the source now: not while it is cut off; after the cut-off, one probe at a time until it answers.</summary>
        public bool Admit(DateTimeOffset now)
        {
            lock (_lock)
            {
                if (_cutOffUntil == DateTimeOffset.MinValue) return true;
                if (now < _cutOffUntil || _probing) { _skipped++; return false; }
                _probing = true;
                return true;
            }
        }

        public void Abandoned() { lock (_lock) _probing = false; }
        public void Hit(long bytes, long asked) { lock (_lock) { _hits++; _bytes += bytes; Answered(asked); } }
        public void Missed(long asked) { lock (_lock) { _misses++; Answered(asked); } }
        public void Rejected(LookasideOptions o, long asked) { lock (_lock) { _rejected++; Problem(o, asked); } }
        public void Failed(LookasideOptions o, long asked) { lock (_lock) { _failures++; Problem(o, asked); } }

        private void Answered(long asked)
        {
            _ticks += Stopwatch.GetTimestamp() - asked;
            _inARow = 0; _probing = false; _cutOffUntil = DateTimeOffset.MinValue;
        }

        private void Problem(LookasideOptions o, long asked)
        {
            _ticks += Stopwatch.GetTimestamp() - asked;
            _probing = false;
            if (++_inARow >= o.FailuresToCutOff) _cutOffUntil = DateTimeOffset.UtcNow + o.CutOffFor;
        }

        public LookasideStats Stats(DateTimeOffset now)
        {
            lock (_lock)
                return new LookasideStats(source.Name, _hits, _bytes, _misses, _rejected, _failures, _skipped, now < _cutOffUntil,
                    Math.Round((double)_ticks / Stopwatch.Frequency, 4));
        }
    }
}

/// <summary>
/// The home with the lookaside sources in front, for fetchers that talk to an <see cref="IChunkStore"/> (prefetch,
/// copy-in): reads try the sources first (verified), everything else goes to the home.
/// </summary>
public sealed class LookasideFirstStore(LookasideChain lookaside, IChunkStore home) : IChunkStore
{
    private long _lookasideBytes;

    /// <summary>Bytes this store served from lookaside sources (so callers can tell them from the home's).</summary>
    public long LookasideBytes => Interlocked.Read(ref _lookasideBytes);

    public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
    {
        if (await lookaside.TryGetAsync(tag, ct) is not var (blob, _)) return await home.GetAsync(tag, ct);
        Interlocked.Add(ref _lookasideBytes, blob.Length);
        return blob;
    }

    public ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct) => home.PutAsync(tag, blob, ct);
    public ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct) => home.MissingAsync(tags, ct);
    public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct) => home.DeleteAsync(tag, ct);
    public IAsyncEnumerable<ChunkTag> ListAsync(CancellationToken ct) => home.ListAsync(ct);
    public override string ToString() => home.ToString() ?? "home";
}
