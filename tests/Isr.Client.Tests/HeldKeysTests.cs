using System.Security.Cryptography;
using Isr.Client.Daemon;
using Isr.Client.Homes;
using Isr.Format;

namespace Isr.Client.Tests;

/// <summary>The keys a site daemon holds after login: only for the login they open, and never past a logout or expiry.</summary>
public sealed class HeldKeysTests
{
    private readonly UserSecrets _secrets = UserSecrets.Generate();
    private readonly byte[] _kek = RandomNumberGenerator.GetBytes(32);

    private LoginRecord Login(byte[] kek) =>
        new("https://server.example:8443", "alice", "ab", "token", _secrets.Wrap(kek), KdfParameters.CreateDefault());

    [Fact]
    public void Kept_keys_open_the_login_they_came_from()
    {
        var login = Login(_kek);
        var held = new HeldKeys();
        Assert.Null(held.For(login));
        held.Keep(login, _kek, TimeSpan.FromHours(1));
        Assert.Equal(_secrets.DomainSecret, held.For(login)!.DomainSecret);
        Assert.True(held.Holding);
    }

    [Fact]
    public void A_key_that_does_not_open_the_login_is_refused()
    {
        var held = new HeldKeys();
        Assert.Throws<WrongPasswordException>(() => held.Keep(Login(_kek), RandomNumberGenerator.GetBytes(32), TimeSpan.FromHours(1)));
        Assert.False(held.Holding);
    }

    [Fact]
    public void Another_login_or_none_forgets_them()
    {
        var login = Login(_kek);
        var held = new HeldKeys();
        held.Keep(login, _kek, TimeSpan.FromHours(1));
        Assert.Null(held.For(Login(RandomNumberGenerator.GetBytes(32)))); // a password change re-wraps the secrets
        Assert.False(held.Holding);
        held.Keep(login, _kek, TimeSpan.FromHours(1));
        held.Refresh(null); // logout or site wipe: the login file is gone
        Assert.False(held.Holding);
        Assert.Null(held.For(login));
    }

    [Fact]
    public void Expired_or_forgotten_keys_are_gone()
    {
        var login = Login(_kek);
        var held = new HeldKeys();
        held.Keep(login, _kek, TimeSpan.FromSeconds(-1));
        Assert.Null(held.For(login));
        held.Keep(login, _kek, TimeSpan.FromHours(1));
        held.Forget();
        Assert.Null(held.For(login));
    }
}
