using Isr.Format;
using Isr.Storage;
using Isr.Storage.Metadata;

namespace Isr.Client.Homes;

/// <summary>What a site keeps of its hoard-only token (ISR_HOME/hoard-token.json): it grants only ciphertext, so the
/// site daemon may use it with no user present.</summary>
public sealed record SiteHoardToken(string Server, string Fingerprint, string User, string Token);

/// <summary>
/// The server as a site's daemon sees it with a hoard-only token (PROTOCOL.md "Hoarding at another site"): the site's
/// hoard requests, the requested parcels' versions, blobs, and progress reports. Nothing here can commit, lock or
/// read keys: the server refuses that token everywhere else.
/// </summary>
public sealed class SiteHoardClient : IDisposable
{
    private readonly ServerConnection _server;

    public SiteHoardClient(SiteHoardToken token)
    {
        _server = new ServerConnection(token.Server, token.Fingerprint, token.Token);
        Chunks = new ServerChunkStore(_server);
    }

    public IChunkStore Chunks { get; }

    public async ValueTask<IReadOnlyList<HoardRequestRecord>> ListRequestsAsync(CancellationToken ct) =>
        await ServerParcelHome.Call(() => _server.SendJsonAsync(HttpMethod.Get, "api/v1/hoard/requests", ServerJsonContext.Default.ListHoardRequestRecord, ct));

    public async ValueTask<IReadOnlyList<VersionRecord>> ListVersionsAsync(string parcel, CancellationToken ct) =>
        await ServerParcelHome.Call(() => _server.SendJsonAsync(HttpMethod.Get,
            $"api/v1/parcels/{Uri.EscapeDataString(parcel)}/versions", ServerJsonContext.Default.ListVersionRecord, ct));

    internal sealed record ReportAnswer(HoardRequestRecord Request);
    /// <summary>The body of a report: <see cref="HoardUpdate"/>'s members, copied so that the wire does not follow that record.</summary>
    internal sealed record HoardReport(string State, long? Version, long BlobsDone, long BlobsTotal, long BytesDone, string? Error);

    public async ValueTask<HoardRequestRecord> ReportAsync(long id, HoardUpdate update, CancellationToken ct) =>
        (await ServerParcelHome.Call(() => _server.SendJsonAsync(HttpMethod.Put, $"api/v1/hoard/requests/{id}",
            new HoardReport(update.State, update.Version, update.BlobsDone, update.BlobsTotal, update.BytesDone, update.Error),
            ServerJsonContext.Default.HoardReport, ServerJsonContext.Default.ReportAnswer, ct))).Request;

    public void Dispose() => _server.Dispose();
}
