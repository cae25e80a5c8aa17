using System.Security.Cryptography;

namespace Isr.Format;

/// <summary>
/// A user's long-lived secrets: the dedup-domain secret (convergent chunk keys) and the key that wraps parcel keys.
/// At rest they exist only wrapped (under the password's key-encryption key, and under a recovery key).
/// </summary>
public sealed class UserSecrets
{
    private const string WrapContext = "isr user secrets v1";
    private const string ParcelKeyContext = "isr parcel key v1";

    public byte[] DomainSecret { get; }
    private readonly byte[] _parcelWrapKey;

    private UserSecrets(byte[] domainSecret, byte[] parcelWrapKey)
    {
        DomainSecret = domainSecret;
        _parcelWrapKey = parcelWrapKey;
    }

    /// <summary>The recovery key as printed: lowercase hex in groups of 8 (hex, so any client parses it after removing '-').</summary>
    public static string FormatRecoveryKey(byte[] key) =>
        string.Join("-", Convert.ToHexStringLower(key).Chunk(8).Select(c => new string(c)));

    public static UserSecrets Generate() => new(RandomNumberGenerator.GetBytes(32), RandomNumberGenerator.GetBytes(32));

    public byte[] Wrap(ReadOnlySpan<byte> wrappingKey) => SealedBox.Seal(wrappingKey, [.. DomainSecret, .. _parcelWrapKey], WrapContext);

    /// <exception cref="MalformedDataException">wrong key (wrong password) or altered blob</exception>
    public static UserSecrets Unwrap(ReadOnlySpan<byte> wrappingKey, ReadOnlySpan<byte> wrapped)
    {
        var plain = SealedBox.Open(wrappingKey, wrapped, WrapContext);
        if (plain.Length != 64) throw new MalformedDataException("user secrets have the wrong length");
        return new UserSecrets(plain[..32], plain[32..]);
    }

    public byte[] WrapParcelKey(ParcelKeys parcel, string parcelId) =>
        SealedBox.Seal(_parcelWrapKey, parcel.Master, ParcelKeyContext, System.Text.Encoding.UTF8.GetBytes(parcelId));

    public ParcelKeys UnwrapParcelKey(ReadOnlySpan<byte> wrapped, string parcelId) =>
        new(SealedBox.Open(_parcelWrapKey, wrapped, ParcelKeyContext, System.Text.Encoding.UTF8.GetBytes(parcelId)));
}

/// <summary>Keys of one parcel, all derived (HKDF) from one random parcel key, one per purpose.</summary>
public sealed class ParcelKeys
{
    public byte[] Master { get; }
    public byte[] PageKey { get; }
    public byte[] VersionMacKey { get; }
    public byte[] MetadataKey { get; }
    public byte[] JournalKey { get; }

    public ParcelKeys(byte[] master)
    {
        if (master.Length != 32) throw new MalformedDataException("parcel key must be 32 bytes");
        Master = master;
        PageKey = Derive("isr page keys v1");
        VersionMacKey = Derive("isr version mac v1");
        MetadataKey = Derive("isr metadata v1");
        JournalKey = Derive("isr site journal v1");
    }

    public static ParcelKeys Generate() => new(RandomNumberGenerator.GetBytes(32));

    private byte[] Derive(string purpose) =>
        HKDF.DeriveKey(HashAlgorithmName.SHA256, Master, 32, info: System.Text.Encoding.UTF8.GetBytes(purpose));
}
