using System.Buffers;
using Isr.Format;
using Isr.Server.Blobs;
using Isr.Storage;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;

namespace Isr.Server.Api;

/// <summary>PROTOCOL.md "Chunks": batch missing / upload / download (binary framing), single GET.</summary>
internal static class ChunkEndpoints
{
    private const string Binary = "application/octet-stream";
    /// <summary>Verified frames are stored in groups (one metadata transaction per group), bounded in bytes and count,
    /// and small against a request (a client sends 64 blobs per request): a group is stored while the next is read, so
    /// the answer comes soon after the last byte. Stored only after the whole request, a client's requests in flight
    /// ended together and the link idled while the server stored them (a check-in at 100 Mbit/s: 68–88% of the link).</summary>
    private const int GroupBytes = 1 << 20, GroupFrames = 16;
    /// <summary>Store reads or writes one request keeps in flight: one at a time, an object store's round trip (about a
    /// millisecond on loopback RGW) and not its bandwidth would bound a transfer.</summary>
    private const int StoreWidth = 16;

    public static void Map(RouteGroupBuilder api)
    {
        api.MapPost("/chunks/missing", async (HttpContext http, BlobAccess blobs, IOptions<IsrServerOptions> options, CancellationToken ct) =>
        {
            var tags = await Framing.ReadTagsAsync(http.Request.Body, options.Value.MaxTagsPerRequest, ct);
            var missing = await blobs.MissingAsync(http.Session().UserId, tags, touch: true, ct);
            return Results.Bytes(Framing.EncodeTags(missing), Binary);
        });

        api.MapPost("/chunks/upload", UploadAsync);

        api.MapPost("/chunks/download", async (HttpContext http, IMetadataStore metadata, IChunkStore chunks, IOptions<IsrServerOptions> options, CancellationToken ct) =>
        {
            var tags = await Framing.ReadTagsAsync(http.Request.Body, options.Value.MaxTagsPerRequest, ct);
            var held = await metadata.HeldBlobsAsync(http.Session().UserId, tags, touch: null, ct);
            http.Response.ContentType = Binary;
            var body = http.Response.Body;
            var header = new byte[Framing.HeaderSize];
            long unflushed = 0;
            async Task WriteAsync(ChunkTag tag, Task<byte[]?> fetch)
            {
                var blob = await fetch;
                Framing.WriteHeader(header, tag, blob is null ? Framing.Absent : (uint)blob.Length);
                await body.WriteAsync(header, ct);
                if (blob is not null) await body.WriteAsync(blob, ct);
                unflushed += Framing.HeaderSize + (blob?.Length ?? 0);
                if (unflushed > 4 << 20) { await body.FlushAsync(ct); unflushed = 0; }
            }
            // Reads run ahead of the writer by a bounded window, frames still go out in request order.
            var window = new Queue<(ChunkTag Tag, Task<byte[]?> Fetch)>();
            foreach (var tag in tags)
            {
                window.Enqueue((tag, held.Contains(tag) ? chunks.GetAsync(tag, ct).AsTask() : Task.FromResult<byte[]?>(null)));
                if (window.Count >= StoreWidth) { var (t, f) = window.Dequeue(); await WriteAsync(t, f); }
            }
            while (window.TryDequeue(out var next)) await WriteAsync(next.Tag, next.Fetch);
            return Results.Empty;
        }).AllowHoardToken();

        api.MapGet("/chunks/{tag}", async (HttpContext http, string tag, IMetadataStore metadata, IChunkStore chunks, CancellationToken ct) =>
        {
            var parsed = Framing.ParseTag(tag, "the URL's tag");
            var held = await metadata.HeldBlobsAsync(http.Session().UserId, [parsed], touch: null, ct);
            var blob = held.Count > 0 ? await chunks.GetAsync(parsed, ct) : null;
            return blob is null ? throw ApiException.NotFound($"no blob {tag}") : Results.Bytes(blob, Binary);
        }).AllowHoardToken().AllowReadToken();
    }

