using System.Text.Json;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Format;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// Seed 000's full cycle through the real server on loopback: work at site A, suspend, check in, resume at site B
/// exactly where the guest stopped; sync while running; locks with a clear holder, a broken lock giving a side
/// version; rollback; and neither the server's data directory nor the sites hold plaintext or keys.
/// </summary>
public sealed class TwoSiteCycleTests
{
    private static TimeSpan GuestTimeout => CycleSteps.GuestTimeout;

    [Fact]
    public async Task Suspend_at_site_A_check_in_and_resume_at_site_B()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);

        // Login: a non-interactive first login must name the fingerprint; a wrong password is refused distinctly.
        var (noPin, _, noPinErr) = await a.IsrAsync("login", "--server", server.Url, "--user", TestServer.User);
        Assert.Equal(2, noPin);
        Assert.Contains("--server-fingerprint", noPinErr);
        var (wrong, _, _) = await a.IsrWithPasswordAsync("not the password", "login", "--server", server.Url, "--user", TestServer.User, "--server-fingerprint", server.Fingerprint);
        Assert.Equal(3, wrong);
        Assert.Null(new SiteDirectory(a.Home).Login);
        await a.LoginAsync(server);
        await b.LoginAsync(server);

        // Site A: create (encrypted here, only ciphertext uploaded), boot, work, suspend, check in.
        var consoleA = await CycleSteps.CreateAndBootAsync(a);

        // Site B cannot take the parcel while A holds the lock, and is told who holds it.
        var (locked, _, lockedErr) = await b.IsrAsync("resume", "box", "--headless");
        Assert.Equal(5, locked);
        Assert.Contains("site-a", lockedErr);

        var before = await CycleSteps.SuspendAndCheckInAsync(a, consoleA, 2);

        // Site B: continues exactly where A stopped; a sync checkpoints while the VM keeps running.
        var consoleB = await CycleSteps.ResumeWhereItStoppedAsync(b, before);
        var synced = await b.IsrJsonAsync("sync", "box");
        Assert.Equal(3, synced.GetProperty("committed").GetProperty("version").GetInt64());
        int ticksAtSync = SerialConsole.Ticks(consoleB).Count;
        await SerialConsole.WaitForTicksAsync(consoleB, ticksAtSync + 2, GuestTimeout); // still running after the sync
        await b.IsrJsonAsync("suspend", "box");
        var lastB = SerialConsole.Ticks(consoleB)[^1];
        Assert.Equal(4, (await b.IsrJsonAsync("checkin", "box")).GetProperty("version").GetInt64());

        // Every write from both sites is in the newest version, read back through the server.
        var login = new SiteDirectory(b.Home).Login!;
        using (var home = new ServerParcelHome(login))
        {
            await CycleSteps.AssertNewestHoldsAsync(home, Path.Combine(b.Root, "inspect"), before, lastB);

            // Zero knowledge: no plaintext and no key anywhere in the server's data or the sites' state.
            var secrets = await home.UnlockAsync(TestSite.Password, default);
            var parcel = await OpenedParcel.OpenAsync(home, secrets, "box", default);
            var passwordKeys = PasswordKdf.Derive(TestSite.Password, login.Kdf);
            foreach (var root in new[] { server.DataDirectory, a.Home, b.Home })
            {
                Assert.Empty(ParcelInspector.FilesContaining(root, TestEnvironment.Canary));
                Assert.Empty(ParcelInspector.FilesContaining(root, TestSite.Password));
                foreach (var key in new[] { secrets.DomainSecret, parcel.Keys.Master, parcel.Keys.PageKey, passwordKeys.KeyEncryptionKey, passwordKeys.AuthSecret })
                    Assert.Empty(ParcelInspector.FilesContaining(root, key));
            }
        }

        // A lost site's lock is broken by the owner; its later check-in is kept as a side version, never lost.
        var consoleA2 = Path.Combine(a.Root, "console-a2.log");
        await a.IsrJsonAsync("resume", "box", "--headless", "--serial", consoleA2);
        await SerialConsole.WaitForTicksAsync(consoleA2, 2, GuestTimeout);
        await b.IsrOkAsync("lock", "box", "--break");
        await a.IsrJsonAsync("suspend", "box");
        var side = await a.IsrJsonAsync("checkin", "box");
        Assert.True(side.GetProperty("side").GetBoolean());
        var listing = await b.IsrJsonAsync("ls", "-l");
        var versions = listing[0].GetProperty("versions").EnumerateArray().ToList();
        Assert.Equal(4, listing[0].GetProperty("head").GetInt64());
        Assert.Contains(versions, v => v.GetProperty("side").GetBoolean() && v.GetProperty("number").GetInt64() == side.GetProperty("version").GetInt64());

        // Rollback makes an old version's content the new head.
        var rolled = await b.IsrJsonAsync("rollback", "box", "2");
        Assert.Equal(2, rolled.GetProperty("restored").GetInt64());
        var history = await b.IsrJsonAsync("ls", "-l");
        Assert.Equal(rolled.GetProperty("version").GetInt64(), history[0].GetProperty("head").GetInt64());
    }
}
