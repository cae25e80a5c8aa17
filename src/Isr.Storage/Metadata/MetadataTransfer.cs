using Isr.Format;

namespace Isr.Storage.Metadata;

/// <summary>
/// Moving a whole deployment between engines (<c>isr-server migrate</c>): every row, with its identity kept — user
/// ids, parcel keys, version numbers, MACs, lock tokens and states, session and hoard-only token hashes, hoard requests, blob holdings, the server secret
/// and the collection epoch — so that sites, lock holders and logged-in clients carry on as if nothing happened.
/// Meant for a deployment whose servers are stopped.
/// </summary>
public interface IMetadataTransfer
{
    /// <summary>Every row, read in one consistent snapshot.</summary>
    Task<MetadataSnapshot> ExportAsync(CancellationToken ct);

    /// <summary>Loads <paramref name="snapshot"/> into this initialised store in one transaction.</summary>
    /// <exception cref="MetadataConflictException">the store already holds users or parcels</exception>
    Task ImportAsync(MetadataSnapshot snapshot, CancellationToken ct);
}

public sealed record MetadataSnapshot(
    byte[] ServerSecret,
    long CollectionEpoch,
    IReadOnlyList<UserRecord> Users,
    IReadOnlyList<SessionRow> Sessions,
    IReadOnlyList<ParcelRecord> Parcels,
    IReadOnlyList<VersionRow> Versions,
    IReadOnlyList<LockRow> Locks,
    IReadOnlyList<BlobHolding> Holdings,
    IReadOnlyList<SiteTokenRow> SiteTokens,
    IReadOnlyList<HoardRequestRow> HoardRequests);

/// <summary>A hoard-only token of a user's site, live or revoked.</summary>
public sealed record SiteTokenRow(byte[] TokenHash, long UserId, string SiteId, string SiteName, DateTimeOffset Created, bool Revoked);

public sealed record HoardRequestRow(long UserId, long ParcelKey, HoardRequestRecord Request);

public sealed record SessionRow(byte[] TokenHash, long UserId, string SiteId, string SiteName, DateTimeOffset Created,
    DateTimeOffset Expires, bool Revoked);

/// <summary>A stored version: its record (with number, parent and side set), why it is a side version, when it was committed.</summary>
public sealed record VersionRow(long ParcelKey, VersionRecord Version, string? Reason, DateTimeOffset Committed);

public enum LockState { Held, Released, Broken }

/// <summary>A lock row, current or past (past tokens stay known: a late commit under them becomes a side version).</summary>
public sealed record LockRow(string Token, long ParcelKey, long UserId, string SiteId, string SiteName, DateTimeOffset Acquired,
    DateTimeOffset LastContact, LockState State);

public sealed record BlobHolding(ChunkTag Tag, long UserId, DateTimeOffset LastSeen);

/// <summary>Lock states as both engines spell them in their <c>locks.state</c> column.</summary>
internal static class LockStates
{
    public static string Name(LockState state) => state switch
    {
        LockState.Held => "held",
        LockState.Released => "released",
        LockState.Broken => "broken",
        _ => throw new ArgumentOutOfRangeException(nameof(state)),
    };

    public static LockState Parse(string name) => name switch
    {
        "held" => LockState.Held,
        "released" => LockState.Released,
        "broken" => LockState.Broken,
        _ => throw new InvalidDataException($"unknown lock state '{name}'"),
    };
}
