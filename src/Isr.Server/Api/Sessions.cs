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

    /// <summary>Endpoint filter: resolves the bearer token to a live session of an enabled user, else 401/403.</summary>
    public static async ValueTask<object?> RequireSession(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var token = BearerToken(http.Request) ?? throw ApiException.Unauthorized("no session token: log in");
        var metadata = http.RequestServices.GetRequiredService<IMetadataStore>();
        var clock = http.RequestServices.GetRequiredService<TimeProvider>();
        var session = await metadata.ResolveSessionAsync(Hash(token), clock.GetUtcNow(), http.RequestAborted)
            ?? throw ApiException.Unauthorized("the session token is unknown, expired or revoked: log in again");
        if (session.UserDisabled) throw new ApiException(403, "user_disabled", "the account is disabled");
        http.Items[ItemKey] = session;
        return await next(context);
    }

    public static SessionRecord Session(this HttpContext http) =>
        http.Items[ItemKey] as SessionRecord ?? throw ApiException.Unauthorized();
}
