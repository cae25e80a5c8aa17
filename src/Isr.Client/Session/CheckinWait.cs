using Isr.Client.Homes;

namespace Isr.Client.Session;

/// <summary>
/// A resume at this site while another site is checking the parcel in: rather than refusing at once, wait for that
/// check-in to commit and release the lock (docs/PROTOCOL.md, Locks), then resume what it committed. A holder that is
/// not checking in (its VM runs there), or whose check-in stopped reporting, is refused as before.
/// </summary>
public static class CheckinWait
{
    public static readonly TimeSpan DefaultStaleAfter = TimeSpan.FromMinutes(2);
    private static readonly TimeSpan FirstPoll = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan LastPoll = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Returns once no other site holds the lock (also at once if none does, or this site holds it). While the holder
    /// checks in, reports its lock (with <see cref="LockInfo.Checkin"/>) after each poll. Throws
    /// <see cref="ParcelLockedException"/> if the holder is not checking in, or its progress was not updated for
    /// <paramref name="staleAfter"/> (by the report's time, or as this site saw it, whichever is longer ago: a site
    /// clock behind the server's cannot keep it waiting for a lost site).
    /// </summary>
    public static async Task WaitAsync(ServerParcelHome home, string parcel, string siteId, TimeSpan staleAfter, IProgress<LockInfo> progress,
        TimeProvider time, CancellationToken ct)
    {
        var poll = FirstPoll;
        DateTimeOffset? updated = null;
        var seenChange = time.GetUtcNow();
        // Ends when the lock is released, or when the holder's reports stop for staleAfter.
        while (true)
        {
            var holder = await home.GetLockAsync(parcel, ct);
            if (holder is null || holder.SiteId == siteId) return;
            if (holder.Checkin is not { } checkin) throw ServerParcelHome.Locked(holder);
            var now = time.GetUtcNow();
            if (checkin.Updated != updated) (updated, seenChange) = (checkin.Updated, now);
            var quiet = now - (checkin.Updated < seenChange ? checkin.Updated : seenChange);
            if (quiet > staleAfter)
                throw ServerParcelHome.Locked(holder,
                    $"It was checking the parcel in, but has reported no progress for {quiet.TotalSeconds:F0} s (at {checkin.Sent} bytes sent), " +
                    $"longer than the {staleAfter.TotalSeconds:F0} s a resume waits for it.");
            progress.Report(holder);
            await Task.Delay(poll, time, ct);
            poll = poll * 2 < LastPoll ? poll * 2 : LastPoll;
        }
    }
}
