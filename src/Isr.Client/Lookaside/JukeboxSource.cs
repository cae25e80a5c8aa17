using System.Net;
using Isr.Format;

namespace Isr.Client.Lookaside;

/// <summary>
/// A jukebox on the LAN (`isr-server jukebox`): GET /chunks/TAG answers the blob or 404 for "don't have". Plain HTTP
/// is enough: blobs are ciphertext and every one is checked against its tag, so the jukebox cannot feed wrong data.
/// With a server home, requests carry the session's read token (asked for once, in the background; until it arrives,
/// and when offline, requests go without it), so that a jukebox in front of the server can fetch its misses from there.
/// The read token opens only reading blobs the user holds: never the session's own token on a plain-HTTP LAN.
/// </summary>
public sealed class JukeboxSource : ILookasideSource
{
    private readonly HttpClient _http;
    private readonly Uri _base;
    private readonly Task<string>? _readToken;

    public JukeboxSource(Uri url, Func<CancellationToken, Task<string>>? readToken = null)
    {
        _readToken = readToken?.Invoke(CancellationToken.None);
        _readToken?.ContinueWith(t => t.Exception, TaskContinuationOptions.OnlyOnFaulted); // offline: no token, hits only
        _base = url.AbsoluteUri.EndsWith('/') ? url : new Uri(url.AbsoluteUri + "/");
        // The chain's timeout bounds each request; no retries: the home is the fallback.
        _http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(2), PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
            { Timeout = Timeout.InfiniteTimeSpan };
    }

    public string Name => $"jukebox {_base}";

    public async ValueTask<byte[]?> TryGetAsync(ChunkTag tag, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(_base, $"chunks/{tag}"));
        if (_readToken is { IsCompletedSuccessfully: true }) request.Headers.Authorization = new("Bearer", _readToken.Result);
        using var response = await _http.SendAsync(request, ct);
        if (response.StatusCode == HttpStatusCode.NotFound) return null;
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadAsByteArrayAsync(ct);
    }

    public void Dispose() => _http.Dispose();
}
