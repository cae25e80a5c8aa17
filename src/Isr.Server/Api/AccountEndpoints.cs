using System.Security.Cryptography;
using System.Text;
using Isr.Format;
using Isr.Storage.Metadata;
using Microsoft.Extensions.Options;

namespace Isr.Server.Api;

/// <summary>PROTOCOL.md "Accounts": prelogin, login, logout, password change, recovery blob.</summary>
internal static class AccountEndpoints
{
    public static void Map(RouteGroupBuilder api)
    {
        api.MapPost("/prelogin", async (HttpContext http, IMetadataStore metadata, CancellationToken ct) =>
        {
            var request = await ApiJson.ReadAsync<PreloginRequest>(http.Request, ct);
            var user = await metadata.GetUserAsync(request.User, ct);
            return Results.Json(new PreloginResponse(user?.Kdf ?? await FakeKdfAsync(metadata, request.User, ct)), ApiJson.Options);
        });

        api.MapPost("/login", async (HttpContext http, IMetadataStore metadata, TimeProvider clock, IOptions<IsrServerOptions> options,
            ILoggerFactory logs, CancellationToken ct) =>
        {
            var request = await ApiJson.ReadAsync<LoginRequest>(http.Request, ct);
            var user = await metadata.GetUserAsync(request.User, ct);
            var presented = SHA256.HashData(request.AuthSecret);
            // an unknown user fails exactly like a wrong password (no enumeration)
            if (user is null || !CryptographicOperations.FixedTimeEquals(presented, user.Verifier))
            {
                logs.CreateLogger("Isr.Server.Login").LogInformation("failed login");
                throw new ApiException(401, "wrong_password", "wrong user name or password");
            }
            if (user.Disabled) throw new ApiException(403, "user_disabled", "the account is disabled");
            var token = Sessions.NewToken();
            var now = clock.GetUtcNow();
            await metadata.CreateSessionAsync(Sessions.Hash(token), user.Id, request.SiteId ?? "", request.SiteName ?? "", now,
                now + options.Value.SessionLifetime, ct);
            // a site that says who it is also gets a hoard-only token (its earlier one is revoked)
            string? hoardToken = null;
            if (request.SiteId is { Length: > 0 and <= 200 } siteId)
            {
                hoardToken = Sessions.NewToken();
                await metadata.CreateSiteTokenAsync(Sessions.Hash(hoardToken), user.Id, siteId, request.SiteName ?? "", now, ct);
            }
            return Results.Json(new LoginResponse(token, user.Name, user.WrappedSecrets, user.Kdf, hoardToken), ApiJson.Options);
        });
    }

    public static void MapAuthenticated(RouteGroupBuilder api)
    {
        api.MapPost("/logout", async (HttpContext http, IMetadataStore metadata, TimeProvider clock, CancellationToken ct) =>
        {
            await metadata.RevokeSessionAsync(Sessions.Hash(Sessions.BearerToken(http.Request)!), ct);
            var session = http.Session();
            if (session.SiteId.Length > 0) await metadata.RevokeSiteAsync(session.UserId, session.SiteId, clock.GetUtcNow(), ct);
            return Results.NoContent();
        });

        api.MapPut("/account/password", async (HttpContext http, IMetadataStore metadata, CancellationToken ct) =>
        {
            var request = await ApiJson.ReadAsync<ChangePasswordRequest>(http.Request, ct);
            ValidateKdf(request.Kdf);
            if (request.NewAuthSecret.Length < 16) throw ApiException.BadRequest("newAuthSecret is too short");
            if (request.WrappedSecrets.Length == 0) throw ApiException.BadRequest("wrappedSecrets is empty");
            var session = http.Session();
            var user = await metadata.GetUserAsync(session.UserName, ct) ?? throw ApiException.Unauthorized();
            var presented = SHA256.HashData(request.AuthSecret);
            if (!CryptographicOperations.FixedTimeEquals(presented, user.Verifier))
                throw new ApiException(401, "wrong_password", "the current password is wrong");
            if (request.RecoveryWrappedSecrets is { Length: 0 }) throw ApiException.BadRequest("recoveryWrappedSecrets is empty");
            if (!await metadata.ChangePasswordAsync(user.Id, user.Verifier, SHA256.HashData(request.NewAuthSecret), request.Kdf, request.WrappedSecrets,
                    request.RecoveryWrappedSecrets, ct))
                throw ApiException.Conflict("the password was changed concurrently; try again");
            return Results.NoContent();
        });

        api.MapPost("/session/read-token", async (HttpContext http, IMetadataStore metadata, CancellationToken ct) =>
        {
            var token = Sessions.ReadToken(await metadata.GetServerSecretAsync(ct), Sessions.Hash(Sessions.BearerToken(http.Request)!));
            return Results.Json(new ReadTokenResponse(token), ApiJson.Options);
        });

        api.MapGet("/account/recovery", async (HttpContext http, IMetadataStore metadata, CancellationToken ct) =>
        {
            var user = await metadata.GetUserAsync(http.Session().UserName, ct) ?? throw ApiException.Unauthorized();
            return Results.Json(new RecoveryResponse(user.RecoveryWrappedSecrets), ApiJson.Options);
        });
    }

    private static void ValidateKdf(KdfParameters kdf)
    {
        if (kdf.Salt.Length < 16 || kdf.MemoryKiB < 8 || kdf.Iterations < 1 || kdf.Parallelism < 1)
            throw ApiException.BadRequest("kdf parameters are out of range");
    }

    /// <summary>Deterministic per name (so probing twice gives the same answer), indistinguishable from a real user's
    /// default parameters without the server secret.</summary>
    private static async Task<KdfParameters> FakeKdfAsync(IMetadataStore metadata, string user, CancellationToken ct)
    {
        var secret = await metadata.GetServerSecretAsync(ct);
        var salt = HMACSHA256.HashData(secret, Encoding.UTF8.GetBytes("isr fake salt v1\0" + user))[..16];
        var defaults = KdfParameters.CreateDefault();
        return defaults with { Salt = salt };
    }
}
