using System.Net;
using System.Text.Json;
using Isr.Format;
using Isr.Storage;
using Isr.Storage.Metadata;

namespace Isr.Client.Homes;

/// <summary>Who holds a parcel's lock (never the token), and how far its check-in is if it is checking the parcel in.</summary>
public sealed record LockInfo(string SiteId, string SiteName, DateTimeOffset Acquired, DateTimeOffset LastContact, string? User = null,
    LockCheckin? Checkin = null);

/// <summary>The parcel is locked by another site.</summary>
public sealed class ParcelLockedException(string message, LockInfo? holder) : Exception(message)
{
    public LockInfo? Holder { get; } = holder;
}

/// <summary>
/// The isr server as a parcel home (docs/PROTOCOL.md). Unlocking needs no network: the user's secrets were wrapped
/// under the password's key and kept at login. Commits carry the parcel's lock token.
/// </summary>
public sealed class ServerParcelHome : IParcelHome, IDisposable
{
    private readonly ServerConnection _server;
    private readonly LoginRecord _login;

    public ServerParcelHome(LoginRecord login)
    {
        _login = login;
        Login = login;
        _server = new ServerConnection(login.Server, login.Fingerprint, login.Token);
        Chunks = new ServerChunkStore(_server);
    }

    public string Describe => $"server {_login.Server} (user {_login.User})";
    public IChunkStore Chunks { get; }
    public ServerConnection Connection => _server;
    /// <summary>Lock token to send with commits; set by the session that took the lock.</summary>
    public string? LockToken { get; set; }

    public ValueTask<UserSecrets> UnlockAsync(string password, CancellationToken ct)
    {
        var keys = PasswordKdf.Derive(password, _login.Kdf);
        try
        {
            return ValueTask.FromResult(UserSecrets.Unwrap(keys.KeyEncryptionKey, _login.WrappedSecrets));
        }
        catch (MalformedDataException)
        {
            throw new WrongPasswordException($"wrong password for user {_login.User} at {_login.Server}");
        }
    }

    /// <summary>Re-wraps the secrets under the new password; the server gets the new verifier's secret and the new wrapped blob.
    /// The caller must save <see cref="Login"/> afterwards (it holds the new wrapped secrets).</summary>
    public async ValueTask ChangePasswordAsync(string oldPassword, string newPassword, CancellationToken ct) =>
        await RewrapAsync(oldPassword, newPassword, await UnlockAsync(oldPassword, ct), ct);

    /// <summary>Makes the account keep <paramref name="secrets"/> (a portable store's) instead of its own, so that the store's
    /// parcels can be backed up here. Only for an account with no parcels: theirs could no longer be opened. The server's
    /// recovery copy wrapped the old secrets, so the adopted ones are wrapped under a new recovery key, which is returned
    /// to be shown to the user once (the old recovery key opens nothing of use any more).</summary>
    public async ValueTask<byte[]> AdoptSecretsAsync(string password, UserSecrets secrets, CancellationToken ct)
    {
        await UnlockAsync(password, ct);
        if ((await ListParcelsAsync(ct)).Count > 0)
            throw new CommitConflictException($"the account {_login.User} at {_login.Server} has parcels under other keys; back this store up to an account of its own");
        var recoveryKey = System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
        await RewrapAsync(password, password, secrets, ct, secrets.Wrap(recoveryKey));
        return recoveryKey;
    }

    private async ValueTask RewrapAsync(string oldPassword, string newPassword, UserSecrets secrets, CancellationToken ct, byte[]? recoveryWrapped = null)
    {
        var oldKeys = PasswordKdf.Derive(oldPassword, _login.Kdf);
        var kdf = KdfParameters.CreateDefault();
        var newKeys = PasswordKdf.Derive(newPassword, kdf);
        var wrapped = secrets.Wrap(newKeys.KeyEncryptionKey);
        await Call(() => _server.SendJsonAsync(HttpMethod.Put, "api/v1/account/password",
            new PasswordChangeRequest(oldKeys.AuthSecret, newKeys.AuthSecret, kdf, wrapped, recoveryWrapped), Json.PasswordChangeRequest, Json.JsonElement, ct));
        Login = _login with { WrappedSecrets = wrapped, Kdf = kdf };
    }

    /// <summary>What this site keeps of the login (updated by a password change).</summary>
    public LoginRecord Login { get; private set; }

    private static ServerJsonContext Json => ServerJsonContext.Default;

