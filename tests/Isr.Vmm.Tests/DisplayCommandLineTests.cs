using System.Text.Json;

namespace Isr.Vmm.Tests;

/// <summary>How the display options become QEMU arguments, without starting QEMU.</summary>
public class DisplayCommandLineTests
{
    private static QemuSiteOptions Site() => new()
    {
        QmpSocketPath = "/tmp/x/qmp.sock",
        Disk = new QemuDiskBackend.Nbd("/run/isr/nbd.sock", "parcel"),
    };

    private static List<string> Values(IReadOnlyList<string> args, string flag) =>
        Enumerable.Range(0, args.Count - 1).Where(i => args[i] == flag).Select(i => args[i + 1]).ToList();

    // Everything that shapes the guest-visible machine and therefore the migration stream.
    private static List<string> GuestVisible(IReadOnlyList<string> args)
    {
        string[] flags = ["-machine", "-cpu", "-m", "-smp", "-device", "-netdev", "-blockdev", "-chardev"];
        return Enumerable.Range(0, args.Count - 1).Where(i => flags.Contains(args[i])).Select(i => args[i] + " " + args[i + 1]).ToList();
    }

    [Fact]
    public void Vnc_without_socket_or_number_takes_the_first_free_loopback_port()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site() with { Display = QemuDisplayMode.Vnc }, incoming: false);

        Assert.Equal(["127.0.0.1:0,to=99"], Values(args, "-vnc"));
        Assert.Equal(["none"], Values(args, "-display"));
    }

    [Fact]
    public void Vnc_socket_path_is_escaped_and_wins_over_a_port()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(),
            Site() with { Display = QemuDisplayMode.Vnc, VncSocketPath = "/run/a,b/vnc.sock", VncDisplayNumber = 3 }, incoming: false);

        Assert.Equal(["unix:/run/a,,b/vnc.sock"], Values(args, "-vnc"));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(100)]
    public void Vnc_display_number_outside_0_to_99_is_refused(int number)
    {
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(TestDescriptors.Sample(),
            Site() with { Display = QemuDisplayMode.Vnc, VncDisplayNumber = number }, incoming: false));
    }

    [Theory]
    [InlineData("gtk", false, "gtk")]
    [InlineData("gtk", true, "gtk,window-close=off")]
    [InlineData("sdl", true, "sdl,window-close=off")]
    [InlineData("curses", true, "curses")] // window-close is only a gtk/sdl option
    public void Window_uses_the_backend_and_can_ignore_the_close_button(string backend, bool ignoreClose, string expected)
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(),
            Site() with { Display = QemuDisplayMode.Window, WindowBackend = backend, IgnoreWindowClose = ignoreClose }, incoming: false);

        Assert.Equal([expected], Values(args, "-display"));
        Assert.Empty(Values(args, "-vnc"));
    }

    [Fact]
    public void Window_backend_cannot_smuggle_options()
    {
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(TestDescriptors.Sample(),
            Site() with { Display = QemuDisplayMode.Window, WindowBackend = "gtk,gl=on" }, incoming: false));
    }

    [Fact]
    public void Title_becomes_the_escaped_guest_name()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site() with { Title = "isr: my,parcel" }, incoming: false);
        Assert.Equal(["guest=isr: my,,parcel"], Values(args, "-name"));

        Assert.Empty(Values(QemuCommandLine.Build(TestDescriptors.Sample(), Site(), incoming: false), "-name"));
    }

    [Fact]
    public void Every_display_choice_gives_the_same_guest_visible_machine()
    {
        var d = TestDescriptors.Sample();
        QemuSiteOptions[] sites =
        [
            Site(),
            Site() with { Display = QemuDisplayMode.Vnc },
            Site() with { Display = QemuDisplayMode.Vnc, VncDisplayNumber = 5 },
            Site() with { Display = QemuDisplayMode.Vnc, VncSocketPath = "/tmp/x/vnc.sock" },
            Site() with { Display = QemuDisplayMode.Window },
            Site() with
            {
                Display = QemuDisplayMode.Window, WindowBackend = "sdl", IgnoreWindowClose = true, Title = "parcel",
                WindowEnvironment = new Dictionary<string, string> { ["DISPLAY"] = ":5" },
            },
        ];
        var expected = GuestVisible(QemuCommandLine.Build(d, sites[0], incoming: false));
        Assert.Contains("-device VGA,id=video0,addr=0x2", expected); // the screen every display mode shows
        foreach (var site in sites)
            Assert.Equal(expected, GuestVisible(QemuCommandLine.Build(d, site, incoming: false)));
    }

    [Fact]
    public void Query_vnc_reply_for_loopback_tcp()
    {
        using var reply = JsonDocument.Parse(
            """{"enabled": true, "auth": "none", "family": "ipv4", "clients": [], "service": "5901", "host": "127.0.0.1"}""");
        var vnc = VncEndpoint.FromQueryVnc(reply.RootElement)!;

        Assert.False(vnc.IsUnixSocket);
        Assert.Equal("127.0.0.1", vnc.Host);
        Assert.Equal(5901, vnc.Port);
        Assert.Null(vnc.SocketPath);
        Assert.Equal("127.0.0.1:5901", vnc.ToString());
    }

    [Fact]
    public void Query_vnc_reply_for_a_unix_socket()
    {
        using var reply = JsonDocument.Parse(
            """{"enabled": true, "auth": "none", "family": "unix", "clients": [], "service": "/run/isr/vnc.sock", "host": ""}""");
        var vnc = VncEndpoint.FromQueryVnc(reply.RootElement)!;

        Assert.True(vnc.IsUnixSocket);
        Assert.Equal("/run/isr/vnc.sock", vnc.SocketPath);
        Assert.Null(vnc.Port);
        Assert.Equal("unix:/run/isr/vnc.sock", vnc.ToString());
    }

    [Fact]
    public void Query_vnc_reply_when_vnc_is_off()
    {
        using var reply = JsonDocument.Parse("""{"enabled": false}""");
        Assert.Null(VncEndpoint.FromQueryVnc(reply.RootElement));
    }
}
