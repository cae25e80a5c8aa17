using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Storage.Metadata;

namespace Isr.Client.Daemon;

/// <summary>What `isr status` shows of a hoard the daemon runs for a request made at another site.</summary>
public sealed record BackgroundHoard(long Request, string Parcel, long? Version, string State, long BlobsDone, long BlobsTotal, long BytesFetched,
    string? Error);

/// <summary>
/// The site daemon's side of hoarding at another site: polls the server with the site's hoard-only token, takes the
/// site's open requests one at a time (oldest first), fills the cache with a keyless <see cref="Hoarder"/> — few requests
/// in flight and the site's <c>hoardBwlimit</c>, so a session here keeps the link — and reports progress and the end.
/// Needs no password: blobs stay ciphertext and keyring page tags are plaintext. A lost connection backs off (bounded)
/// and resumes: what the cache holds is not fetched again.
/// </summary>
internal sealed class HoardAgent(SiteDirectory site, Action<string> log)
{
    /// <summary>Blobs in flight for a background hoard (a foreground `isr hoard` uses 16).</summary>
    private const int Concurrency = 4;
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromMinutes(5), ReportEvery = TimeSpan.FromSeconds(2);
    private readonly Dictionary<string, BackgroundHoard> _hoards = new();
    private volatile bool _busy;

    /// <summary>A hoard is running (the daemon does not exit idle meanwhile).</summary>
    public bool Busy => _busy;

    public BackgroundHoard[] Snapshot()
    {
        lock (_hoards) return _hoards.Values.OrderBy(h => h.Parcel).ToArray();
    }

    public async Task RunAsync(CancellationToken ct)
    {
        var delay = site.Config.HoardPoll;
        while (!ct.IsCancellationRequested)
        {
            bool more = false;
            try
            {
                if (site.HoardToken is { } token)
                {
                    using var server = new SiteHoardClient(token);
                    more = await HoardNextAsync(server, ct);
                }
                delay = site.Config.HoardPoll;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (NotAuthorizedException e)
            {
                // revoked (isr site revoke, logout elsewhere) or the account disabled: the token is of no further use
                log($"hoard: the server refuses this site's hoard token ({e.Message}); forgetting it until the next 'isr login'");
                site.SaveHoardToken(null);
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                log($"hoard: {e.Message}; asking again in {delay.TotalSeconds:F0} s");
                delay = TimeSpan.FromTicks(Math.Min(MaxBackoff.Ticks, delay.Ticks * 2));
            }
            if (more) continue;
            try { await Task.Delay(delay, ct); }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>Runs the oldest open request of this site, if any; true if one ran.</summary>
    private async Task<bool> HoardNextAsync(SiteHoardClient server, CancellationToken ct)
    {
        var next = (await server.ListRequestsAsync(ct)).Where(r => HoardStates.IsOpen(r.State)).MinBy(r => r.Id);
        if (next is null) return false;
        _busy = true;
        try
        {
            await HoardAsync(server, next, ct);
        }
        finally
        {
            _busy = false;
        }
        return true;
    }

    private async Task HoardAsync(SiteHoardClient server, HoardRequestRecord request, CancellationToken ct)
    {
        var versions = await server.ListVersionsAsync(request.Parcel, ct);
        var target = request.Version is long n ? versions.FirstOrDefault(v => v.Number == n) : versions.LastOrDefault(v => !v.Side);
        if (target is null)
        {
            await EndAsync(server, request, null, 0, 0, HoardStates.Failed, $"parcel '{request.Parcel}' has no version {request.Version}", ct);
            return;
        }
        log($"hoard: {request.Parcel} v{target.Number} (request {request.Id})");
        var limit = site.Config.HoardBytesPerSecond is double rate ? new TokenBucket(rate) : null;
        var hoarder = new Hoarder(site.Cache, server.Chunks, new HoardOptions { Concurrency = Concurrency, Limit = limit });
        HoardProgress latest = new(0, 0, 0, 0);
        Show(request, target.Number, HoardStates.Running, latest, null);
        await server.ReportAsync(request.Id, new HoardUpdate(HoardStates.Running, target.Number, 0, 0, 0, null), ct);
        using var reporting = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var reporter = ReportWhileRunningAsync(server, request, target, () => latest, reporting.Token);
        HoardResult result;
        try
        {
            result = await hoarder.HoardAsync(request.Parcel, target, new InlineProgress<HoardProgress>(p =>
            {
                latest = p;
                Show(request, target.Number, HoardStates.Running, p, null);
            }), m => log("hoard: " + m), ct);
        }
        catch (Exception e) when (e is CacheFullException or ChunkIntegrityException)
        {
            // not transient: say so at the server and here; what was fetched stays cached for a later request
            await reporting.CancelAsync();
            await reporter;
            await EndAsync(server, request, target.Number, latest.Done, latest.ToFetch, HoardStates.Failed, e.Message, ct, latest.BytesFetched);
            return;
        }
        catch
        {
            await reporting.CancelAsync();
            await reporter;
            Show(request, target.Number, HoardStates.Running, latest, "interrupted; resuming when the server answers again");
            throw;
        }
        await reporting.CancelAsync();
        await reporter;
        await EndAsync(server, request, target.Number, result.Blobs, result.Blobs, HoardStates.Done, null, ct, result.BytesFetched);
        log($"hoard: {request.Parcel} v{target.Number} done: {result.Fetched} blobs fetched ({result.BytesFetched} bytes) in {result.Seconds:F2} s, " +
            $"{result.AlreadyCached} were cached");
    }

    private async Task ReportWhileRunningAsync(SiteHoardClient server, HoardRequestRecord request, VersionRecord target, Func<HoardProgress> latest,
        CancellationToken ct)
    {
        using var timer = new PeriodicTimer(ReportEvery);
        try
        {
            while (await timer.WaitForNextTickAsync(ct))
            {
                var p = latest();
                try { await server.ReportAsync(request.Id, new HoardUpdate(HoardStates.Running, target.Number, p.Done, p.ToFetch, p.BytesFetched, null), ct); }
                catch (Exception e) when (e is not OperationCanceledException) { log($"hoard: progress report failed: {e.Message}"); }
            }
        }
        catch (OperationCanceledException) { }
    }

    private async Task EndAsync(SiteHoardClient server, HoardRequestRecord request, long? version, long done, long total, string state, string? error,
        CancellationToken ct, long bytes = 0)
    {
        Show(request, version, state, new HoardProgress((int)done, (int)total, bytes, 0), error);
        if (error is not null) log($"hoard: {request.Parcel} (request {request.Id}) failed: {error}");
        await server.ReportAsync(request.Id, new HoardUpdate(state, version, done, total, bytes, error), ct);
    }

    private void Show(HoardRequestRecord request, long? version, string state, HoardProgress p, string? error)
    {
        lock (_hoards) _hoards[request.Parcel] = new BackgroundHoard(request.Id, request.Parcel, version, state, p.Done, p.ToFetch, p.BytesFetched, error);
    }
}
