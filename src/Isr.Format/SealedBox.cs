using System.Security.Cryptography;
using System.Text;

namespace Isr.Format;

/// <summary>AES-256-GCM with a random nonce, for small non-convergent secrets and metadata (keys, descriptors, key sections).
/// Layout: nonce (12) ‖ ciphertext ‖ GCM tag (16). The context string is bound as associated data so a box cannot be
/// moved to another purpose (a descriptor box cannot pass as a key section).</summary>
public static class SealedBox
{
    private const int NonceSize = 12, TagSize = 16;
    public const int Overhead = NonceSize + TagSize;

    public static byte[] Seal(ReadOnlySpan<byte> key, ReadOnlySpan<byte> plaintext, string context, ReadOnlySpan<byte> extraAad = default)
    {
        var box = new byte[Overhead + plaintext.Length];
        RandomNumberGenerator.Fill(box.AsSpan(0, NonceSize));
        using var aes = new AesGcm(key, TagSize);
        aes.Encrypt(box.AsSpan(0, NonceSize), plaintext, box.AsSpan(NonceSize, plaintext.Length), box.AsSpan(NonceSize + plaintext.Length), Aad(context, extraAad));
        return box;
    }

    public static byte[] Open(ReadOnlySpan<byte> key, ReadOnlySpan<byte> box, string context, ReadOnlySpan<byte> extraAad = default)
    {
        if (box.Length < Overhead) throw new MalformedDataException($"{context}: sealed box too short");
        var plaintext = new byte[box.Length - Overhead];
        try
        {
            using var aes = new AesGcm(key, TagSize);
            aes.Decrypt(box[..NonceSize], box[NonceSize..^TagSize], box[^TagSize..], plaintext, Aad(context, extraAad));
        }
        catch (AuthenticationTagMismatchException)
        {
            throw new MalformedDataException($"{context}: does not authenticate (wrong key or altered data)");
        }
        return plaintext;
    }

    private static byte[] Aad(string context, ReadOnlySpan<byte> extra)
    {
        var aad = new byte[Encoding.UTF8.GetByteCount(context) + 1 + extra.Length];
        int n = Encoding.UTF8.GetBytes(context, aad);
        extra.CopyTo(aad.AsSpan(n + 1));
        return aad;
    }
}
