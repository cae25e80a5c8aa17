using System.Security.Cryptography;
using System.Text;
using Isr.Storage.Metadata;

namespace Isr.Server.Api;

/// <summary>
/// Bearer tokens: random 32 bytes (base64url) handed out at login; the server stores only their SHA-256.
/// A session may also hand out a <b>read token</b> (<c>POST /session/read-token</c>) for a LAN jukebox to fetch the
/// user's blobs with: <c>isr-read.</c> ‖ base64url(SHA-256 of the session token) ‖ <c>.</c> ‖ base64url(HMAC of that
/// hash under a key derived from the server secret). It lives and dies with its session, is stored nowhere, and opens
/// only the endpoints marked <see cref="ReadOnlyAllowed"/> (reading blobs the user holds, which are ciphertext): a
/// jukebox that leaks it leaks no more than the blobs it caches anyway.
/// </summary>
public static class Sessions
{
    private const string ItemKey = "isr.session";
    private const string ReadPrefix = "isr-read.";

    /// <summary>Endpoint metadata: a read token may call this endpoint.</summary>
    public sealed class ReadOnlyAllowed;

    public static TBuilder AllowReadToken<TBuilder>(this TBuilder endpoint) where TBuilder : IEndpointConventionBuilder =>
        endpoint.WithMetadata(new ReadOnlyAllowed());

    public static string ReadToken(byte[] serverSecret, byte[] sessionHash) =>
        ReadPrefix + Base64Url(sessionHash) + "." + Base64Url(ReadTokenMac(serverSecret, sessionHash));

    private static byte[] ReadTokenMac(byte[] serverSecret, byte[] sessionHash) =>
        HMACSHA256.HashData(HKDF.DeriveKey(HashAlgorithmName.SHA256, serverSecret, 32, info: "isr read token v1"u8.ToArray()), sessionHash);

    /// <summary>The session hash a read token names, or null when its MAC is wrong or it is malformed.</summary>
    private static byte[]? SessionOfReadToken(byte[] serverSecret, string token)
    {
        var parts = token[ReadPrefix.Length..].Split('.');
        if (parts.Length != 2) return null;
        try
        {
            byte[] hash = FromBase64Url(parts[0]), mac = FromBase64Url(parts[1]);
            return hash.Length == 32 && CryptographicOperations.FixedTimeEquals(mac, ReadTokenMac(serverSecret, hash)) ? hash : null;
        }
        catch (FormatException) { return null; }
    }

    private static byte[] FromBase64Url(string text)
    {
        var b64 = text.Replace('-', '+').Replace('_', '/');
        return Convert.FromBase64String(b64.PadRight(b64.Length + (4 - b64.Length % 4) % 4, '='));
    }

    public static string NewToken() => Base64Url(RandomNumberGenerator.GetBytes(32));

    public static byte[] Hash(string token) => SHA256.HashData(Encoding.UTF8.GetBytes(token));

    public static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static string? BearerToken(HttpRequest request)
    {
        var header = request.Headers.Authorization.ToString();
        const string prefix = "Bearer ";
        return header.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) && header.Length > prefix.Length
            ? header[prefix.Length..].Trim() : null;
    }

    /// <summary>Endpoint filter: resolves the bearer token to a live session (or a site's hoard-only token, only for the
    /// endpoints that allow it) of an enabled user, else 401/403.</summary>
    public static async ValueTask<object?> RequireSession(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var token = BearerToken(http.Request) ?? throw ApiException.Unauthorized("no session token: log in");
        var metadata = http.RequestServices.GetRequiredService<IMetadataStore>();
        var clock = http.RequestServices.GetRequiredService<TimeProvider>();
        var hash = Hash(token);
        if (token.StartsWith(ReadPrefix, StringComparison.Ordinal))
        {
            if (http.GetEndpoint()?.Metadata.GetMetadata<ReadOnlyAllowed>() is null)
                throw new ApiException(403, "read_token", "a read token only reads blobs: log in for this request");
            hash = SessionOfReadToken(await metadata.GetServerSecretAsync(http.RequestAborted), token)
                ?? throw ApiException.Unauthorized("the read token is not one this server made");
        }
        var session = await metadata.ResolveSessionAsync(hash, clock.GetUtcNow(), http.RequestAborted)
            ?? await metadata.ResolveSiteTokenAsync(hash, http.RequestAborted)
            ?? throw ApiException.Unauthorized("the session token is unknown, expired or revoked: log in again");
        if (session.UserDisabled) throw new ApiException(403, "user_disabled", "the account is disabled");
        if (session.HoardOnly && http.GetEndpoint()?.Metadata.GetMetadata<HoardTokenAllowed>() is null)
            throw HoardOnly($"{http.Request.Method} {http.Request.Path} is not among them");
        http.Items[ItemKey] = session;
        return await next(context);
    }

    public static SessionRecord Session(this HttpContext http) =>
        http.Items[ItemKey] as SessionRecord ?? throw ApiException.Unauthorized();

    /// <summary>403 for a hoard-only token that asks for more than hoarding.</summary>
    public static ApiException HoardOnly(string why) => new(403, "hoard_only",
        "this is a site's hoard-only token: it may list the site's hoard requests, read the versions of the parcels requested for it and " +
        $"download blobs, nothing else (no commit, lock or account change); {why}");

    /// <summary>Marks endpoints a hoard-only token may call (the filter refuses it everywhere else).</summary>
    public static TBuilder AllowHoardToken<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(HoardTokenAllowed.Instance);
}

/// <summary>Endpoint metadata: see <see cref="Sessions.AllowHoardToken{TBuilder}"/>.</summary>
public sealed class HoardTokenAllowed
{
    public static readonly HoardTokenAllowed Instance = new();
}