    // The protocol's messages (docs/PROTOCOL.md); internal for ServerJsonContext. Absent (null) members are not sent.
    // Calls whose answer carries nothing (204) read any body as a JsonElement and drop it.
    internal sealed record PasswordChangeRequest(byte[] AuthSecret, byte[] NewAuthSecret, KdfParameters Kdf, byte[] WrappedSecrets, byte[]? RecoveryWrappedSecrets);
    internal sealed record CreateParcelRequest(ParcelInfo Parcel, VersionRecord First);
    internal sealed record CommitRequest(string CommitId, VersionRecord Version);
    internal sealed record LockRequest(string SiteId, string SiteName);
    internal sealed record CheckinReport(long Sent, long? Total);
    internal sealed record PreloginRequest(string User);
    internal sealed record LoginRequest(string User, byte[] AuthSecret, string SiteId, string SiteName);
    internal sealed record HoardRequestBody(string Parcel, string Site, long? Version);

    internal sealed record ParcelEntry(ParcelInfo Parcel, long Head, LockInfo? Lock);

    public async ValueTask<IReadOnlyList<ParcelInfo>> ListParcelsAsync(CancellationToken ct) =>
        (await Call(() => _server.SendJsonAsync(HttpMethod.Get, "api/v1/parcels", Json.ListParcelEntry, ct))).Select(e => e.Parcel).ToList();

    public async ValueTask<ParcelInfo> GetParcelAsync(string name, CancellationToken ct) =>
        (await Call(() => _server.SendJsonAsync(HttpMethod.Get, $"api/v1/parcels/{Uri.EscapeDataString(name)}", Json.ParcelEntry, ct))).Parcel;

    public async ValueTask<LockInfo?> GetLockAsync(string name, CancellationToken ct) =>
        (await Call(() => _server.SendJsonAsync(HttpMethod.Get, $"api/v1/parcels/{Uri.EscapeDataString(name)}", Json.ParcelEntry, ct))).Lock;

    public async ValueTask<VersionRecord> CreateParcelAsync(ParcelInfo parcel, VersionRecord first, CancellationToken ct) =>
        (await Call(() => _server.SendJsonAsync(HttpMethod.Post, "api/v1/parcels", new CreateParcelRequest(parcel, first), Json.CreateParcelRequest, Json.CommitAnswer, ct))).Version;

