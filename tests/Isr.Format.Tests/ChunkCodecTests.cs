using Isr.Format;

namespace Isr.Format.Tests;

public class ChunkCodecTests
{
    private static readonly ChunkCodec Codec = new(TestData.Secret(1));

    public static TheoryData<string, byte[]> Plaintexts() => new()
    {
        { "random 64 KiB", TestData.Random(64 << 10, 10) },
        { "random 128 KiB + 3", TestData.Random((128 << 10) + 3, 11) },
        { "compressible 128 KiB", TestData.Compressible(128 << 10) },
        { "one byte", [0x5a] },
        { "one zero byte", [0] },
        { "partial 1000", TestData.Random(1000, 12) },
        { "partial compressible 5000", TestData.Compressible(5000) },
        { "empty", [] },
    };

    [Theory]
    [MemberData(nameof(Plaintexts))]
    public void RoundTrip(string name, byte[] plaintext)
    {
        var (chunk, blob) = Codec.Encode(plaintext);
        Assert.Equal(plaintext.Length, chunk.Length);
        Assert.True(chunk.Tag.Matches(blob), name);
        Assert.False(chunk.IsZeroChunk);
        Assert.Equal(Codec.DeriveKey(plaintext), chunk.Key);
        Assert.Equal(plaintext.Length, ChunkCodec.PlaintextLength(blob));
        Assert.True(blob.Length <= ChunkCodec.MaxBlobLength(plaintext.Length));

        var destination = new byte[plaintext.Length + 17];
        int n = Codec.Decode(blob, chunk, destination);
        Assert.Equal(plaintext.Length, n);
        Assert.Equal(plaintext, destination[..n]);
    }

    [Fact]
    public void CompressibleChunkIsCompressedAndRandomChunkIsStored()
    {
        var compressible = TestData.Compressible(128 << 10);
        var (_, small) = Codec.Encode(compressible);
        Assert.Equal(1, small[1]);
        Assert.True(small.Length < compressible.Length / 4, $"compressible chunk encoded to {small.Length} bytes");

        var random = TestData.Random(128 << 10, 3);
        var (_, stored) = Codec.Encode(random);
        Assert.Equal(0, stored[1]);
        Assert.Equal(ChunkCodec.HeaderSize + random.Length + ChunkCodec.GcmTagSize, stored.Length);
    }

    [Fact]
    public void CiphertextDoesNotContainPlaintext()
    {
        var plaintext = TestData.Random(4096, 5);
        var (_, blob) = Codec.Encode(plaintext);
        Assert.Equal(-1, blob.AsSpan().IndexOf(plaintext.AsSpan(100, 32)));
    }

    [Fact]
    public void SamePlaintextSameDomainGivesSameTagKeyAndBlob()
    {
        var plaintext = TestData.Random(10_000, 7);
        var (a, blobA) = Codec.Encode(plaintext);
        var (b, blobB) = new ChunkCodec(TestData.Secret(1)).Encode(plaintext.ToArray());
        Assert.Equal(a, b);
        Assert.Equal(blobA, blobB);
    }

    [Fact]
    public void OtherDomainGivesOtherTagAndKey()
    {
        var plaintext = TestData.Random(10_000, 7);
        var (a, blobA) = Codec.Encode(plaintext);
        var (b, blobB) = new ChunkCodec(TestData.Secret(2)).Encode(plaintext);
        Assert.NotEqual(a.Tag, b.Tag);
        Assert.NotEqual(a.Key, b.Key);
        Assert.NotEqual(blobA, blobB);
    }

    [Fact]
    public void DifferentPlaintextGivesDifferentTagAndKey()
    {
        var p = TestData.Random(10_000, 7);
        var q = p.ToArray();
        q[9_999] ^= 1;
        var (a, _) = Codec.Encode(p);
        var (b, _) = Codec.Encode(q);
        Assert.NotEqual(a.Tag, b.Tag);
        Assert.NotEqual(a.Key, b.Key);
    }

    public static TheoryData<string, byte[]> TamperCases() => new()
    {
        { "stored", TestData.Random(200, 20) },
        { "compressed", TestData.Compressible(2000) },
        { "one byte", [42] },
    };

