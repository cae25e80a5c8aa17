using System.Text.Json;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Homes;

/// <summary>
/// A server home while the server cannot be reached (disconnected operation): the parcel record and version history
/// come from what this site saved at its last connected resume (keyless; the records are authenticated by their MACs,
/// checked again when opened), so nothing waits for a network timeout. Blobs still go to the server, but the site cache
/// is asked first: a hoarded parcel needs none. Commits and lock changes need the server, and fail as unreachable.
/// </summary>
public sealed class OfflineHome(ServerParcelHome server, Site.SiteDirectory site, string reason) : IParcelHome
{
    /// <summary>What home-view.json holds (internal for <see cref="Site.ParcelStateJsonContext"/>).</summary>
    internal sealed record View(ParcelInfo Parcel, List<VersionRecord> Versions);

    /// <summary>Why the server is not being asked.</summary>
    public string Reason => reason;
    public string Describe => $"{server.Describe}, disconnected";
    public IChunkStore Chunks => server.Chunks;

    private static string ViewPath(Site.SiteDirectory site, string name) => Path.Combine(site.ParcelDirectory(name), "home-view.json");

    /// <summary>Saves what a connected resume saw, for the next disconnected one.</summary>
    public static void Save(Site.SiteDirectory site, ParcelInfo parcel, IReadOnlyList<VersionRecord> versions) =>
        Durable.WriteFileAtomically(ViewPath(site, parcel.Name), Encode(parcel, versions));

    /// <summary>Writes and reads back a view in memory only: the daemon's warm-up (its JSON metadata, built once).</summary>
    public static void WarmUp(ParcelInfo parcel, IReadOnlyList<VersionRecord> versions) =>
        Decode(Encode(parcel, versions));

    /// <summary>The versions saved at the last connected resume of <paramref name="name"/>, or null if there was none.</summary>
    public static IReadOnlyList<VersionRecord>? SavedVersions(Site.SiteDirectory site, string name) =>
        File.Exists(ViewPath(site, name)) ? Load(site, name).Versions : null;

    private static View Load(Site.SiteDirectory site, string name) => Decode(File.ReadAllBytes(ViewPath(site, name)));

    private static byte[] Encode(ParcelInfo parcel, IReadOnlyList<VersionRecord> versions) =>
        JsonSerializer.SerializeToUtf8Bytes(new View(parcel, versions.ToList()), Site.ParcelStateJsonContext.Default.View);

    private static View Decode(byte[] saved) => JsonSerializer.Deserialize(saved, Site.ParcelStateJsonContext.Default.View)!;

    private View Saved(string name) =>
        File.Exists(ViewPath(site, name)) ? Load(site, name)
            : throw Unreachable($"this site never resumed parcel '{name}' while connected, so it cannot work on it disconnected");

    private ServerUnreachableException Unreachable(string what) => new($"disconnected ({reason}): {what}", new IOException(reason));

    public ValueTask<UserSecrets> UnlockAsync(string password, CancellationToken ct) => server.UnlockAsync(password, ct);
    public ValueTask<ParcelInfo> GetParcelAsync(string name, CancellationToken ct) => ValueTask.FromResult(Saved(name).Parcel);
    public ValueTask<IReadOnlyList<VersionRecord>> ListVersionsAsync(string name, CancellationToken ct) =>
        ValueTask.FromResult<IReadOnlyList<VersionRecord>>(Saved(name).Versions);

    public ValueTask<IReadOnlyList<ParcelInfo>> ListParcelsAsync(CancellationToken ct) => throw Unreachable("listing parcels needs the server");
    public ValueTask ChangePasswordAsync(string oldPassword, string newPassword, CancellationToken ct) => throw Unreachable("a password change needs the server");
    public ValueTask<VersionRecord> CreateParcelAsync(ParcelInfo parcel, VersionRecord first, CancellationToken ct) => throw Unreachable("creating a parcel needs the server");
    public ValueTask<VersionRecord> CommitAsync(string name, VersionRecord version, CancellationToken ct) => throw Unreachable("'isr checkin' sends the version when the server is back");
}
