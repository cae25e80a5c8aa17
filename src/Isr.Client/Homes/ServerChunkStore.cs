using System.Buffers.Binary;
using System.Net;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Homes;

/// <summary>Stores that take many blobs in one request (the server's batch upload); the uploader prefers this.</summary>
public interface IBatchChunkStore : IChunkStore
{
    ValueTask PutBatchAsync(IReadOnlyList<(ChunkTag Tag, byte[] Blob)> blobs, CancellationToken ct);
}

/// <summary>The server's blob endpoints (docs/PROTOCOL.md, "Chunks") as a chunk store.</summary>
public sealed class ServerChunkStore(ServerConnection server) : IBatchChunkStore
{
    public override string ToString() => $"server {server.BaseAddress}";

    public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
    {
        try
        {
            using var response = await server.SendAsync(HttpMethod.Get, $"api/v1/chunks/{tag}", null, ct);
            return await response.Content.ReadAsByteArrayAsync(ct);
        }
        catch (ServerException e) when (e.Status == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    public ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct) => PutBatchAsync([(tag, blob.ToArray())], ct);

    public async ValueTask PutBatchAsync(IReadOnlyList<(ChunkTag Tag, byte[] Blob)> blobs, CancellationToken ct)
    {
        var body = new byte[blobs.Sum(b => 36 + b.Blob.Length)];
        int at = 0;
        foreach (var (tag, blob) in blobs)
        {
            if (!tag.Matches(blob)) throw new ChunkIntegrityException($"blob does not match tag {tag}");
            tag.Hash.WriteTo(body.AsSpan(at));
            BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(at + 32), (uint)blob.Length);
            blob.CopyTo(body, at + 36);
            at += 36 + blob.Length;
        }
        using var _ = await server.SendAsync(HttpMethod.Post, "api/v1/chunks/upload", new ByteArrayContent(body), ct);
    }

    public async ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct)
    {
        var missing = new List<ChunkTag>();
        foreach (var batch in tags.Chunk(65536))
        {
            var body = new byte[batch.Length * 32];
            for (int i = 0; i < batch.Length; i++) batch[i].Hash.WriteTo(body.AsSpan(i * 32));
            using var response = await server.SendAsync(HttpMethod.Post, "api/v1/chunks/missing", new ByteArrayContent(body), ct);
            var answer = await response.Content.ReadAsByteArrayAsync(ct);
            if (answer.Length % 32 != 0) throw new ServerException(response.StatusCode, "bad_response", "the server's missing-chunk list is malformed");
            for (int i = 0; i < answer.Length; i += 32) missing.Add(new ChunkTag(new Hash32(answer.AsSpan(i, 32))));
        }
        return missing;
    }

    public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct) =>
        throw new NotSupportedException("sites never delete blobs on the server; the server's gc does");

    public IAsyncEnumerable<ChunkTag> ListAsync(CancellationToken ct) =>
        throw new NotSupportedException("sites do not list the server's blobs");
}