    /// <summary>Every bit of a small blob: flipping it is caught by the tag, and also (with a tag recomputed over the
    /// altered blob) by the header check or GCM.</summary>
    [Theory]
    [MemberData(nameof(TamperCases))]
    public void EveryFlippedBitIsDetected(string name, byte[] plaintext)
    {
        var (chunk, blob) = Codec.Encode(plaintext);
        var destination = new byte[plaintext.Length];
        for (int position = 0; position < blob.Length; position++)
            for (int bit = 0; bit < 8; bit++)
            {
                var altered = blob.ToArray();
                altered[position] ^= (byte)(1 << bit);
                Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(altered, chunk, destination));
                var retagged = chunk with { Tag = ChunkTag.Of(altered) };
                var e = Record.Exception(() => Codec.Decode(altered, retagged, destination));
                Assert.True(e is ChunkIntegrityException, $"{name}: flipping bit {bit} of byte {position} of {blob.Length} gave {e?.GetType().Name ?? "no exception"}");
            }
    }

    [Fact]
    public void FlippedBitsInLargeBlobAreDetectedInHeaderBodyAndGcmTag()
    {
        var plaintext = TestData.Random(64 << 10, 21);
        var (chunk, blob) = Codec.Encode(plaintext);
        var destination = new byte[plaintext.Length];
        int[] positions = [0, 1, 2, 5, ChunkCodec.HeaderSize, ChunkCodec.HeaderSize + 1, blob.Length / 2, blob.Length - ChunkCodec.GcmTagSize - 1,
            blob.Length - ChunkCodec.GcmTagSize, blob.Length - 8, blob.Length - 1];
        foreach (int position in positions)
        {
            var altered = blob.ToArray();
            altered[position] ^= 0x10;
            Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(altered, chunk, destination));
            Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(altered, chunk with { Tag = ChunkTag.Of(altered) }, destination));
        }
    }

    [Fact]
    public void TruncatedOrExtendedBlobIsDetected()
    {
        var plaintext = TestData.Random(3000, 22);
        var (chunk, blob) = Codec.Encode(plaintext);
        var destination = new byte[plaintext.Length];
        foreach (var altered in new[] { blob[..^1], blob[..10], blob[..0], (byte[])[.. blob, 0] })
        {
            Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(altered, chunk, destination));
            Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(altered, chunk with { Tag = ChunkTag.Of(altered) }, destination));
        }
    }

    [Fact]
    public void WrongKeyIsDetected()
    {
        var plaintext = TestData.Random(3000, 23);
        var (chunk, blob) = Codec.Encode(plaintext);
        var wrong = chunk with { Key = new ChunkKey(TestData.RandomHash(new Random(1))) };
        var e = Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, wrong, new byte[3000]));
        Assert.Contains(chunk.Tag.ToString(), e.Message);
    }

    [Fact]
    public void WrongTagIsDetected()
    {
        var plaintext = TestData.Random(3000, 24);
        var (chunk, blob) = Codec.Encode(plaintext);
        var (other, _) = Codec.Encode(TestData.Random(3000, 25));
        Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, chunk with { Tag = other.Tag }, new byte[3000]));
        Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, chunk with { Tag = ChunkTag.ZeroChunk }, new byte[3000]));
    }

    [Fact]
    public void KeyOfAnotherPlaintextIsDetected()
    {
        var (chunk, blob) = Codec.Encode(TestData.Random(3000, 26));
        var (other, _) = Codec.Encode(TestData.Random(3000, 27));
        Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, chunk with { Key = other.Key }, new byte[3000]));
    }

    [Fact]
    public void WrongLengthOrSmallDestinationIsDetected()
    {
        var (chunk, blob) = Codec.Encode(TestData.Random(3000, 28));
        Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, chunk with { Length = 2999 }, new byte[3000]));
        Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, chunk with { Length = 3001 }, new byte[3001]));
        Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, chunk, new byte[2999]));
    }

    /// <summary>A blob that authenticates under its own key, but whose key is not HMAC(domain, plaintext): a chunk that
    /// someone else (another domain, or an attacker who picked the key) encrypted. The first codec must refuse it.</summary>
    [Theory]
    [InlineData(3000, false)]
    [InlineData(50_000, true)]
    public void PlaintextMustGiveBackItsKey(int length, bool compressible)
    {
        var plaintext = compressible ? TestData.Compressible(length) : TestData.Random(length, 29);
        var foreign = new ChunkCodec(TestData.Secret(99));
        var (chunk, blob) = foreign.Encode(plaintext);
        var destination = new byte[length];
        Assert.Equal(length, foreign.Decode(blob, chunk, destination)); // the blob itself is sound
        Assert.Equal(plaintext, destination);
        var e = Assert.Throws<ChunkIntegrityException>(() => Codec.Decode(blob, chunk, new byte[length]));
        Assert.Contains("give back", e.Message);
    }

    [Fact]
    public void UnknownFormatVersionIsRejected()
    {
        var (_, blob) = Codec.Encode(TestData.Random(100, 30));
        var altered = blob.ToArray();
        altered[0] = 2;
        Assert.Throws<ChunkIntegrityException>(() => ChunkCodec.PlaintextLength(altered));
        Assert.Throws<ChunkIntegrityException>(() => ChunkCodec.PlaintextLength(new byte[ChunkCodec.HeaderSize + ChunkCodec.GcmTagSize - 1]));
    }

    [Fact]
    public void RejectsBadDomainSecretAndOversizedChunks()
    {
        Assert.Throws<ArgumentException>(() => new ChunkCodec(new byte[31]));
        Assert.Throws<ArgumentException>(() => new ChunkCodec(new byte[33]));
        Assert.Throws<ArgumentException>(() => Codec.Encode(new byte[ChunkCodec.MaxPlaintext + 1]));
    }

    [Fact]
    public void MaximumSizeChunkRoundTrips()
    {
        var plaintext = TestData.Random(ChunkCodec.MaxPlaintext, 31);
        var (chunk, blob) = Codec.Encode(plaintext);
        var destination = new byte[plaintext.Length];
        Codec.Decode(blob, chunk, destination);
        Assert.Equal(plaintext, destination);
    }

    [Fact]
    public void IsAllZero()
    {
        Assert.True(ChunkCodec.IsAllZero(new byte[4096]));
        Assert.True(ChunkCodec.IsAllZero([]));
        var data = new byte[4096];
        data[4095] = 1;
        Assert.False(ChunkCodec.IsAllZero(data));
    }

    [Fact]
    public void ChunkKeyDoesNotPrintItsBytes()
    {
        var (chunk, _) = Codec.Encode(TestData.Random(100, 32));
        Assert.DoesNotContain(chunk.Key.Hash.ToString(), chunk.Key.ToString());
        Assert.DoesNotContain(chunk.Key.Hash.ToString(), chunk.ToString());
    }
}
