using System.Net;
using Isr.Format;

namespace Isr.Client.Lookaside;

/// <summary>
/// A jukebox on the LAN (`isr-server jukebox`): GET /chunks/TAG answers the blob or 404 for "don't have". Plain HTTP
/// is enough: blobs are ciphertext and every one is checked against its tag, so the jukebox cannot feed wrong data.
/// </summary>
public sealed class JukeboxSource : ILookasideSource
{
    private readonly HttpClient _http;
    private readonly Uri _base;

    public JukeboxSource(Uri url)
    {
        _base = url.AbsoluteUri.EndsWith('/') ? url : new Uri(url.AbsoluteUri + "/");
        // The chain's timeout bounds each request; no retries: the home is the fallback.
        _http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(2), PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
            { Timeout = Timeout.InfiniteTimeSpan };
    }

    public string Name => $"jukebox {_base}";

    public async ValueTask<byte[]?> TryGetAsync(ChunkTag tag, CancellationToken ct)
    {
        using var response = await _http.GetAsync(new Uri(_base, $"chunks/{tag}"), ct);
        if (response.StatusCode == HttpStatusCode.NotFound) return null;
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadAsByteArrayAsync(ct);
    }

    public void Dispose() => _http.Dispose();
}
