using System.Security.Cryptography;
using Isr.Format;
using Isr.Storage.Metadata;

namespace Isr.Server.Admin;

/// <summary>What `isr-server user add` makes: fresh user secrets wrapped under the password's key-encryption key and under
/// a random recovery key, and the verifier SHA-256(authSecret). The password, the KEK and the secrets never reach the
/// database; the recovery key is shown once and not kept.</summary>
public static class UserProvisioning
{
    public sealed record Provisioned(NewUser User, byte[] RecoveryKey);

    public static Provisioned Create(string name, string password, KdfParameters? kdf = null)
    {
        ValidateName(name);
        if (password.Length == 0) throw new ArgumentException("the password is empty");
        kdf ??= KdfParameters.CreateDefault();
        var secrets = UserSecrets.Generate();
        var keys = PasswordKdf.Derive(password, kdf);
        var recoveryKey = RandomNumberGenerator.GetBytes(32);
        try
        {
            var user = new NewUser(name, SHA256.HashData(keys.AuthSecret), kdf, secrets.Wrap(keys.KeyEncryptionKey), secrets.Wrap(recoveryKey));
            return new Provisioned(user, recoveryKey);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(keys.KeyEncryptionKey);
            CryptographicOperations.ZeroMemory(keys.AuthSecret);
        }
    }

    public static void ValidateName(string name)
    {
        if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '@'))
            throw new ArgumentException($"'{name}' is not a valid user name (letters, digits, '-', '_', '.', '@'; at most 64)");
    }
}
