using System.Text.Json.Serialization;
using Isr.Format;

namespace Isr.Storage.Metadata;

/// <summary>
/// The server's keyless metadata: users, sessions, parcels, versions, locks and which user holds which blob.
/// Every rule that reads and then writes (commit, rollback, lock acquire/release/break, parcel creation, prune) is one
/// atomic step inside the engine, so that concurrent callers on one parcel — from one process or several stateless
/// servers sharing a database — see exactly one winner. Engines: <see cref="SqliteMetadataStore"/> (embedded);
/// <see cref="PostgresMetadataStore"/> (several servers over one database). docs/PROTOCOL.md is the rulebook.
/// Times are passed in by the caller (testable, one clock per request); engines store them with millisecond precision.
/// </summary>
public interface IMetadataStore : IMetadataTransfer, IDisposable
{
    /// <summary>Creates or migrates the schema; idempotent.</summary>
    Task InitializeAsync(CancellationToken ct);

    // ---- server settings ----

    /// <summary>A random 32-byte secret created with the schema (fake prelogin parameters for unknown users).</summary>
    Task<byte[]> GetServerSecretAsync(CancellationToken ct);

    /// <summary>Increases each time garbage collection deletes blobs: caches of "this page's blobs are all stored" made
    /// under an older epoch must be dropped.</summary>
    Task<long> GetCollectionEpochAsync(CancellationToken ct);
    Task<long> AdvanceCollectionEpochAsync(CancellationToken ct);

    // ---- users ----

    /// <exception cref="MetadataConflictException">a user of that name exists</exception>
    Task<UserRecord> AddUserAsync(NewUser user, DateTimeOffset now, CancellationToken ct);
    Task<UserRecord?> GetUserAsync(string name, CancellationToken ct);
    Task<IReadOnlyList<UserRecord>> ListUsersAsync(CancellationToken ct);
    /// <summary>Disables the account and revokes its sessions. False if there is no such user.</summary>
    Task<bool> DisableUserAsync(string name, CancellationToken ct);
    /// <summary>Replaces verifier, KDF parameters and wrapped secrets if the current verifier is still
    /// <paramref name="expectedVerifier"/> (compare-and-swap). False otherwise.</summary>
    Task<bool> ChangePasswordAsync(long userId, byte[] expectedVerifier, byte[] newVerifier, KdfParameters kdf, byte[] wrappedSecrets,
        byte[]? recoveryWrappedSecrets, CancellationToken ct);

    // ---- sessions (only SHA-256 of the bearer token is stored) ----

    Task CreateSessionAsync(byte[] tokenHash, long userId, string siteId, string siteName, DateTimeOffset now, DateTimeOffset expires, CancellationToken ct);
    /// <summary>The live session of this token hash (not revoked, not expired at <paramref name="now"/>), or null.</summary>
    Task<SessionRecord?> ResolveSessionAsync(byte[] tokenHash, DateTimeOffset now, CancellationToken ct);
    Task RevokeSessionAsync(byte[] tokenHash, CancellationToken ct);

    // ---- hoard-only site tokens and hoard requests (PROTOCOL.md "Hoarding at another site") ----

