using Isr.Format;

namespace Isr.Format.Tests;

public class KeyTests
{
    private static KdfParameters Fast(int saltSeed = 1, int memoryKiB = 1024, int iterations = 1) =>
        new(TestData.Random(16, saltSeed), memoryKiB, iterations, 1);

    [Fact]
    public void SamePasswordAndParametersGiveSameKeys()
    {
        var a = PasswordKdf.Derive("correct horse", Fast());
        var b = PasswordKdf.Derive("correct horse", Fast());
        Assert.Equal(a.AuthSecret, b.AuthSecret);
        Assert.Equal(a.KeyEncryptionKey, b.KeyEncryptionKey);
        Assert.Equal(32, a.AuthSecret.Length);
        Assert.Equal(32, a.KeyEncryptionKey.Length);
        Assert.NotEqual(a.AuthSecret, a.KeyEncryptionKey);
    }

    [Fact]
    public void PasswordSaltAndCostEachChangeTheKeys()
    {
        var baseline = PasswordKdf.Derive("correct horse", Fast()).KeyEncryptionKey;
        Assert.NotEqual(baseline, PasswordKdf.Derive("correct horsf", Fast()).KeyEncryptionKey);
        Assert.NotEqual(baseline, PasswordKdf.Derive("correct horse", Fast(saltSeed: 2)).KeyEncryptionKey);
        Assert.NotEqual(baseline, PasswordKdf.Derive("correct horse", Fast(iterations: 2)).KeyEncryptionKey);
        Assert.NotEqual(baseline, PasswordKdf.Derive("correct horse", Fast(memoryKiB: 2048)).KeyEncryptionKey);
    }

    [Fact]
    public void DefaultParametersHaveFreshSaltAndRealCost()
    {
        var a = KdfParameters.CreateDefault();
        var b = KdfParameters.CreateDefault();
        Assert.Equal(16, a.Salt.Length);
        Assert.NotEqual(a.Salt, b.Salt);
        Assert.True(a.MemoryKiB >= 64 * 1024);
        Assert.True(a.Iterations >= 3);
    }

    [Fact]
    public void UserSecretsWrapUnderPasswordAndUnwrapWithIt()
    {
        var kdf = Fast();
        var secrets = UserSecrets.Generate();
        var wrapped = secrets.Wrap(PasswordKdf.Derive("pw", kdf).KeyEncryptionKey);
        Assert.Equal(-1, wrapped.AsSpan().IndexOf(secrets.DomainSecret));

        var unwrapped = UserSecrets.Unwrap(PasswordKdf.Derive("pw", kdf).KeyEncryptionKey, wrapped);
        Assert.Equal(secrets.DomainSecret, unwrapped.DomainSecret);

        // The parcel wrap key came through too: a parcel key wrapped before unwraps after.
        var parcel = ParcelKeys.Generate();
        var wrappedParcel = secrets.WrapParcelKey(parcel, "parcel-1");
        Assert.Equal(parcel.Master, unwrapped.UnwrapParcelKey(wrappedParcel, "parcel-1").Master);
    }

    [Fact]
    public void WrongPasswordFailsToUnwrap()
    {
        var kdf = Fast();
        var wrapped = UserSecrets.Generate().Wrap(PasswordKdf.Derive("right", kdf).KeyEncryptionKey);
        Assert.Throws<MalformedDataException>(() => UserSecrets.Unwrap(PasswordKdf.Derive("wrong", kdf).KeyEncryptionKey, wrapped));
        // The authentication secret is not the key-encryption key.
        Assert.Throws<MalformedDataException>(() => UserSecrets.Unwrap(PasswordKdf.Derive("right", kdf).AuthSecret, wrapped));
    }

    [Fact]
    public void AlteredOrMisshapenWrappedSecretsFail()
    {
        var kek = TestData.Secret(3);
        var wrapped = UserSecrets.Generate().Wrap(kek);
        wrapped[^1] ^= 1;
        Assert.Throws<MalformedDataException>(() => UserSecrets.Unwrap(kek, wrapped));
        var shortSecrets = SealedBox.Seal(kek, new byte[63], "isr user secrets v1");
        Assert.Throws<MalformedDataException>(() => UserSecrets.Unwrap(kek, shortSecrets));
    }

