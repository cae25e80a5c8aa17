using System.Security.Cryptography;
using System.Text;
using Isr.Storage.Metadata;

namespace Isr.Server.Api;

/// <summary>Bearer tokens: random 32 bytes (base64url) handed out at login; the server stores only their SHA-256.</summary>
public static class Sessions
{
    private const string ItemKey = "isr.session";

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