    /// <summary>Issues a hoard-only token to the user's site (only its SHA-256 is stored); the site's earlier live tokens
    /// are revoked, so a site holds one.</summary>
    Task CreateSiteTokenAsync(byte[] tokenHash, long userId, string siteId, string siteName, DateTimeOffset now, CancellationToken ct);
    /// <summary>The live hoard-only token of this hash (<see cref="SessionRecord.HoardOnly"/> set, no expiry), or null.</summary>
    Task<SessionRecord?> ResolveSiteTokenAsync(byte[] tokenHash, CancellationToken ct);
    /// <summary>The user's sites holding a live hoard-only token, by name.</summary>
    Task<IReadOnlyList<SiteRecord>> ListSitesAsync(long userId, CancellationToken ct);
    /// <summary>Revokes the hoard-only token of the user's site whose id is <paramref name="siteId"/>; its open requests end
    /// as <see cref="HoardStates.Revoked"/>. False if the site held no live token.</summary>
    Task<bool> RevokeSiteAsync(long userId, string siteId, DateTimeOffset now, CancellationToken ct);
    /// <summary>Records a request that the site hoard the parcel (<paramref name="version"/> null: the head when the site
    /// starts). An open request of the same parcel for the same site is returned instead (Created false).</summary>
    Task<(HoardRequestRecord Request, bool Created)> AddHoardRequestAsync(long userId, long parcelKey, SiteRecord site, long? version,
        DateTimeOffset now, CancellationToken ct);
    /// <summary>The user's requests, newest first; with <paramref name="siteId"/>, only that site's.</summary>
    Task<IReadOnlyList<HoardRequestRecord>> ListHoardRequestsAsync(long userId, string? siteId, CancellationToken ct);
    /// <summary>A site's report on its open request; null if the request is not an open one of this user's site.</summary>
    Task<HoardRequestRecord?> UpdateHoardRequestAsync(long userId, string siteId, long id, HoardUpdate update, DateTimeOffset now, CancellationToken ct);
    /// <summary>Whether the site has an open request for the parcel (what a hoard-only token may read).</summary>
    Task<bool> HasOpenHoardRequestAsync(long userId, string siteId, long parcelKey, CancellationToken ct);

    // ---- parcels (names are unique per owner) ----

    /// <summary>Creates the parcel with <paramref name="first"/> as version 1 (head). If the name exists and its versions
    /// hold <paramref name="first"/>'s commit id, returns that version as <see cref="CommitStatus.Existing"/>; if the name
    /// exists otherwise, <see cref="CommitStatus.Conflict"/>.</summary>
    Task<CommitResult> CreateParcelAsync(long ownerId, NewParcel parcel, VersionRecord first, DateTimeOffset now, CancellationToken ct);
    Task<ParcelRecord?> GetParcelAsync(long ownerId, string name, CancellationToken ct);
    Task<IReadOnlyList<ParcelSummary>> ListParcelsAsync(long ownerId, CancellationToken ct);
    /// <summary>All parcels of all users (administration).</summary>
    Task<IReadOnlyList<ParcelRecord>> ListAllParcelsAsync(CancellationToken ct);
    Task<ParcelSummary?> GetParcelSummaryAsync(long parcelKey, CancellationToken ct);

    // ---- versions ----

    /// <summary>Oldest first, each with number, parent and side set.</summary>
    Task<IReadOnlyList<VersionRecord>> ListVersionsAsync(long parcelKey, CancellationToken ct);
    Task<VersionRecord?> FindByCommitIdAsync(long parcelKey, string commitId, CancellationToken ct);
    /// <summary>PROTOCOL.md "Versions" rules 1, 3, 4 (rule 2, blobs stored, is the caller's check before this call).
    /// Returns <see cref="CommitStatus.Existing"/>, <see cref="CommitStatus.Head"/>, <see cref="CommitStatus.Side"/>,
    /// <see cref="CommitStatus.Forbidden"/> (token never a lock of this parcel) or <see cref="CommitStatus.NotFound"/>.</summary>
    Task<CommitResult> CommitAsync(long parcelKey, VersionRecord version, string? lockToken, DateTimeOffset now, CancellationToken ct);
    /// <summary>Makes a new head from a record naming older roots. Needs the record's parent to be the head
    /// (<see cref="CommitStatus.Conflict"/> otherwise) and no other site holding the lock (<see cref="CommitStatus.Locked"/>).</summary>
    Task<CommitResult> RollbackAsync(long parcelKey, VersionRecord version, string? lockToken, DateTimeOffset now, CancellationToken ct);
    /// <summary>Retention (see <see cref="PrunePolicy"/>). Returns the versions removed.</summary>
    Task<IReadOnlyList<VersionRecord>> PruneAsync(long parcelKey, int keepHeads, CancellationToken ct);
    /// <summary>Every version of every parcel (garbage collection and fsck walk their roots).</summary>
    Task<IReadOnlyList<StoredVersion>> ListAllVersionsAsync(CancellationToken ct);