    /// <summary>Streams frames: each blob is read into a pooled buffer of its own length (never the whole body), verified
    /// against its tag, recorded as held by the user, then stored. A bad frame stores nothing of itself; earlier good
    /// frames are kept.</summary>
    private static async Task<IResult> UploadAsync(HttpContext http, IMetadataStore metadata, IChunkStore chunks, TimeProvider clock,
        IOptions<IsrServerOptions> options, CancellationToken ct)
    {
        long max = options.Value.MaxUploadBytes;
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            limit.MaxRequestBodySize = max + (max / 64) + (1 << 20); // blobs plus frame headers
        var userId = http.Session().UserId;
        var body = http.Request.Body;
        var header = new byte[Framing.HeaderSize];
        var group = new List<(ChunkTag Tag, byte[] Buffer, int Length)>();
        long groupBytes = 0, total = 0;
        int stored = 0, existing = 0;
        Task storing = Task.CompletedTask; // the group before, stored while this one is read

        async Task StoreAsync(List<(ChunkTag Tag, byte[] Buffer, int Length)> frames)
        {
            try
            {
                await metadata.RecordBlobsAsync(userId, frames.Select(g => g.Tag).ToList(), clock.GetUtcNow(), ct);
                var absent = (await chunks.MissingAsync(frames.Select(g => g.Tag).ToList(), ct)).ToHashSet();
                var fresh = frames.Where(g => absent.Remove(g.Tag)).ToList(); // each absent tag once
                await Parallel.ForEachAsync(fresh, new ParallelOptions { MaxDegreeOfParallelism = StoreWidth, CancellationToken = ct },
                    async (g, token) => await chunks.PutAsync(g.Tag, g.Buffer.AsMemory(0, g.Length), token));
                stored += fresh.Count; // one group at a time: FlushAsync awaits the one before
                existing += frames.Count - fresh.Count;
            }
            finally
            {
                foreach (var g in frames) ArrayPool<byte>.Shared.Return(g.Buffer);
            }
        }

        // Hands the group to the store once the one before it is stored.
        async Task FlushAsync()
        {
            var frames = group;
            group = [];
            groupBytes = 0;
            try { await storing; }
            catch
            {
                foreach (var g in frames) ArrayPool<byte>.Shared.Return(g.Buffer);
                throw;
            }
            storing = frames.Count == 0 ? Task.CompletedTask : StoreAsync(frames);
        }

        try
        {
            while (await Framing.ReadHeaderAsync(body, header, ct) is var (tag, length))
            {
                total += length;
                if (length == Framing.Absent || total > max)
                    throw new ApiException(413, "too_large", $"at most {max} blob bytes per upload request");
                if (tag.IsZeroChunk) throw ApiException.BadRequest("the all-zero tag names the zero chunk, which is never stored");
                var buffer = ArrayPool<byte>.Shared.Rent((int)length);
                try
                {
                    int got = await body.ReadAtLeastAsync(buffer.AsMemory(0, (int)length), (int)length, throwOnEndOfStream: false, ct);
                    if (got < length) throw ApiException.BadRequest($"frame of {tag} is truncated");
                    if (!tag.Matches(buffer.AsSpan(0, (int)length))) throw ApiException.BadRequest($"blob does not match its tag {tag}");
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    throw;
                }
                group.Add((tag, buffer, (int)length));
                groupBytes += length;
                if (groupBytes >= GroupBytes || group.Count >= GroupFrames) await FlushAsync();
            }
            await FlushAsync();
            await storing;
        }
        catch (ApiException)
        {
            await FlushAsync(); // the good frames before the bad one stay (uploads are idempotent)
            await storing;
            throw;
        }
        finally
        {
            foreach (var g in group) ArrayPool<byte>.Shared.Return(g.Buffer);
            // A request that failed otherwise may leave a group storing: it ends (and returns its buffers) before the request.
            await storing.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
        return Results.Json(new UploadResponse(stored, existing), ApiJson.Options);
    }
}
