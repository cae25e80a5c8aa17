using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Isr.Format;

/// <summary>32 bytes held as four words so that maps of hundreds of thousands of tags and keys stay compact and compare fast.</summary>
public readonly struct Hash32 : IEquatable<Hash32>
{
    public const int Size = 32;
    private readonly ulong _a, _b, _c, _d;

    public Hash32(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Size) throw new ArgumentException($"expected {Size} bytes, got {bytes.Length}");
        _a = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        _b = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        _c = BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]);
        _d = BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]);
    }

    public bool IsZero => (_a | _b | _c | _d) == 0;

    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, _a);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], _b);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], _c);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], _d);
    }

    public byte[] ToArray()
    {
        var bytes = new byte[Size];
        WriteTo(bytes);
        return bytes;
    }

    public static Hash32 Sha256(ReadOnlySpan<byte> data)
    {
        Span<byte> digest = stackalloc byte[Size];
        SHA256.HashData(data, digest);
        return new Hash32(digest);
    }

    public static Hash32 Parse(string hex) => new(Convert.FromHexString(hex));

    public override string ToString() => Convert.ToHexStringLower(ToArray());
    public bool Equals(Hash32 other) => _a == other._a && _b == other._b && _c == other._c && _d == other._d;
    public override bool Equals(object? obj) => obj is Hash32 other && Equals(other);
    public override int GetHashCode() => (int)_a ^ (int)(_a >> 32);
    public static bool operator ==(Hash32 left, Hash32 right) => left.Equals(right);
    public static bool operator !=(Hash32 left, Hash32 right) => !left.Equals(right);
}

/// <summary>Name of a stored blob: SHA-256 of its ciphertext. Anyone can verify a blob against its tag without keys.
/// The all-zero tag stands for an all-zero chunk, which is never stored.</summary>
public readonly record struct ChunkTag(Hash32 Hash)
{
    public static readonly ChunkTag ZeroChunk = default;
    public bool IsZeroChunk => Hash.IsZero;
    public static ChunkTag Of(ReadOnlySpan<byte> blob) => new(Hash32.Sha256(blob));
    public static ChunkTag Parse(string hex) => new(Hash32.Parse(hex));
    public bool Matches(ReadOnlySpan<byte> blob) => Of(blob) == this;
    public override string ToString() => Hash.ToString();
}

/// <summary>Convergent key of one chunk: HMAC-SHA256(dedup-domain secret, plaintext).</summary>
public readonly record struct ChunkKey(Hash32 Hash)
{
    public override string ToString() => "ChunkKey(…)";
}

/// <summary>Where a chunk's ciphertext is (tag), how to open it (key) and how long its plaintext is.</summary>
public readonly record struct ChunkRef(ChunkTag Tag, ChunkKey Key, int Length)
{
    public static ChunkRef Zero(int length) => new(ChunkTag.ZeroChunk, default, length);
    public bool IsZeroChunk => Tag.IsZeroChunk;
}