    // ---- locks ----

    /// <summary>Grants the lock to the site, or returns the same token again if this site holds it already; if another
    /// site holds it, <see cref="LockGrant.Granted"/> is false and <see cref="LockGrant.Lock"/> names the holder.</summary>
    Task<LockGrant> AcquireLockAsync(long parcelKey, long userId, string siteId, string siteName, DateTimeOffset now, CancellationToken ct);
    Task<LockRelease> ReleaseLockAsync(long parcelKey, string token, CancellationToken ct);
    /// <summary>Breaks the current lock (its token stays known). False if the parcel was not locked.</summary>
    Task<bool> BreakLockAsync(long parcelKey, CancellationToken ct);
    Task<LockInfo?> GetLockAsync(long parcelKey, CancellationToken ct);
    /// <summary>Refreshes lastContact if <paramref name="token"/> is the parcel's current lock.</summary>
    Task TouchLockAsync(long parcelKey, string token, DateTimeOffset now, CancellationToken ct);
    /// <summary>Records how far the holder's check-in is (and refreshes lastContact), so that another site can wait for
    /// its commit instead of being refused. False if <paramref name="token"/> is not the parcel's current lock. The
    /// progress lasts until the lock ends or its holder takes it again (resumes there).</summary>
    Task<bool> ReportCheckinAsync(long parcelKey, string token, long sent, long? total, DateTimeOffset now, CancellationToken ct);

    // ---- blobs: who holds which (dedup without disclosure) and when it was last uploaded or asked about ----

    /// <summary>Records that the user holds these blobs (uploaded them) and sets their last-seen time.</summary>
    Task RecordBlobsAsync(long userId, IReadOnlyCollection<ChunkTag> tags, DateTimeOffset now, CancellationToken ct);
    /// <summary>Those of <paramref name="tags"/> the user holds. With <paramref name="touch"/>, also sets their last-seen
    /// time (so that garbage collection spares a blob a client was just told it need not upload).</summary>
    Task<IReadOnlySet<ChunkTag>> HeldBlobsAsync(long userId, IReadOnlyCollection<ChunkTag> tags, DateTimeOffset? touch, CancellationToken ct);
    /// <summary>Latest last-seen time of each blob over all users (absent: nobody holds it).</summary>
    Task<IReadOnlyDictionary<ChunkTag, DateTimeOffset>> LastSeenAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct);
    /// <summary>Forgets every holder of the blob if none has seen it since <paramref name="seenBefore"/>. True if the
    /// blob may now be deleted.</summary>
    Task<bool> ForgetBlobAsync(ChunkTag tag, DateTimeOffset seenBefore, CancellationToken ct);

    Task<MetadataStats> GetStatsAsync(CancellationToken ct);
}

/// <summary>Retention rule of <see cref="IMetadataStore.PruneAsync"/>: keep the newest N head-line versions (side = false,
/// always including the current head) and every side version newer than the oldest kept head-line version; remove
/// the rest. Recent side work (a broken holder's check-in) thus survives as long as the heads around it.</summary>
public static class PrunePolicy
{
    public static IReadOnlyList<VersionRecord> Select(IReadOnlyList<VersionRecord> versions, int keepHeads)
    {
        if (keepHeads < 1) throw new ArgumentOutOfRangeException(nameof(keepHeads), "keep at least the head");
        var heads = versions.Where(v => !v.Side).OrderByDescending(v => v.Number).ToList();
        if (heads.Count <= keepHeads) return [];
        long oldestKept = heads[keepHeads - 1].Number;
        return versions.Where(v => v.Number < oldestKept).OrderBy(v => v.Number).ToList();
    }
}

/// <summary>PROTOCOL.md "Versions" rules 3 and 4 as every engine applies them inside its commit transaction.</summary>
public static class CommitRules
{
    /// <summary>Why a commit under a lock in <paramref name="lockState"/> ("held", "released", "broken") becomes a side
    /// version, given the parcel's current <paramref name="head"/>; null when it becomes the head.</summary>
    public static string? SideReason(string lockState, VersionRecord? head, VersionRecord version) => lockState switch
    {
        "broken" => "the lock was broken",
        "released" => "the lock was released",
        _ when head is not null && version.ParentMac != head.Mac => $"the parent is no longer the head (version {head.Number})",
        _ => null,
    };
}