    [Fact]
    public void GeneratedSecretsDiffer()
    {
        Assert.NotEqual(UserSecrets.Generate().DomainSecret, UserSecrets.Generate().DomainSecret);
        Assert.Equal(32, UserSecrets.Generate().DomainSecret.Length);
    }

    [Fact]
    public void ParcelKeyWrapIsBoundToParcelIdAndUser()
    {
        var secrets = UserSecrets.Generate();
        var parcel = ParcelKeys.Generate();
        var wrapped = secrets.WrapParcelKey(parcel, "parcel-a");
        var back = secrets.UnwrapParcelKey(wrapped, "parcel-a");
        Assert.Equal(parcel.Master, back.Master);
        Assert.Equal(parcel.PageKey, back.PageKey);
        Assert.Throws<MalformedDataException>(() => secrets.UnwrapParcelKey(wrapped, "parcel-b"));
        Assert.Throws<MalformedDataException>(() => secrets.UnwrapParcelKey(wrapped, "parcel-a "));
        Assert.Throws<MalformedDataException>(() => UserSecrets.Generate().UnwrapParcelKey(wrapped, "parcel-a"));
    }

    [Fact]
    public void ParcelKeysAreDeterministicAndDistinctPerPurpose()
    {
        var master = TestData.Secret(5);
        var a = new ParcelKeys(master.ToArray());
        var b = new ParcelKeys(master.ToArray());
        Assert.Equal(a.PageKey, b.PageKey);
        Assert.Equal(a.VersionMacKey, b.VersionMacKey);
        Assert.Equal(a.MetadataKey, b.MetadataKey);
        Assert.Equal(a.JournalKey, b.JournalKey);
        var all = new[] { a.Master, a.PageKey, a.VersionMacKey, a.MetadataKey, a.JournalKey };
        Assert.Equal(all.Length, all.Select(Convert.ToHexString).Distinct().Count());
        Assert.All(all, k => Assert.Equal(32, k.Length));
        Assert.NotEqual(a.PageKey, new ParcelKeys(TestData.Secret(6)).PageKey);
    }

    [Fact]
    public void ParcelKeyMustBe32Bytes()
    {
        Assert.Throws<MalformedDataException>(() => new ParcelKeys(new byte[31]));
        Assert.Throws<MalformedDataException>(() => new ParcelKeys(new byte[33]));
    }
}

public class Hash32Tests
{
    [Fact]
    public void HexRoundTripAndByteOrder()
    {
        var bytes = TestData.Random(32, 1);
        var hash = new Hash32(bytes);
        Assert.Equal(bytes, hash.ToArray());
        Assert.Equal(Convert.ToHexStringLower(bytes), hash.ToString());
        Assert.Equal(hash, Hash32.Parse(hash.ToString()));
        Assert.Equal(hash, Hash32.Parse(hash.ToString().ToUpperInvariant()));
    }

    [Fact]
    public void EqualityUsesEveryWord()
    {
        var bytes = TestData.Random(32, 2);
        var hash = new Hash32(bytes);
        for (int i = 0; i < 32; i++)
        {
            var other = bytes.ToArray();
            other[i] ^= 1;
            Assert.NotEqual(hash, new Hash32(other));
            Assert.True(hash != new Hash32(other));
        }
        Assert.Equal(hash, new Hash32(bytes.ToArray()));
        Assert.Equal(hash.GetHashCode(), new Hash32(bytes.ToArray()).GetHashCode());
    }

    [Fact]
    public void ZeroAndLengthChecks()
    {
        Assert.True(default(Hash32).IsZero);
        Assert.True(ChunkTag.ZeroChunk.IsZeroChunk);
        var one = new byte[32];
        one[31] = 1;
        Assert.False(new Hash32(one).IsZero);
        Assert.Throws<ArgumentException>(() => new Hash32(new byte[31]));
        Assert.Throws<ArgumentException>(() => Hash32.Parse("abcd"));
        Assert.ThrowsAny<FormatException>(() => Hash32.Parse(new string('z', 64)));
    }

    [Fact]
    public void TagIsSha256OfBlob()
    {
        var blob = TestData.Random(100, 3);
        var tag = ChunkTag.Of(blob);
        Assert.Equal(System.Security.Cryptography.SHA256.HashData(blob), tag.Hash.ToArray());
        Assert.True(tag.Matches(blob));
        blob[0] ^= 1;
        Assert.False(tag.Matches(blob));
    }
}
