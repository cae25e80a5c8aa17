using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Isr.Format;

/// <summary>
/// Convergent chunk encryption, format "ZSTD1-AES256GCM-HMACSHA256" (docs/FORMAT.md):
/// key = HMAC-SHA256(domain secret, plaintext); blob = header ‖ AES-256-GCM(key, nonce 0, zstd(plaintext)) ‖ GCM tag;
/// tag = SHA-256(blob). A fixed nonce is safe because a key is only ever used for the one plaintext it was derived from.
/// Equal plaintext in one dedup domain gives an equal blob, so the store deduplicates across versions and parcels.
/// </summary>
public sealed class ChunkCodec
{
    public const byte FormatVersion = 1;
    private const byte Stored = 0, Compressed = 1;
    public const int HeaderSize = 6; // version, compression, plaintext length (u32 LE)
    public const int GcmTagSize = 16;
    public const int MaxPlaintext = 16 << 20;
    private static readonly byte[] ZeroNonce = new byte[12];

    private readonly byte[] _domainSecret;

    public ChunkCodec(ReadOnlySpan<byte> domainSecret)
    {
        if (domainSecret.Length != 32) throw new ArgumentException("domain secret must be 32 bytes");
        _domainSecret = domainSecret.ToArray();
    }

    public ChunkKey DeriveKey(ReadOnlySpan<byte> plaintext)
    {
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(_domainSecret, plaintext, mac);
        return new ChunkKey(new Hash32(mac));
    }

    public static int MaxBlobLength(int plaintextLength) =>
        HeaderSize + Math.Max(plaintextLength, Zstd.MaxCompressedLength(plaintextLength)) + GcmTagSize;

    /// <summary>Encodes one chunk. All-zero chunks are the caller's business: they are never encoded or stored.</summary>
    public (ChunkRef Ref, byte[] Blob) Encode(ReadOnlySpan<byte> plaintext)
    {
        if (plaintext.Length > MaxPlaintext) throw new ArgumentException("chunk too large");
        var key = DeriveKey(plaintext);
        byte[] scratch = ArrayPool<byte>.Shared.Rent(Zstd.MaxCompressedLength(plaintext.Length));
        try
        {
            int compressedLength = Zstd.TryCompress(plaintext, scratch);
            bool useCompressed = compressedLength >= 0 && compressedLength < plaintext.Length;
            ReadOnlySpan<byte> body = useCompressed ? scratch.AsSpan(0, compressedLength) : plaintext;
            var blob = new byte[HeaderSize + body.Length + GcmTagSize];
            blob[0] = FormatVersion;
            blob[1] = useCompressed ? Compressed : Stored;
            BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(2), (uint)plaintext.Length);
            Span<byte> keyBytes = stackalloc byte[32];
            key.Hash.WriteTo(keyBytes);
            using (var aes = new AesGcm(keyBytes, GcmTagSize))
                aes.Encrypt(ZeroNonce, body, blob.AsSpan(HeaderSize, body.Length), blob.AsSpan(HeaderSize + body.Length), blob.AsSpan(0, HeaderSize));
            CryptographicOperations.ZeroMemory(keyBytes);
            return (new ChunkRef(ChunkTag.Of(blob), key, plaintext.Length), blob);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    public static int PlaintextLength(ReadOnlySpan<byte> blob)
    {
        if (blob.Length < HeaderSize + GcmTagSize || blob[0] != FormatVersion)
            throw new ChunkIntegrityException("not a chunk of a known format");
        return (int)BinaryPrimitives.ReadUInt32LittleEndian(blob[2..]);
    }

    /// <summary>Verifies the blob against its tag, decrypts, decompresses and checks that the plaintext gives back its key.
    /// Returns the plaintext length written to <paramref name="destination"/>.</summary>
    public int Decode(ReadOnlySpan<byte> blob, ChunkRef chunk, Span<byte> destination)
    {
        if (!chunk.Tag.Matches(blob)) throw new ChunkIntegrityException($"chunk {chunk.Tag} does not match its tag");
        int length = PlaintextLength(blob);
        if (length < 0 || length != chunk.Length || length > destination.Length || length > MaxPlaintext)
            throw new ChunkIntegrityException($"chunk {chunk.Tag} has length {length}, expected {chunk.Length}");
        var body = blob[HeaderSize..^GcmTagSize];
        Span<byte> keyBytes = stackalloc byte[32];
        chunk.Key.Hash.WriteTo(keyBytes);
        byte[]? scratch = null;
        try
        {
            using var aes = new AesGcm(keyBytes, GcmTagSize);
            if (blob[1] == Stored)
            {
                if (body.Length != length) throw new ChunkIntegrityException($"chunk {chunk.Tag} is truncated");
                aes.Decrypt(ZeroNonce, body, blob[^GcmTagSize..], destination[..length], blob[..HeaderSize]);
            }
            else if (blob[1] == Compressed)
            {
                scratch = ArrayPool<byte>.Shared.Rent(body.Length);
                aes.Decrypt(ZeroNonce, body, blob[^GcmTagSize..], scratch.AsSpan(0, body.Length), blob[..HeaderSize]);
                if (Zstd.Decompress(scratch.AsSpan(0, body.Length), destination[..length]) != length)
                    throw new ChunkIntegrityException($"chunk {chunk.Tag} decompresses to the wrong length");
            }
            else throw new ChunkIntegrityException($"chunk {chunk.Tag} uses unknown compression {blob[1]}");
        }
        catch (AuthenticationTagMismatchException)
        {
            throw new ChunkIntegrityException($"chunk {chunk.Tag} does not decrypt with its key");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(keyBytes);
            if (scratch != null) ArrayPool<byte>.Shared.Return(scratch);
        }
        if (DeriveKey(destination[..length]) != chunk.Key)
            throw new ChunkIntegrityException($"chunk {chunk.Tag} plaintext does not give back its key");
        return length;
    }

    public static bool IsAllZero(ReadOnlySpan<byte> data) => !data.ContainsAnyExcept((byte)0);
}
