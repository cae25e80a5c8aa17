using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Vmm;

namespace Isr.EndToEnd.Tests;

/// <summary>Refusals that must be clear and distinct, and leave nothing behind: a revoked session, a disabled
/// account, and a parcel whose VM this site cannot run.</summary>
public sealed class RefusalTests
{
    [Fact]
    public async Task Revoked_session_and_disabled_account_are_told_apart()
    {
        await using var site = new TestSite();
        await using var server = await TestServer.StartAsync(site.Root, TestSite.Password);
        await site.LoginAsync(server);
        await site.IsrOkAsync("ls");

        // A token revoked at the server (here: by logging out from a copy of this site's login).
        var login = new SiteDirectory(site.Home).Login!;
        using (var other = new ServerParcelHome(login)) await other.LogoutAsync(default);
        var (revoked, _, revokedErr) = await site.IsrAsync("ls");
        Assert.Equal(9, revoked);
        Assert.Contains("revoked or has expired", revokedErr);

        await site.LoginAsync(server);
        await TestServer.Admin("user", "disable", TestServer.User, "--data", server.DataDirectory);
        var (cut, _, _) = await site.IsrAsync("ls");       // disabling revokes the account's sessions
        Assert.Equal(9, cut);
        var (disabled, _, disabledErr) = await site.IsrAsync("login", "--server", server.Url, "--user", TestServer.User, "--server-fingerprint", server.Fingerprint);
        Assert.Equal(9, disabled);
        Assert.Contains("disabled", disabledErr);
    }

    [Fact]
    public async Task A_parcel_made_for_KVM_is_refused_here_saying_what_differs()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite();
        // As if created at a KVM host: same QEMU, but the descriptor records the kvm accelerator.
        var home = new DirectoryParcelHome(site.Store);
        var secrets = home.Initialize(TestSite.Password);
        var descriptor = await VmDescriptorFactory.CreateAsync(QemuInstallation.Locate(), 256 << 20, "pc", accelerator: "tcg") with { Accelerator = "kvm" };
        await ParcelImporter.ImportAsync(home, secrets, new SiteDirectory(site.Home), "box", TestEnvironment.GuestImage(), ParcelImporter.DefaultChunkSize,
            descriptor, null, default);

        var (code, _, stderr) = await site.IsrAsync("resume", "box", "--store", site.Store, "--headless");
        Assert.Equal(6, code);
        Assert.Contains("kvm", stderr);
        Assert.False(File.Exists(Path.Combine(site.Home, "parcels", "box", "pending-commit.json")));
    }
}

/// <summary>Password changes keep every key (no parcel is re-encrypted) and retire the old password.</summary>
public sealed class PasswordChangeTests
{
    [Fact]
    public async Task Passwd_at_the_server_rewraps_the_keys_under_the_new_password()
    {
        await using var site = new TestSite();
        await using var server = await TestServer.StartAsync(site.Root, TestSite.Password);
        await site.LoginAsync(server);
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage());
        var before = new SiteDirectory(site.Home).Login!;
        var unlockedBefore = await new ServerParcelHome(before).UnlockAsync(TestSite.Password, default);

        const string fresh = "a much longer new passphrase";
        var newPasswordFile = Path.Combine(site.Root, "new-password");
        await File.WriteAllTextAsync(newPasswordFile, fresh);
        await site.IsrOkAsync("passwd", "--new-password-file", newPasswordFile);

        var after = new SiteDirectory(site.Home).Login!;
        using var home = new ServerParcelHome(after);
        await Assert.ThrowsAsync<WrongPasswordException>(async () => await home.UnlockAsync(TestSite.Password, default));
        var unlockedAfter = await home.UnlockAsync(fresh, default);
        Assert.Equal(unlockedBefore.DomainSecret, unlockedAfter.DomainSecret); // same keys: nothing re-encrypted
        // The server accepts the new password at login and refuses the old one.
        var (old, _, _) = await site.IsrAsync("login", "--server", server.Url, "--user", TestServer.User, "--server-fingerprint", server.Fingerprint);
        Assert.Equal(3, old);
        var (code, _, stderr) = await site.IsrWithPasswordAsync(fresh, "login", "--server", server.Url, "--user", TestServer.User, "--server-fingerprint", server.Fingerprint);
        Assert.True(code == 0, stderr);
        var opened = await OpenedParcel.OpenAsync(new ServerParcelHome(new SiteDirectory(site.Home).Login!), unlockedAfter, "box", default);
        Assert.Equal(1, opened.Head.Number);
    }
}
