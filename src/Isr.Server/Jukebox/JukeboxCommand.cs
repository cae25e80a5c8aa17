using System.CommandLine;
using Isr.Format;
using Isr.Storage;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Isr.Server.Jukebox;

/// <summary>
/// `isr-server jukebox --dir DIR --listen URL`: a content-addressable blob service for a LAN, a lookaside source for
/// sites (`isr resume --lookaside http://HOST:PORT`). <c>GET /chunks/TAG</c> answers the blob or 404 ("don't have").
/// DIR is a blob directory in the DirectoryChunkStore layout: a dongle's chunks/, a copy of a server's chunks, or a
/// directory filled by the users of the LAN. Blobs are ciphertext and sites check each against its tag, so the
/// jukebox needs no keys, no accounts and no TLS; it only serves, and cannot make a site use wrong data.
/// </summary>
public static class JukeboxCommand
{
    public static Command Build(TextWriter output)
    {
        var dir = new Option<string>("--dir") { Description = "Blob directory (ab/cd/TAG files)", Required = true };
        var listen = new Option<string>("--listen") { Description = "Addresses to listen on, ';'-separated", DefaultValueFactory = _ => "http://127.0.0.1:8480" };
        var cmd = new Command("jukebox", "Serve a directory of blobs by tag over HTTP (a lookaside source for sites on the LAN)") { dir, listen };
        cmd.SetAction(async (parse, ct) =>
        {
            var root = Path.GetFullPath(parse.GetValue(dir)!);
            if (!Directory.Exists(root)) throw new ArgumentException($"{root} does not exist");
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
            builder.WebHost.UseUrls(parse.GetValue(listen)!);
            builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
            await using var app = builder.Build();
            Map(app, new DirectoryChunkStore(root, durable: false));
            app.Lifetime.ApplicationStarted.Register(() =>
            {
                var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
                output.WriteLine($"jukebox serving {root} on {string.Join(", ", addresses)}");
                output.Flush();
            });
            await app.RunAsync(ct);
            return 0;
        });
        return cmd;
    }

    public static void Map(IEndpointRouteBuilder app, DirectoryChunkStore store) =>
        app.MapGet("/chunks/{tag}", async (string tag, CancellationToken ct) =>
        {
            if (tag.Length != 64 || !tag.All(char.IsAsciiHexDigitLower)) return Results.BadRequest("a tag is 64 lower-case hex digits");
            var blob = await store.GetAsync(ChunkTag.Parse(tag), ct);
            return blob is null ? Results.NotFound() : Results.Bytes(blob, "application/octet-stream");
        });
}
