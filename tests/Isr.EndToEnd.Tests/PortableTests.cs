using System.Text.Json;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Format;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// Portable mode (SoulPad): a parcel whose home is a store directory on a device, used with no server at all; then
/// backed up to a server and restored onto a fresh directory that another site resumes from. A wrong password opens
/// nothing, and nothing readable of the user rests outside the device.
/// </summary>
public sealed class PortableTests
{
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Store_round_trip_without_a_server_then_backup_and_restore_onto_a_fresh_directory()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        string device = a.Store;

        // No server anywhere: create, boot, suspend, continue, suspend — all on the device.
        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage("disk.qcow2"), "--store", device);
        var console1 = Path.Combine(a.Root, "console-1.log");
        await a.IsrJsonAsync("resume", "box", "--store", device, "--headless", "--serial", console1);
        await SerialConsole.WaitForTicksAsync(console1, 3, GuestTimeout);
        await a.IsrJsonAsync("suspend", "box");
        var before = SerialConsole.Ticks(console1)[^1];
        var (wrong, _, wrongErr) = await a.IsrWithPasswordAsync("not the password", "resume", "box", "--store", device, "--headless");
        Assert.Equal(3, wrong);
        Assert.Contains("wrong password", wrongErr);
        var console2 = Path.Combine(a.Root, "console-2.log");
        await a.IsrJsonAsync("resume", "box", "--store", device, "--headless", "--serial", console2);
        var continued = (await SerialConsole.WaitForTicksAsync(console2, 3, GuestTimeout))[0];
        Assert.Equal((before.Seed, before.Boot), (continued.Seed, continued.Boot));
        Assert.InRange(continued.Counter, before.Counter + 1, before.Counter + 2);
        Assert.Equal(3, (await a.IsrJsonAsync("suspend", "box")).GetProperty("committed").GetProperty("version").GetInt64());
        var last = SerialConsole.Ticks(console2)[^1];

        // Outside the device, the site holds nothing readable: no plaintext, no password, no key.
        var store = new DirectoryParcelHome(device);
        var secrets = await store.UnlockAsync(TestSite.Password, default);
        var parcel = await OpenedParcel.OpenAsync(store, secrets, "box", default);
        Assert.Empty(ParcelInspector.FilesContaining(a.Home, TestEnvironment.Canary));
        Assert.Empty(ParcelInspector.FilesContaining(a.Home, TestSite.Password));
        foreach (var key in new[] { secrets.DomainSecret, parcel.Keys.Master, parcel.Keys.PageKey, parcel.Keys.MetadataKey })
            Assert.Empty(ParcelInspector.FilesContaining(a.Home, key));

        // Backup to a server (the empty account takes the store's keys), incrementally.
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        await a.LoginAsync(server);
        var backup = await a.IsrJsonAsync("backup", "box", "--store", device);
        Assert.Equal(3, backup.GetProperty("versionsCopied").GetInt32());
        Assert.True(backup.GetProperty("blobsCopied").GetInt32() > 100);
        var again = await a.IsrJsonAsync("backup", "box", "--store", device);
        Assert.Equal((0, 0), (again.GetProperty("versionsCopied").GetInt32(), again.GetProperty("blobsCopied").GetInt32()));

        // The device is lost: restore onto a fresh directory at another site, which continues the guest.
        await b.LoginAsync(server);
        string replacement = Path.Combine(b.Root, "new-device");
        var restored = await b.IsrJsonAsync("restore", "box", "--store", replacement);
        Assert.Equal(3, restored.GetProperty("versionsCopied").GetInt32());
        var (wrongB, _, _) = await b.IsrWithPasswordAsync("not the password", "resume", "box", "--store", replacement, "--headless");
        Assert.Equal(3, wrongB);
        var console3 = Path.Combine(b.Root, "console-3.log");
        await b.IsrJsonAsync("resume", "box", "--store", replacement, "--headless", "--serial", console3);
        var atB = (await SerialConsole.WaitForTicksAsync(console3, 2, GuestTimeout))[0];
        Assert.Equal((last.Seed, last.Boot), (atB.Seed, atB.Boot));
        Assert.InRange(atB.Counter, last.Counter + 1, last.Counter + 2);
        Assert.Equal(4, (await b.IsrJsonAsync("suspend", "box")).GetProperty("committed").GetProperty("version").GetInt64());
        var history = await b.IsrJsonAsync("ls", "-l", "--store", replacement);
        Assert.Equal(4, history[0].GetProperty("versions").GetArrayLength());
    }

    /// <summary>An empty account that takes a store's keys at backup gets a new recovery key for them: the server's
    /// recovery copy opens, with it, the adopted secrets (the old copy wrapped the account's first keys).</summary>
    [Fact]
    public async Task Backup_into_an_empty_account_rewraps_the_recovery_copy_for_the_adopted_keys()
    {
        await using var a = new TestSite("site-a");
        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage("disk.qcow2"), "--store", a.Store);
        var storeSecrets = await new DirectoryParcelHome(a.Store).UnlockAsync(TestSite.Password, default);
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        await a.LoginAsync(server);

        var backup = await a.IsrJsonAsync("backup", "box", "--store", a.Store);
        var recoveryKey = Convert.FromHexString(backup.GetProperty("recoveryKey").GetString()!.Replace("-", ""));
        Assert.False((await a.IsrJsonAsync("backup", "box", "--store", a.Store)).TryGetProperty("recoveryKey", out _)); // adopted once

        var login = new SiteDirectory(a.Home).Login!;
        using var connection = new ServerConnection(login.Server, login.Fingerprint, login.Token);
        var recovery = await connection.SendJsonAsync(HttpMethod.Get, "api/v1/account/recovery", Isr.Client.Daemon.DaemonJsonContext.Default.JsonElement, default);
        var recovered = UserSecrets.Unwrap(recoveryKey, recovery.GetProperty("wrappedSecrets").GetBytesFromBase64());
        Assert.Equal(storeSecrets.DomainSecret, recovered.DomainSecret);
    }
}
