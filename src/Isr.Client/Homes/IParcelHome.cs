using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Homes;

/// <summary>A parcel as its home knows it: no secrets in the clear (the parcel key is wrapped under the user's secrets).</summary>
public sealed record ParcelInfo(string Name, string Id, int ChunkSize, long DiskSize, byte[] WrappedKey, DateTimeOffset Created);

/// <summary>
/// The authoritative home of a user's parcels: a store directory (this slice; portable devices later) or a server.
/// The site client talks to a home only through this interface.
/// </summary>
public interface IParcelHome
{
    /// <summary>For messages: "store /media/usb/isr", "server https://…".</summary>
    string Describe { get; }

    IChunkStore Chunks { get; }

    /// <summary>Unwraps the user's secrets with the password. Throws <see cref="WrongPasswordException"/>.</summary>
    ValueTask<UserSecrets> UnlockAsync(string password, CancellationToken ct);

    /// <summary>Re-wraps the user's secrets under a new password; the secrets, and so every key, stay the same.</summary>
    ValueTask ChangePasswordAsync(string oldPassword, string newPassword, CancellationToken ct);

    ValueTask<IReadOnlyList<ParcelInfo>> ListParcelsAsync(CancellationToken ct);

    /// <summary>Throws <see cref="ParcelNotFoundException"/>.</summary>
    ValueTask<ParcelInfo> GetParcelAsync(string name, CancellationToken ct);

    /// <summary>Creates a parcel with its first version; every blob it references must be stored already. Returns the version as numbered.</summary>
    ValueTask<VersionRecord> CreateParcelAsync(ParcelInfo parcel, VersionRecord first, CancellationToken ct);

    /// <summary>All versions, oldest first.</summary>
    ValueTask<IReadOnlyList<VersionRecord>> ListVersionsAsync(string name, CancellationToken ct);

    /// <summary>Adds a version (numbered by the home) whose blobs must all be stored. A repeated commit id returns the
    /// version it made. Throws <see cref="CommitConflictException"/> if blobs are missing or the home refuses the parent.</summary>
    ValueTask<VersionRecord> CommitAsync(string name, VersionRecord version, CancellationToken ct);
}

public sealed class WrongPasswordException(string message) : Exception(message);
/// <summary>The home refuses this site: a revoked or expired session, or a disabled account.</summary>
public sealed class NotAuthorizedException(string message) : Exception(message);
public sealed class ParcelNotFoundException(string message) : Exception(message);
public sealed class CommitConflictException(string message) : Exception(message);
