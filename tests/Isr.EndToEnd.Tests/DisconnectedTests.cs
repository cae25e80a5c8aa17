using Isr.Client.Homes;
using Isr.Client.Site;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// Disconnected operation (seed 002): with the parcel hoarded and its lock held, the server is stopped; the site
/// resumes, works and suspends twice, saying plainly that it is disconnected; after the server is back one check-in
/// sends it all, and the history is the connected history plus that one version.
/// </summary>
public sealed class DisconnectedTests
{
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Hoarded_parcel_resumes_and_suspends_with_the_server_down_and_checks_in_after()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        await a.LoginAsync(server);
        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage("disk.qcow2"));
        var console0 = Path.Combine(a.Root, "console-0.log");
        await a.IsrJsonAsync("resume", "box", "--headless", "--serial", console0);
        await SerialConsole.WaitForTicksAsync(console0, 3, GuestTimeout);
        await a.IsrJsonAsync("suspend", "box"); // kept at the site, the lock still held
        var last = SerialConsole.Ticks(console0)[^1];
        await a.IsrJsonAsync("hoard", "box");

        await server.StopAsync();
        for (int round = 1; round <= 2; round++)
        {
            var console = Path.Combine(a.Root, $"console-{round}.log");
            var (code, _, stderr) = await a.IsrAsync("resume", "box", "--headless", "--serial", console);
            Assert.True(code == 0, $"disconnected resume {round} exited {code}: {stderr}\n{a.DaemonLog()}");
            Assert.Contains("disconnected", stderr);
            var first = (await SerialConsole.WaitForTicksAsync(console, 3, GuestTimeout))[0];
            Assert.Equal((last.Seed, last.Boot), (first.Seed, first.Boot));
            Assert.InRange(first.Counter, last.Counter + 1, last.Counter + 2);
            var suspended = await a.IsrJsonAsync("suspend", "box");
            Assert.False(suspended.TryGetProperty("committed", out _));
            last = SerialConsole.Ticks(console)[^1];
        }
        // The suspended version, not checked in, onto a dongle with the server down: all from this site.
        var dongle = Path.Combine(a.Root, "dongle");
        var written = await a.IsrJsonAsync("dongle", "write", "box", dongle);
        Assert.True(written.GetProperty("written").GetInt32() > 10, written.ToString());
        var (offline, _, offlineErr) = await a.IsrAsync("checkin", "box");
        Assert.Equal(8, offline); // the server cannot be reached: nothing is lost, the version waits
        Assert.Contains("reach", offlineErr);

        await server.RestartAsync();
        var checkin = await a.IsrJsonAsync("checkin", "box");
        Assert.Equal(2, checkin.GetProperty("version").GetInt64());
        Assert.True(checkin.GetProperty("lockReleased").GetBoolean());
        var history = await a.IsrJsonAsync("ls", "-l");
        Assert.Equal(2, history[0].GetProperty("head").GetInt64());
        Assert.Equal(2, history[0].GetProperty("versions").GetArrayLength());

        // The committed version holds what the guest wrote in the last disconnected session.
        using var home = new ServerParcelHome(new SiteDirectory(a.Home).Login!);
        // The dongle written disconnected holds what a resume of it needs first: its memory image and pages.
        var committed = (await home.ListVersionsAsync("box", default)).Single(v => v.Number == 2);
        var needed = await new Isr.Client.Transfer.Hoarder(new SiteDirectory(a.Home).Cache, home.Chunks).ListAsync(committed, default);
        var onDongle = Isr.Client.Lookaside.Dongle.Open(dongle).ReadIndex();
        Assert.True(needed.MemoryChunks.Count > 10);
        Assert.All(needed.MemoryChunks.Concat(needed.Pages).Where(t => !t.IsZeroChunk), t => Assert.Contains(t, onDongle));
        var image = await ParcelInspector.ExportDiskAsync(home, "box", TestSite.Password, Path.Combine(a.Root, "inspect"));
        Assert.Contains($"counter={last.Counter} seed={last.Seed}", await ParcelInspector.ReadGuestFileAsync(image, "/ticks"));
        File.Delete(image);
    }
}
