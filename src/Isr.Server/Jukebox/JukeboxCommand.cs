using System.CommandLine;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Isr.Format;
using Isr.Storage;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Isr.Server.Jukebox;

/// <summary>
/// `isr-server jukebox --dir DIR --listen URL [--upstream URL --upstream-fingerprint FP]`: a content-addressable blob
/// service for a LAN, a lookaside source for sites (`isr resume --lookaside http://HOST:PORT`). <c>GET /chunks/TAG</c>
/// answers the blob or 404 ("don't have"). DIR is a blob directory in the DirectoryChunkStore layout: a dongle's
/// chunks/, a copy of a server's chunks, or (with --upstream) the jukebox's own cache of the real server.
/// Blobs are ciphertext and sites check each against its tag, so the jukebox needs no user keys and no TLS towards the
/// LAN, and cannot make a site use wrong data.
/// </summary>
public static class JukeboxCommand
{
    public static Command Build(TextWriter output)
    {
        var dir = new Option<string>("--dir") { Description = "Blob directory (ab/cd/TAG files); with --upstream, where fetched blobs are kept", Required = true };
        var listen = new Option<string>("--listen") { Description = "Addresses to listen on, ';'-separated", DefaultValueFactory = _ => "http://127.0.0.1:8480" };
        var upstream = new Option<string?>("--upstream") { Description = "The real isr-server (https://HOST:PORT): a miss is fetched from it with the site's read token, and kept" };
        var fingerprint = new Option<string?>("--upstream-fingerprint") { Description = "SHA-256 fingerprint of the upstream server's certificate (required with --upstream)" };
        var cmd = new Command("jukebox", "Serve a directory of blobs by tag over HTTP (a lookaside source for sites on the LAN), optionally as a cache in front of the real server")
            { dir, listen, upstream, fingerprint };
        cmd.SetAction(async (parse, ct) =>
        {
            var root = Path.GetFullPath(parse.GetValue(dir)!);
            var upstreamUrl = parse.GetValue(upstream);
            if (upstreamUrl is null && !Directory.Exists(root)) throw new ArgumentException($"{root} does not exist");
            if (upstreamUrl is not null && parse.GetValue(fingerprint) is null)
                throw new ArgumentException("--upstream needs --upstream-fingerprint (as printed by 'isr-server init'): the jukebox must know it talks to the real server");
            Directory.CreateDirectory(root);
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
            builder.WebHost.UseUrls(parse.GetValue(listen)!);
            builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
            await using var app = builder.Build();
            using var origin = upstreamUrl is null ? null : new Upstream(new Uri(upstreamUrl), parse.GetValue(fingerprint)!);
            Map(app, new DirectoryChunkStore(root, durable: false), origin);
            app.Lifetime.ApplicationStarted.Register(() =>
            {
                var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
                output.WriteLine($"jukebox serving {root} on {string.Join(", ", addresses)}" + (origin is null ? "" : $", caching {upstreamUrl}"));
                output.Flush();
            });
            await app.RunAsync(ct);
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// A hit is served to anyone on the LAN (ciphertext by tag, like a dongle). A miss, with an upstream, is fetched from
    /// the real server with the requester's bearer token (a read token: `POST /api/v1/session/read-token`), so that the
    /// server still decides whose blobs it hands out; a blob that does not match its tag is neither kept nor served.
    /// </summary>
    public static void Map(IEndpointRouteBuilder app, DirectoryChunkStore store, Upstream? upstream = null) =>
        app.MapGet("/chunks/{tag}", async (HttpRequest request, string tag, CancellationToken ct) =>
        {
            if (tag.Length != 64 || !tag.All(char.IsAsciiHexDigitLower)) return Results.BadRequest("a tag is 64 lower-case hex digits");
            var parsed = ChunkTag.Parse(tag);
            var blob = await store.GetAsync(parsed, ct);
            if (blob is null && upstream is not null && request.Headers.Authorization.ToString() is { Length: > 0 } authorization)
            {
                try { blob = await upstream.FetchAsync(parsed, authorization, ct); }
                catch (HttpRequestException e) { return Results.Problem($"the upstream server failed: {e.Message}", statusCode: 502); } // the site asks the server itself
                if (blob is not null) await store.PutAsync(parsed, blob, ct);
            }
            return blob is null ? Results.NotFound() : Results.Bytes(blob, "application/octet-stream");
        });

    /// <summary>The real server, its certificate pinned.</summary>
    public sealed class Upstream : IDisposable
    {
        private readonly HttpClient _http;

        public Upstream(Uri server, string fingerprint)
        {
            var pinned = fingerprint.Replace(":", "").Trim().ToLowerInvariant();
            _http = new HttpClient(new SocketsHttpHandler
            {
                ConnectTimeout = TimeSpan.FromSeconds(10),
                SslOptions =
                {
                    RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                        certificate is not null && Convert.ToHexStringLower(SHA256.HashData(certificate.GetRawCertData())) == pinned,
                },
            })
            { BaseAddress = new Uri(server.AbsoluteUri.TrimEnd('/') + "/api/v1/"), Timeout = TimeSpan.FromMinutes(2) };
        }

        /// <summary>The verified blob, or null when the server does not give it to this requester.</summary>
        public async Task<byte[]?> FetchAsync(ChunkTag tag, string authorization, CancellationToken ct)
        {
            if (!AuthenticationHeaderValue.TryParse(authorization, out var credentials)) return null;
            using var request = new HttpRequestMessage(HttpMethod.Get, $"chunks/{tag}");
            request.Headers.Authorization = credentials;
            using var response = await _http.SendAsync(request, ct);
            if (response.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden) return null;
            response.EnsureSuccessStatusCode();
            var blob = await response.Content.ReadAsByteArrayAsync(ct);
            return tag.Matches(blob) ? blob : null;
        }

        public void Dispose() => _http.Dispose();
    }
}
