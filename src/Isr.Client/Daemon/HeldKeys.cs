using Isr.Client.Homes;
using Isr.Format;

namespace Isr.Client.Daemon;

/// <summary>
/// The user's secrets, handed over by `isr login` and kept in the site daemon's memory only (never on disk), so that a
/// resume needs neither the password nor a second Argon2id. They hold only while the site's login is the one they
/// open (a logout, a password change or a site wipe ends them) and until they expire.
/// </summary>
public sealed class HeldKeys
{
    private sealed record Held(byte[] Wrapped, UserSecrets Secrets, DateTimeOffset Until);

    private readonly Lock _lock = new();
    private Held? _held;

    /// <summary>Unwraps the login's secrets with the key-encryption key the login derived, and keeps them.</summary>
    public void Keep(LoginRecord login, byte[] keyEncryptionKey, TimeSpan lifetime)
    {
        UserSecrets secrets;
        try { secrets = UserSecrets.Unwrap(keyEncryptionKey, login.WrappedSecrets); }
        catch (MalformedDataException) { throw new WrongPasswordException($"the key handed to the site daemon does not open the login of user {login.User}"); }
        lock (_lock) _held = new Held(login.WrappedSecrets, secrets, DateTimeOffset.UtcNow + lifetime);
    }

    /// <summary>The secrets if they open <paramref name="login"/> (the site's current login) and have not expired.</summary>
    public UserSecrets? For(LoginRecord? login)
    {
        lock (_lock)
        {
            Refresh(login);
            return _held?.Secrets;
        }
    }

    public void Forget()
    {
        lock (_lock) _held = null;
    }

    public bool Holding
    {
        get { lock (_lock) return _held is not null; }
    }

    /// <summary>Forgets the secrets once they expired or the site's login is no longer the one they open.</summary>
    public void Refresh(LoginRecord? login)
    {
        lock (_lock)
            if (_held is { } h && (login is null || !h.Wrapped.AsSpan().SequenceEqual(login.WrappedSecrets) || DateTimeOffset.UtcNow > h.Until))
                _held = null;
    }
}

/// <summary>The operation needs the user's keys: the daemon holds none for this login, and the request had no password.</summary>
public sealed class PasswordNeededException(string message) : Exception(message);
