using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Isr.Storage.Metadata;

namespace Isr.Client.Homes;

/// <summary>What `isr login` keeps under ISR_HOME: where the server is, its pinned certificate, a revocable session
/// token and the user's wrapped secrets (ciphertext), so that keys can be unwrapped offline with the password.</summary>
/// <param name="HoardToken">The site's hoard-only token from this login; kept apart (<see cref="SiteHoardToken"/>), never in the login's file.</param>
public sealed record LoginRecord(string Server, string User, string Fingerprint, string Token, byte[] WrappedSecrets, Format.KdfParameters Kdf,
    [property: JsonIgnore] string? HoardToken = null);

/// <summary>An error answer of the server: its HTTP status, its stable code and its message.</summary>
public sealed class ServerException(HttpStatusCode status, string code, string message, JsonElement? body = null) : Exception(message)
{
    public HttpStatusCode Status { get; } = status;
    public string Code { get; } = code;
    public JsonElement? Body { get; } = body;
}

/// <summary>The server could not be reached at all (network down, server stopped).</summary>
public sealed class ServerUnreachableException(string message, Exception inner) : IOException(message, inner);

/// <summary>
/// HTTPS to the isr server with the certificate pinned by SHA-256 fingerprint (like SSH's known hosts), HTTP/2
/// multiplexing many requests on one connection, and the protocol's JSON error bodies turned into exceptions.
/// </summary>
public sealed class ServerConnection : IDisposable
{
    private readonly HttpClient _http;
    public Uri BaseAddress { get; }
    /// <summary>Fingerprint the server presented on the last connection (for first-use pinning).</summary>
    public string? PresentedFingerprint { get; private set; }

    /// <param name="pinnedFingerprint">Accept only this certificate; null accepts any and records it (first login only).</param>
    public ServerConnection(string baseUrl, string? pinnedFingerprint, string? token = null)
    {
        BaseAddress = new Uri(baseUrl.TrimEnd('/') + "/");
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 4,
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = TimeSpan.FromSeconds(10),
            SslOptions =
            {
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                {
                    if (certificate is null) return false;
                    PresentedFingerprint = Fingerprint(certificate.GetRawCertData());
                    return pinnedFingerprint is null || string.Equals(PresentedFingerprint, Normalize(pinnedFingerprint), StringComparison.Ordinal);
                },
            },
        };
        _http = new HttpClient(handler)
        {
            BaseAddress = BaseAddress,
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
            Timeout = TimeSpan.FromMinutes(10),
        };
        if (token != null) _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    public static string Fingerprint(byte[] der) => Convert.ToHexStringLower(SHA256.HashData(der));
    public static string Normalize(string fingerprint) => fingerprint.Replace(":", "").Trim().ToLowerInvariant();

    /// <summary>A request without a body; the answer read as <paramref name="answer"/> (default for 204 No Content).</summary>
    public Task<TAnswer> SendJsonAsync<TAnswer>(HttpMethod method, string path, JsonTypeInfo<TAnswer> answer, CancellationToken ct, string? lockToken = null) =>
        SendContentAsync(method, path, null, answer, ct, lockToken);

    /// <summary>A request with <paramref name="body"/> as JSON; the answer read as <paramref name="answer"/> (default for 204 No Content).</summary>
    public Task<TAnswer> SendJsonAsync<TBody, TAnswer>(HttpMethod method, string path, TBody body, JsonTypeInfo<TBody> bodyType, JsonTypeInfo<TAnswer> answer,
        CancellationToken ct, string? lockToken = null) =>
        SendContentAsync(method, path, JsonContent.Create(body, bodyType), answer, ct, lockToken);

    private async Task<TAnswer> SendContentAsync<TAnswer>(HttpMethod method, string path, HttpContent? content, JsonTypeInfo<TAnswer> answer, CancellationToken ct,
        string? lockToken)
    {
        using var response = await SendAsync(method, path, content, ct, lockToken);
        if (response.StatusCode == HttpStatusCode.NoContent) return default!;
        return (await response.Content.ReadFromJsonAsync(answer, ct))!;
    }

    public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, HttpContent? content, CancellationToken ct,
        string? lockToken = null, HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        if (lockToken != null) request.Headers.Add("Isr-Lock-Token", lockToken);
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, completion, ct);
        }
        catch (HttpRequestException e) when (e.InnerException is System.Security.Authentication.AuthenticationException)
        {
            throw new ServerException(0, "certificate_mismatch",
                $"the server at {BaseAddress} presented certificate {PresentedFingerprint}, not the pinned one: refusing to talk to it " +
                "(if the server's certificate really changed, log in again with --server-fingerprint)");
        }
        catch (HttpRequestException e)
        {
            throw new ServerUnreachableException($"cannot reach the server at {BaseAddress}: {e.Message}", e);
        }
        if (response.IsSuccessStatusCode) return response;
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(ct);
            try
            {
                var body = JsonDocument.Parse(text).RootElement.Clone();
                throw new ServerException(response.StatusCode, body.GetProperty("code").GetString() ?? "", body.GetProperty("error").GetString() ?? text, body);
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new ServerException(response.StatusCode, "http_" + (int)response.StatusCode, $"the server answered {(int)response.StatusCode}: {text}");
            }
        }
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>The server protocol's messages as this client writes and reads them (docs/PROTOCOL.md).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(JsonElement))]
[JsonSerializable(typeof(LockInfo))]
[JsonSerializable(typeof(List<ServerParcelHome.ParcelEntry>))]
[JsonSerializable(typeof(ServerParcelHome.ParcelEntry))]
[JsonSerializable(typeof(List<Format.VersionRecord>))]
[JsonSerializable(typeof(ServerParcelHome.CommitAnswer))]
[JsonSerializable(typeof(ServerParcelHome.LockAnswer))]
[JsonSerializable(typeof(ServerParcelHome.ReadTokenAnswer))]
[JsonSerializable(typeof(ServerParcelHome.PreloginAnswer))]
[JsonSerializable(typeof(ServerParcelHome.LoginAnswer))]
[JsonSerializable(typeof(ServerParcelHome.HoardAnswer))]
[JsonSerializable(typeof(List<HoardRequestRecord>))]
[JsonSerializable(typeof(List<SiteRecord>))]
[JsonSerializable(typeof(SiteHoardClient.ReportAnswer))]
[JsonSerializable(typeof(ServerParcelHome.PasswordChangeRequest))]
[JsonSerializable(typeof(ServerParcelHome.CreateParcelRequest))]
[JsonSerializable(typeof(ServerParcelHome.CommitRequest))]
[JsonSerializable(typeof(ServerParcelHome.LockRequest))]
[JsonSerializable(typeof(ServerParcelHome.CheckinReport))]
[JsonSerializable(typeof(ServerParcelHome.PreloginRequest))]
[JsonSerializable(typeof(ServerParcelHome.LoginRequest))]
[JsonSerializable(typeof(ServerParcelHome.HoardRequestBody))]
[JsonSerializable(typeof(SiteHoardClient.HoardReport))]
internal sealed partial class ServerJsonContext : JsonSerializerContext;