public sealed record NewUser(string Name, byte[] Verifier, KdfParameters Kdf, byte[] WrappedSecrets, byte[] RecoveryWrappedSecrets);

public sealed record UserRecord(long Id, string Name, byte[] Verifier, KdfParameters Kdf, byte[] WrappedSecrets,
    byte[] RecoveryWrappedSecrets, bool Disabled, DateTimeOffset Created);

/// <param name="HoardOnly">A site's hoard-only token, not a login session: it may list the site's hoard requests, read
/// the requested parcels' versions and download blobs, nothing else.</param>
public sealed record SessionRecord(long UserId, string UserName, bool UserDisabled, string SiteId, string SiteName,
    DateTimeOffset Created, DateTimeOffset Expires, bool HoardOnly = false);

/// <summary>A site of a user that holds a live hoard-only token.</summary>
public sealed record SiteRecord(string SiteId, string SiteName, DateTimeOffset Created);

/// <summary>A request that a site hoard a parcel, with the site's last report.</summary>
public sealed record HoardRequestRecord(long Id, string Parcel, string SiteId, string SiteName, long? Version, string State,
    long BlobsDone, long BlobsTotal, long BytesDone, string? Error, DateTimeOffset Created, DateTimeOffset Updated);

/// <summary>A site's report: <see cref="HoardStates.Running"/> with progress, or an end state.</summary>
public sealed record HoardUpdate(string State, long? Version, long BlobsDone, long BlobsTotal, long BytesDone, string? Error);

public static class HoardStates
{
    public const string Pending = "pending", Running = "running", Done = "done", Failed = "failed", Revoked = "revoked";
    /// <summary>States a site may report.</summary>
    public static readonly IReadOnlySet<string> Reportable = new HashSet<string> { Running, Done, Failed };
    public static bool IsOpen(string state) => state is Pending or Running;
}

public sealed record NewParcel(string Name, string Id, int ChunkSize, long DiskSize, byte[] WrappedKey, DateTimeOffset Created);

/// <summary>A parcel; <see cref="Key"/> is the engine's identity of it (names are unique per owner only).</summary>
public sealed record ParcelRecord(long Key, long OwnerId, string Owner, string Name, string Id, int ChunkSize, long DiskSize,
    byte[] WrappedKey, DateTimeOffset Created);

public sealed record ParcelSummary(ParcelRecord Parcel, long Head, LockInfo? Lock);

/// <summary>A lock as anyone may see it: never the token.</summary>
public sealed record LockInfo(string SiteId, string SiteName, DateTimeOffset Acquired, DateTimeOffset LastContact, string User,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] LockCheckin? Checkin = null);

/// <summary>The holder is checking the parcel in: bytes sent of the total (null until the holder knows it), when the
/// check-in started and when the holder last reported.</summary>
public sealed record LockCheckin(long Sent, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? Total,
    DateTimeOffset Started, DateTimeOffset Updated);

public sealed record LockGrant(bool Granted, string? Token, LockInfo Lock);

public enum LockRelease { Released, AlreadyReleased, UnknownToken }

public enum CommitStatus { Head, Side, Existing, Forbidden, NotFound, Conflict, Locked }

public sealed record CommitResult(CommitStatus Status, VersionRecord? Version = null, string? Reason = null, LockInfo? Lock = null)
{
    public bool Accepted => Status is CommitStatus.Head or CommitStatus.Side or CommitStatus.Existing;
}

public sealed record StoredVersion(long ParcelKey, string Owner, string Parcel, VersionRecord Record);

public sealed record MetadataStats(int Users, int Parcels, int Versions, int SideVersions, int HeldLocks, long BlobHoldings, long DistinctBlobs);

public sealed class MetadataConflictException(string message) : Exception(message);
