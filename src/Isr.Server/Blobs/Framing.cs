using System.Buffers.Binary;
using Isr.Format;
using Isr.Server.Api;

namespace Isr.Server.Blobs;

/// <summary>Binary bodies of the chunk endpoints (PROTOCOL.md "Chunks"): tag lists and <c>tag(32) ‖ u32 LE length ‖ blob</c> frames.</summary>
public static class Framing
{
    public const int HeaderSize = Hash32.Size + 4;
    public const uint Absent = 0xFFFFFFFF;

    /// <summary>Reads a body of N×32-byte tags, at most <paramref name="maxTags"/>.</summary>
    public static async Task<List<ChunkTag>> ReadTagsAsync(Stream body, int maxTags, CancellationToken ct)
    {
        long limit = (long)maxTags * Hash32.Size;
        using var buffer = new MemoryStream();
        var chunk = new byte[64 * 1024];
        int n;
        while ((n = await body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + n > limit) throw ApiException.BadRequest($"at most {maxTags} tags per request");
            buffer.Write(chunk, 0, n);
        }
        if (buffer.Length % Hash32.Size != 0) throw ApiException.BadRequest("the body must be a sequence of 32-byte tags");
        var bytes = buffer.GetBuffer().AsSpan(0, (int)buffer.Length);
        var tags = new List<ChunkTag>(bytes.Length / Hash32.Size);
        for (int i = 0; i < bytes.Length; i += Hash32.Size) tags.Add(new ChunkTag(new Hash32(bytes.Slice(i, Hash32.Size))));
        return tags;
    }

    public static byte[] EncodeTags(IEnumerable<ChunkTag> tags)
    {
        var list = tags.ToList();
        var bytes = new byte[list.Count * Hash32.Size];
        for (int i = 0; i < list.Count; i++) list[i].Hash.WriteTo(bytes.AsSpan(i * Hash32.Size));
        return bytes;
    }

    public static void WriteHeader(Span<byte> header, ChunkTag tag, uint length)
    {
        tag.Hash.WriteTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[Hash32.Size..], length);
    }

    /// <summary>Reads one frame header; null at a clean end of the body.</summary>
    public static async Task<(ChunkTag Tag, uint Length)?> ReadHeaderAsync(Stream body, byte[] header, CancellationToken ct)
    {
        int got = await body.ReadAtLeastAsync(header.AsMemory(0, HeaderSize), HeaderSize, throwOnEndOfStream: false, ct);
        if (got == 0) return null;
        if (got < HeaderSize) throw ApiException.BadRequest("truncated frame header");
        return (new ChunkTag(new Hash32(header.AsSpan(0, Hash32.Size))), BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(Hash32.Size)));
    }

    /// <summary>Parses a 64-character lowercase hex tag (URLs, JSON).</summary>
    public static ChunkTag ParseTag(string? hex, string what)
    {
        if (hex is not { Length: 64 } || !hex.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f'))
            throw ApiException.BadRequest($"{what} is not a tag (64 lowercase hex characters)");
        return ChunkTag.Parse(hex);
    }
}
