using System.Security.Cryptography;
using System.Text;
using Isr.Format;

namespace Isr.Fuzz.Tests;

/// <summary>Deterministic stand-ins for the library's randomness, so that a fuzz seed rebuilds byte-identical seed inputs.</summary>
public static class Crypto
{
    public static byte[] Bytes(Random rng, int count)
    {
        var b = new byte[count];
        rng.NextBytes(b);
        return b;
    }

    public static ParcelKeys Keys(Random rng) => new(Bytes(rng, 32));

    /// <summary>Same layout as <see cref="SealedBox.Seal"/> (nonce ‖ ciphertext ‖ tag, aad = context ‖ 0 ‖ extra) with a nonce
    /// from <paramref name="rng"/>. Every seed built with it is checked to open with <see cref="SealedBox.Open"/>.</summary>
    public static byte[] Seal(Random rng, ReadOnlySpan<byte> key, ReadOnlySpan<byte> plaintext, string context, ReadOnlySpan<byte> extraAad = default)
    {
        var box = new byte[SealedBox.Overhead + plaintext.Length];
        rng.NextBytes(box.AsSpan(0, 12));
        var aad = new byte[Encoding.UTF8.GetByteCount(context) + 1 + extraAad.Length];
        int n = Encoding.UTF8.GetBytes(context, aad);
        extraAad.CopyTo(aad.AsSpan(n + 1));
        using var aes = new AesGcm(key, 16);
        aes.Encrypt(box.AsSpan(0, 12), plaintext, box.AsSpan(12, plaintext.Length), box.AsSpan(12 + plaintext.Length), aad);
        return box;
    }
}
