using System.Security.Cryptography;
using System.Text;
using Konscious.Security.Cryptography;

namespace Isr.Format;

/// <summary>Argon2id parameters, stored with the salt so that they can be raised later without breaking old key files.</summary>
public sealed record KdfParameters(byte[] Salt, int MemoryKiB, int Iterations, int Parallelism)
{
    /// <summary>64 MiB, 3 passes, 2 lanes: about a second on a small site machine; costly for an offline guesser.</summary>
    public static KdfParameters CreateDefault() => new(RandomNumberGenerator.GetBytes(16), 64 * 1024, 3, 2);
}

/// <summary>What a password yields. The authentication secret may be shown to a server (which keeps only a verifier);
/// the key-encryption key never leaves the client.</summary>
public sealed record PasswordKeys(byte[] AuthSecret, byte[] KeyEncryptionKey);

public static class PasswordKdf
{
    public static PasswordKeys Derive(string password, KdfParameters p)
    {
        using var argon = new Argon2id(Encoding.UTF8.GetBytes(password))
        {
            Salt = p.Salt,
            MemorySize = p.MemoryKiB,
            Iterations = p.Iterations,
            DegreeOfParallelism = p.Parallelism,
        };
        byte[] master = argon.GetBytes(32);
        try
        {
            return new PasswordKeys(
                HKDF.DeriveKey(HashAlgorithmName.SHA256, master, 32, info: "isr auth v1"u8.ToArray()),
                HKDF.DeriveKey(HashAlgorithmName.SHA256, master, 32, info: "isr kek v1"u8.ToArray()));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(master);
        }
    }
}