    public async ValueTask<IReadOnlyList<VersionRecord>> ListVersionsAsync(string name, CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Get, $"api/v1/parcels/{Uri.EscapeDataString(name)}/versions", Json.ListVersionRecord, ct));

    internal sealed record CommitAnswer(VersionRecord Version, bool Side, string? Reason);

    public async ValueTask<VersionRecord> CommitAsync(string name, VersionRecord version, CancellationToken ct)
    {
        var answer = await Call(() => _server.SendJsonAsync(HttpMethod.Post, $"api/v1/parcels/{Uri.EscapeDataString(name)}/versions",
            new CommitRequest(version.CommitId, version), Json.CommitRequest, Json.CommitAnswer, ct, LockToken));
        return answer.Version;
    }

    internal sealed record LockAnswer(string Token, LockInfo Lock);
    internal sealed record ReadTokenAnswer(string Token);

    /// <summary>Takes the parcel's lock for this site (the same token again if this site already holds it).</summary>
    public async ValueTask<string> AcquireLockAsync(string name, string siteId, string siteName, CancellationToken ct)
    {
        var answer = await Call(() => _server.SendJsonAsync(HttpMethod.Post, $"api/v1/parcels/{Uri.EscapeDataString(name)}/lock",
            new LockRequest(siteId, siteName), Json.LockRequest, Json.LockAnswer, ct));
        return answer.Token;
    }

    public async ValueTask ReleaseLockAsync(string name, string token, CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Delete, $"api/v1/parcels/{Uri.EscapeDataString(name)}/lock", Json.JsonElement, ct, token));

    /// <summary>Tells the server how far this site's check-in under <paramref name="token"/> is (see <see cref="CheckinReporter"/>).</summary>
    public async ValueTask ReportCheckinAsync(string name, string token, long sent, long? total, CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Put, $"api/v1/parcels/{Uri.EscapeDataString(name)}/lock/checkin",
            new CheckinReport(sent, total), Json.CheckinReport, Json.JsonElement, ct, token));

    public async ValueTask BreakLockAsync(string name, CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Post, $"api/v1/parcels/{Uri.EscapeDataString(name)}/lock/break", Json.JsonElement, ct));

    /// <summary>A token that only reads this user's blobs, for a LAN jukebox to fetch them from this server (it lives as long as this login).</summary>
    public async Task<string> ReadTokenAsync(CancellationToken ct) =>
        (await Call(() => _server.SendJsonAsync(HttpMethod.Post, "api/v1/session/read-token", Json.ReadTokenAnswer, ct))).Token;

    public async ValueTask LogoutAsync(CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Post, "api/v1/logout", Json.JsonElement, ct));

    /// <summary>Maps the protocol's error codes to the client's exceptions, so every home fails the same way.</summary>
    internal static async Task<T> Call<T>(Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (ServerException e) when (e.Code == "not_found") { throw new ParcelNotFoundException(e.Message); }
        catch (ServerException e) when (e.Code == "user_disabled") { throw new NotAuthorizedException($"the account is disabled at the server: {e.Message}"); }
        catch (ServerException e) when (e.Code == "unauthorized")
        {
            throw new NotAuthorizedException($"this site's session at the server was revoked or has expired ({e.Message}): run 'isr login' again");
        }
        catch (ServerException e) when (e.Code == "hoard_only") { throw new NotAuthorizedException(e.Message); }
        catch (ServerException e) when (e.Code == "conflict") { throw new CommitConflictException(e.Message); }
        catch (ServerException e) when (e.Code == "locked")
        {
            LockInfo? holder = null;
            if (e.Body is { } body && body.TryGetProperty("lock", out var l)) holder = l.Deserialize(Json.LockInfo);
            throw holder is null ? new ParcelLockedException(e.Message, null) : Locked(holder);
        }
    }

    /// <summary>The lock-held error: who holds it and since when, <paramref name="why"/> (if given), and how to break it.</summary>
    public static ParcelLockedException Locked(LockInfo holder, string? why = null) => new(
        $"the parcel is locked by site '{holder.SiteName}' ({holder.SiteId}) since {holder.Acquired:u}, last contact {holder.LastContact:u}. " +
        (why is null ? "" : why + " ") +
        "If that site is lost, the owner can run 'isr lock PARCEL --break'; its later check-in will be kept as a side version.", holder);

    public void Dispose() => _server.Dispose();

    /// <summary>Logs in: fetches the KDF parameters, derives the authentication secret (the password never leaves), returns what to
    /// keep on disk and the key-encryption key (for the site daemon's memory, never for the disk).</summary>
    public static async Task<(LoginRecord Login, byte[] KeyEncryptionKey)> LoginAsync(string url, string user, string password, string? fingerprint, Func<string, bool> acceptFingerprint,
        string siteId, string siteName, CancellationToken ct)
    {
        using var first = new ServerConnection(url, fingerprint);
        var prelogin = await first.SendJsonAsync(HttpMethod.Post, "api/v1/prelogin", new PreloginRequest(user), Json.PreloginRequest, Json.PreloginAnswer, ct);
        var presented = first.PresentedFingerprint ?? throw new ServerException(0, "no_certificate", "the server presented no certificate");
        if (fingerprint is null && !acceptFingerprint(presented))
            throw new ServerException(0, "certificate_not_accepted", $"the server's certificate {presented} was not accepted");
        var keys = PasswordKdf.Derive(password, prelogin.Kdf);
        using var pinned = new ServerConnection(url, presented);
        LoginAnswer answer;
        try
        {
            answer = await pinned.SendJsonAsync(HttpMethod.Post, "api/v1/login",
                new LoginRequest(user, keys.AuthSecret, siteId, siteName), Json.LoginRequest, Json.LoginAnswer, ct);
        }
        catch (ServerException e) when (e.Code == "wrong_password")
        {
            throw new WrongPasswordException($"wrong password for user {user} at {url}");
        }
        catch (ServerException e) when (e.Code == "user_disabled")
        {
            throw new NotAuthorizedException($"the account {user} is disabled at {url}: {e.Message}");
        }
        return (new LoginRecord(url, user, presented, answer.Token, answer.WrappedSecrets, answer.Kdf, answer.HoardToken), keys.KeyEncryptionKey);
    }

    internal sealed record PreloginAnswer(KdfParameters Kdf);
    internal sealed record LoginAnswer(string Token, byte[] WrappedSecrets, KdfParameters Kdf, string? HoardToken);

    // ---- hoarding at another site (PROTOCOL.md "Hoarding at another site") ----

    internal sealed record HoardAnswer(HoardRequestRecord Request);

    /// <summary>Asks the server that <paramref name="site"/> (a name or id of one of the user's sites) hoard the parcel.</summary>
    public async ValueTask<HoardRequestRecord> RequestHoardAsync(string parcel, string site, long? version, CancellationToken ct) =>
        (await Call(() => _server.SendJsonAsync(HttpMethod.Post, "api/v1/hoard/requests", new HoardRequestBody(parcel, site, version), Json.HoardRequestBody, Json.HoardAnswer, ct))).Request;

    public async ValueTask<IReadOnlyList<HoardRequestRecord>> ListHoardRequestsAsync(CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Get, "api/v1/hoard/requests", Json.ListHoardRequestRecord, ct));

    public async ValueTask<IReadOnlyList<SiteRecord>> ListSitesAsync(CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Get, "api/v1/sites", Json.ListSiteRecord, ct));

    /// <summary>Revokes the hoard-only token of the user's site named (or identified by) <paramref name="site"/>.</summary>
    public async ValueTask RevokeSiteAsync(string site, CancellationToken ct) =>
        await Call(() => _server.SendJsonAsync(HttpMethod.Delete, $"api/v1/sites/{Uri.EscapeDataString(site)}", Json.JsonElement, ct));
}
