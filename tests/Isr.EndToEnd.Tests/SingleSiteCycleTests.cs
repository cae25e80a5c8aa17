namespace Isr.EndToEnd.Tests;

/// <summary>
/// The single-site slice with real QEMU, our NBD server and the real CLI: create from a bootable image → resume (boot)
/// → suspend → resume (continue) → suspend. The guest's RAM-only seed and counter prove a resume continued rather than
/// rebooted; the disk, decrypted offline, proves every write arrived; the canary proves nothing rests in plaintext.
/// </summary>
public sealed class SingleSiteCycleTests
{
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Resume_after_suspend_continues_the_guest_with_every_disk_write()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        TestEnvironment.RequireProgram("qemu-img");
        await using var site = new TestSite();
        var created = await site.IsrJsonAsync("create", "box", "--from", TestEnvironment.GuestImage("disk.qcow2"), "--store", site.Store, "--memory", "256M");
        Assert.Equal(1, created.GetProperty("version").GetInt64());

        var firstConsole = Path.Combine(site.Root, "console-1.log");
        var boot = await site.IsrJsonAsync("resume", "box", "--store", site.Store, "--headless", "--serial", firstConsole);
        Assert.True(boot.GetProperty("coldBoot").GetBoolean());
        await SerialConsole.WaitForTicksAsync(firstConsole, 3, GuestTimeout);
        var suspended = await site.IsrJsonAsync("suspend", "box");
        Assert.Equal(2, suspended.GetProperty("committed").GetProperty("version").GetInt64()); // a store home commits at suspend
        Assert.True(suspended.GetProperty("memoryImageBytes").GetInt64() > 1 << 20);
        long firstImageNewBytes = suspended.GetProperty("memoryImageNewBytes").GetInt64();
        var before = SerialConsole.Ticks(firstConsole)[^1];

        var secondConsole = Path.Combine(site.Root, "console-2.log");
        var resumed = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", secondConsole);
        Assert.False(resumed.GetProperty("coldBoot").GetBoolean());
        var after = (await SerialConsole.WaitForTicksAsync(secondConsole, 3, GuestTimeout))[0];
        Assert.Equal(before.Seed, after.Seed);           // same RAM: not a reboot
        Assert.Equal(before.Boot, after.Boot);           // the disk's boot count did not move
        Assert.InRange(after.Counter, before.Counter + 1, before.Counter + 2); // the counter went on from where it stopped
        var second = await site.IsrJsonAsync("suspend", "box");
        Assert.Equal(3, second.GetProperty("committed").GetProperty("version").GetInt64());
        var last = SerialConsole.Ticks(secondConsole)[^1];
        // Content-defined chunks: a second suspend of the same guest stores a small fraction of the first.
        Assert.True(second.GetProperty("memoryImageNewBytes").GetInt64() * 4 < firstImageNewBytes,
            $"second suspend stored {second.GetProperty("memoryImageNewBytes")} new bytes vs {firstImageNewBytes} for the first");

        // Every tick the guest wrote (and synced) before the suspend is on the stored disk.
        var image = await ParcelInspector.ExportDiskAsync(site.Store, "box", TestSite.Password, site.Root);
        var ticks = await ParcelInspector.ReadGuestFileAsync(image, "/ticks");
        Assert.Contains($"counter={before.Counter} seed={before.Seed} boot={before.Boot}", ticks);
        Assert.Contains($"counter={last.Counter} seed={last.Seed} boot={last.Boot}", ticks);
        Assert.Equal("1", (await ParcelInspector.ReadGuestFileAsync(image, "/bootcount")).Trim());

        // The canary the guest wrote is in the decrypted disk, and in plaintext nowhere in the store or the site.
        Assert.NotEmpty(ParcelInspector.FilesContaining(Path.GetDirectoryName(image)!, TestEnvironment.Canary));
        File.Delete(image);
        Assert.Empty(ParcelInspector.FilesContaining(site.Store, TestEnvironment.Canary));
        Assert.Empty(ParcelInspector.FilesContaining(site.Home, TestEnvironment.Canary));

        // The listing and stat show the history and the measured resume.
        var stat = await site.IsrJsonAsync("stat", "box");
        Assert.Equal(3, stat.GetProperty("headVersion").GetInt64());
        Assert.True(stat.GetProperty("lastResumeSeconds").GetDouble() > 0);
        var ls = await site.IsrJsonAsync("ls", "-l");
        Assert.Equal(3, ls[0].GetProperty("versions").GetArrayLength());
    }

    [Fact]
    public async Task Wrong_password_is_refused_with_its_own_exit_code_and_starts_nothing()
    {
        await using var site = new TestSite();
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        var (code, _, stderr) = await site.IsrWithPasswordAsync("not the password", "resume", "box", "--store", site.Store, "--headless");
        Assert.Equal(3, code);
        Assert.Contains("wrong password", stderr);
        Assert.False(File.Exists(Path.Combine(site.Home, "parcels", "box", "dirty.journal")));
    }

    /// <summary>Unix socket paths have at most 107 bytes: a 64-character parcel name under a deep ISR_HOME once made
    /// run/NAME/nbd.sock too long to bind, and the resume failed.</summary>
    [Fact]
    public async Task A_long_parcel_name_under_a_deep_ISR_HOME_resumes_and_suspends()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite(home: "a/site/state/directory/deeper/than/most");
        var name = new string('p', 64);
        await site.IsrOkAsync("create", name, "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        var console = Path.Combine(site.Root, "console.log");
        await site.IsrJsonAsync("resume", name, "--headless", "--serial", console);
        await SerialConsole.WaitForTicksAsync(console, 2, GuestTimeout);
        var suspended = await site.IsrJsonAsync("suspend", name);
        Assert.Equal(2, suspended.GetProperty("committed").GetProperty("version").GetInt64());
    }

    [Fact]
    public async Task Discard_drops_changes_made_since_the_last_version()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite();
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        var console = Path.Combine(site.Root, "console.log");
        var session = await site.IsrJsonAsync("resume", "box", "--headless", "--serial", console);
        await SerialConsole.WaitForTicksAsync(console, 2, GuestTimeout);
        var (code, _, stderr) = await site.IsrAsync("discard", "box");
        Assert.NotEqual(0, code);                         // refused while the VM runs
        Assert.Contains("suspend it first", stderr);
        await site.IsrOkAsync("suspend", "box");
        var discarded = await site.IsrJsonAsync("discard", "box");
        Assert.False(discarded.GetProperty("discarded").GetBoolean()); // suspend committed everything: nothing local left
    }
}
