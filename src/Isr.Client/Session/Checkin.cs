using Isr.Client.Disk;
using Isr.Client.Homes;
using Isr.Client.Site;
using Isr.Client.Transfer;
using Isr.Format;

namespace Isr.Client.Session;

/// <summary>The home's disk is full: the check-in did not commit, and the pending version is kept at the site.</summary>
public sealed class HomeFullException(string message, Exception inner) : IOException(message, inner);

public sealed record CheckinResult(long Version, bool Side, int ChunksUploaded, long BytesUploaded, bool LockReleased)
{
    /// <summary>What the site wipe removed after this check-in (site config wipeAfterCheckin), or null when it did not run.</summary>
    public SiteWipe.Report? Wiped { get; init; }
    /// <summary>Seconds from the "missing" query to the last blob stored at the home: the transfer, without the
    /// command's start, the commit and the lock's release.</summary>
    public double UploadSeconds { get; init; }
    /// <summary>The check-in's timeline, when the command gave its start (<see cref="StepTrace"/>).</summary>
    public IReadOnlyList<TraceStep>? Trace { get; init; }
}

/// <summary>
/// Sends a suspended parcel home: uploads the blobs of its pending version that the home lacks, commits the version
/// (idempotent by commit id), resets the dirty journal to it, and optionally releases the lock. Needs no keys: the
/// version was prepared and signed at suspend.
/// </summary>
public static class Checkin
{
    /// <param name="rebase">For a running session (sync): moves its disk onto the committed version instead of emptying the journal.</param>
    public static async Task<CheckinResult> RunAsync(SiteDirectory site, IParcelHome home, string parcel, bool releaseLock,
        IProgress<long>? progress, CancellationToken ct, Func<VersionRecord, Task>? rebase = null, Action<long>? onTotal = null, StepTrace? trace = null)
    {
        var local = site.ReadLocal(parcel) ?? new ParcelLocalState();
        if (home is ServerParcelHome server) server.LockToken = local.LockToken;
        var pending = PendingCommit.Load(site.PendingCommitPath(parcel));
        trace?.Mark("pending version read");
        CheckinResult result;
        if (pending is null)
        {
            result = new CheckinResult(local.LastSeenHead ?? 0, false, 0, 0, false);
        }
        else
        {
            int count;
            long bytes;
            VersionRecord committed;
            var uploading = System.Diagnostics.Stopwatch.StartNew();
            // A check-in that ends the lock tells the server how far it is: a resume elsewhere waits for it (CheckinWait).
            await using var reporter = releaseLock && home is ServerParcelHome reporting && local.LockToken is { } held
                ? new CheckinReporter(reporting, parcel, held) : null;
            try
            {
                (count, bytes) = await Uploader.UploadMissingAsync(site.Cache, home.Chunks, pending.BlobTags,
                    reporter is null ? progress : new InlineProgress<long>(b => { reporter.Sent(b); progress?.Report(b); }), ct,
                    reporter is null ? onTotal : t => { reporter.Total(t); onTotal?.Invoke(t); });
                uploading.Stop();
                trace?.Mark($"blobs uploaded ({count}, {bytes / 1e6:F1} MB)");
                KillPoint.Reach("checkin.after-upload");
                PausePoint.Reach("checkin.after-upload");
                committed = await home.CommitAsync(parcel, pending.Version, ct);
                trace?.Mark("committed");
            }
            catch (Exception e) when (e is ServerException { Code: "insufficient_storage" } || e is IOException io && Cache.CacheSpace.IsDiskFull(io))
            {
                throw new HomeFullException($"{home.Describe} has no space left for parcel '{parcel}' (its disk is full): nothing was committed. " +
                    $"The version stays prepared at this site with every blob it needs; run 'isr checkin {parcel}' again once the home has room.", e);
            }
            KillPoint.Reach("checkin.after-commit");
            if (rebase != null) await rebase(committed);
            else if (JournalGrewSince(site, parcel, pending))
                // The guest flushed more after this version was frozen (a sync whose daemon was killed): those flushes
                // stay journaled; moving them onto the committed version needs the keys, so the next command does it.
                site.UpdateLocal(parcel, s => s with { JournalRebase = new JournalRebase(pending.BaseVersion, committed.Number, pending.Changes!) });
            else DirtyJournal.WriteEmpty(site.JournalPath(parcel), committed.Number);
            KillPoint.Reach("checkin.after-journal");
            File.Delete(site.PendingCommitPath(parcel));
            if (File.Exists(site.BackgroundCheckinPath(parcel))) File.Delete(site.BackgroundCheckinPath(parcel));
            site.UpdateLocal(parcel, s => s with { LastSeenHead = committed.Side ? s.LastSeenHead : committed.Number });
            trace?.Mark("journal and local state updated");
            result = new CheckinResult(committed.Number, committed.Side, count, bytes, false) { UploadSeconds = uploading.Elapsed.TotalSeconds };
        }
        if (releaseLock && home is ServerParcelHome lockHome && local.LockToken is { } token)
        {
            await lockHome.ReleaseLockAsync(parcel, token, ct);
            site.UpdateLocal(parcel, s => s with { LockToken = null });
            trace?.Mark("lock released");
            result = result with { LockReleased = true };
            // Committed and no longer held here: nothing of this parcel at the site is needed any more.
            // Read now, not at daemon start: the user may have set it while the daemon ran.
            var config = SiteConfig.Load(site.Root);
            if (config.WipeAfterCheckin) result = result with { Wiped = SiteWipe.Run(site, parcel, config.WipeCache) };
        }
        return trace is null ? result : result with { Trace = trace.Steps };
    }

    private static bool JournalGrewSince(SiteDirectory site, string parcel, PendingCommit pending)
    {
        var journal = new FileInfo(site.JournalPath(parcel));
        return pending is { JournalBytes: long frozen, Changes: not null } && journal.Exists && journal.Length > frozen
            && DirtyJournal.PeekBaseVersion(journal.FullName) == pending.BaseVersion;
    }

    /// <summary>Finishes a journal rebase a keyless check-in left (see <see cref="ParcelLocalState.JournalRebase"/>): keeps
    /// the journaled chunks the committed version does not hold, now based on it.</summary>
    public static void FinishJournalRebase(SiteDirectory site, string parcel, ParcelKeys keys)
    {
        if (site.ReadLocal(parcel)?.JournalRebase is not { } rebase) return;
        var path = site.JournalPath(parcel);
        if (DirtyJournal.PeekBaseVersion(path) == rebase.FromBase)
        {
            var committed = rebase.Changes.ToDictionary(c => c.Index, c => c.Tag);
            List<KeyValuePair<long, ChunkRef>> later;
            using (var journal = DirtyJournal.Open(path, rebase.FromBase, keys))
                later = journal.Replayed.Where(c => !committed.TryGetValue(c.Key, out var tag) || tag != c.Value.Tag.ToString()).ToList();
            DirtyJournal.Rewrite(path, rebase.ToVersion, later, keys).Dispose();
        }
        site.UpdateLocal(parcel, s => s with { JournalRebase = null });
    }
}

/// <summary>A committed version's changes (index and ciphertext tag) to take off a journal still based on <see cref="FromBase"/>.</summary>
public sealed record JournalRebase(long FromBase, long ToVersion, IReadOnlyList<PendingChange> Changes);
