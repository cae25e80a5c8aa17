using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Isr.Vmm.Tests;

/// <summary>
/// The guest's screen with real QEMU: a window on a private X server (Xvfb, checked by screenshot) and VNC on
/// loopback or a unix socket (checked with QMP query-vnc and the RFB greeting). Missing tools fail the test with the
/// package to install; nothing is skipped.
/// </summary>
[Collection(QemuCollection.Name)]
public class DisplayTests(ITestOutputHelper output)
{
    private static readonly TimeSpan TestLimit = TimeSpan.FromSeconds(150);

    /// <summary>Screenshots are kept (a few KB each) so a failure can be looked at.</summary>
    private string ScreenshotDirectory(string test)
    {
        var dir = Path.Combine(Path.GetTempPath(), "isr-display-tests", $"{test}-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Guid.NewGuid():N}"[..(test.Length + 25)]);
        Directory.CreateDirectory(dir);
        output.WriteLine($"screenshots: {dir}");
        return dir;
    }

    private static void RequireBackend(SiteCapabilities caps, string backend)
    {
        if (!caps.DisplayBackends.Contains(backend))
            throw new Xunit.Sdk.XunitException(
                $"QEMU's '{backend}' display is not installed (it has: {string.Join(", ", caps.DisplayBackends)}): " +
                "install the Debian package qemu-system-gui (scripts/install-deps.sh does).");
    }

    [Theory]
    [InlineData("gtk")]
    [InlineData("sdl")]
    public async Task Window_shows_the_guest_screen_on_the_desktop(string backend)
    {
        RequireBackend(await QemuTestEnvironment.RequireQemu().GetCapabilitiesAsync(), backend);
        var shots = ScreenshotDirectory($"window-{backend}");
        using var limit = new CancellationTokenSource(TestLimit);
        using var x = await XvfbServer.StartAsync(shots, TestLimit, limit.Token);
        // Declared after the X server so it is disposed first: QEMU is killed before its display goes away.
        await using var env = new QemuTestEnvironment(TestLimit);
        output.WriteLine($"Xvfb on {x.Display}");

        // Before QEMU: the empty root window is one colour, so the check below can fail.
        var before = await x.ScreenshotAsync(Path.Combine(shots, "before.png"), env.Token);
        var background = Assert.Single(before.Histogram()).Rgb;

        var descriptor = await env.DescriptorAsync(withDisk: false);
        var vm = await env.StartAsync(descriptor, env.SiteOptions() with
        {
            Display = QemuDisplayMode.Window,
            WindowBackend = backend,
            IgnoreWindowClose = true,
            Title = "isr display test",
            WindowEnvironment = new Dictionary<string, string> { ["DISPLAY"] = x.Display },
        }, incoming: false);
        Assert.Null(vm.Vnc);

        // QEMU opens its window and SeaBIOS writes to the VGA screen within seconds under TCG; poll rather than guess
        // how many. Until the guest sets a video mode QEMU shows its own 640x480 placeholder ("Guest has not
        // initialized the display"), so the test waits for the guest's 80x25 text screen (720x400) and looks for it,
        // pixel for pixel, on the desktop.
        RgbImage after, guest;
        (int X, int Y)? found = null;
        var watch = Stopwatch.StartNew();
        var shot = 0;
        while (true)
        {
            Assert.False(vm.HasExited, $"QEMU exited with its window open: {vm.OutputTail}");
            var dump = Path.Combine(shots, $"guest-{shot}.ppm");
            await vm.Qmp.ExecuteAsync("screendump", new JsonObject { ["filename"] = dump }, env.Token);
            guest = RgbImage.ParsePpm(await File.ReadAllBytesAsync(dump, env.Token));
            guest.SavePng(Path.ChangeExtension(dump, ".png"));
            File.Delete(dump);
            after = await x.ScreenshotAsync(Path.Combine(shots, $"desktop-{shot++}.png"), env.Token);
            if (guest is { Width: 720, Height: 400 } && guest.Histogram().Count > 1)
                found = after.Find(guest);
            if (found is not null || watch.Elapsed > TimeSpan.FromSeconds(40))
                break;
            await Task.Delay(500, env.Token);
        }
        var histogram = after.Histogram();
        output.WriteLine($"after {watch.Elapsed.TotalSeconds:F1} s ({shot} screenshots): guest screen {guest.Width}x{guest.Height} " +
                         $"found at {found?.ToString() ?? "nowhere"}; desktop has {histogram.Count} colours, " +
                         $"{after.PixelsOtherThan(background)} pixels other than the background; QEMU said: {vm.OutputTail}");
        Assert.True(histogram.Count > 1, $"The screen is still one colour after QEMU started (see {shots}).");
        Assert.True(after.PixelsOtherThan(background) > 1000, $"QEMU's window painted almost nothing (see {shots}).");
        Assert.Equal((720, 400), (guest.Width, guest.Height)); // SeaBIOS's text mode, not QEMU's placeholder
        Assert.True(found is not null, $"The guest's screen (QMP screendump) is not on the desktop pixel for pixel (see {shots}).");
        Assert.Equal("running", await vm.QueryStatusAsync(env.Token));
        Assert.Equal(0, await vm.QuitAsync());
    }

    [Fact]
    public async Task Vnc_on_loopback_takes_a_free_port_reports_it_and_speaks_rfb()
    {
        await using var env = new QemuTestEnvironment(TestLimit);
        var descriptor = await env.DescriptorAsync(withDisk: false);
        var site = env.SiteOptions() with { Display = QemuDisplayMode.Vnc };
        var first = await env.StartAsync(descriptor, site, incoming: false);
        // A second server at the same time must find another port by itself.
        var second = await env.StartAsync(descriptor, env.SiteOptions() with { Display = QemuDisplayMode.Vnc }, incoming: false);

        foreach (var vm in (QemuVm[])[first, second])
        {
            var reply = await vm.Qmp.ExecuteAsync("query-vnc", null, env.Token);
            output.WriteLine($"query-vnc: {reply}");
            Assert.True(reply.GetProperty("enabled").GetBoolean());
            Assert.Equal("127.0.0.1", reply.GetProperty("host").GetString());
            Assert.Equal("ipv4", reply.GetProperty("family").GetString());

            var vnc = Assert.IsType<VncEndpoint>(vm.Vnc);
            Assert.Equal(vnc, await vm.QueryVncAsync(env.Token));
            Assert.Equal(reply.GetProperty("service").GetString(), vnc.Service);
            Assert.InRange(vnc.Port!.Value, 5900, 5999);
            Assert.Equal($"127.0.0.1:{vnc.Port}", vnc.ToString());

            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, vnc.Port.Value), env.Token);
            Assert.Equal("RFB 003.008\n", await ReadBannerAsync(socket, env.Token));
        }
        Assert.NotEqual(first.Vnc!.Port, second.Vnc!.Port);
        Assert.Equal(0, await first.QuitAsync());
        Assert.Equal(0, await second.QuitAsync());
    }

    [Fact]
    public async Task Vnc_on_a_unix_socket_reports_its_path_and_speaks_rfb()
    {
        await using var env = new QemuTestEnvironment(TestLimit);
        var descriptor = await env.DescriptorAsync(withDisk: false);
        var path = Path.Combine(env.Directory, "vnc.sock");
        var vm = await env.StartAsync(descriptor, env.SiteOptions() with { Display = QemuDisplayMode.Vnc, VncSocketPath = path }, incoming: false);

        var reply = await vm.Qmp.ExecuteAsync("query-vnc", null, env.Token);
        output.WriteLine($"query-vnc: {reply}");
        Assert.True(reply.GetProperty("enabled").GetBoolean());
        Assert.Equal("unix", reply.GetProperty("family").GetString());
        Assert.Equal(path, reply.GetProperty("service").GetString());
        Assert.Equal(new VncEndpoint("unix", "", path), vm.Vnc);
        Assert.Equal(path, vm.Vnc!.SocketPath);
        // Only this user can reach it: the socket's directory is private.
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(env.Directory));

        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), env.Token);
        Assert.Equal("RFB 003.008\n", await ReadBannerAsync(socket, env.Token));
        Assert.Equal(0, await vm.QuitAsync());
    }

    [Fact]
    public async Task Headless_has_no_vnc_server()
    {
        await using var env = new QemuTestEnvironment(TestLimit);
        var vm = await env.StartAsync(await env.DescriptorAsync(withDisk: false), env.SiteOptions(), incoming: false);

        Assert.Null(vm.Vnc);
        Assert.Null(await vm.QueryVncAsync(env.Token));
        Assert.Equal(0, await vm.QuitAsync());
    }

    [Fact]
    public async Task Window_without_a_desktop_or_gui_module_fails_saying_what_is_missing()
    {
        await using var env = new QemuTestEnvironment(TestLimit);
        var descriptor = await env.DescriptorAsync(withDisk: false);
        var noDesktop = new Dictionary<string, string> { ["DISPLAY"] = "", ["WAYLAND_DISPLAY"] = "" };

        var e = await Assert.ThrowsAsync<QemuVmException>(() => env.StartAsync(descriptor,
            env.SiteOptions() with { Display = QemuDisplayMode.Window, WindowEnvironment = noDesktop }, incoming: false));
        Assert.Contains("DISPLAY", e.Message);

        e = await Assert.ThrowsAsync<QemuVmException>(() => env.StartAsync(descriptor,
            env.SiteOptions() with { Display = QemuDisplayMode.Window, WindowBackend = "nosuchui" }, incoming: false));
        Assert.Contains("qemu-system-gui", e.Message);
    }

    /// <summary>
    /// What the guest sees does not depend on how this site shows it: the device tree and PCI layout are identical,
    /// and a VM saved while shown in a window resumes behind VNC and headless.
    /// </summary>
    [Fact]
    public async Task Window_vnc_and_headless_give_the_same_guest_and_state_moves_between_them()
    {
        RequireBackend(await QemuTestEnvironment.RequireQemu().GetCapabilitiesAsync(), "gtk");
        var shots = ScreenshotDirectory("same-guest");
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(240));
        using var x = await XvfbServer.StartAsync(shots, TimeSpan.FromSeconds(240), limit.Token);
        await using var env = new QemuTestEnvironment(TimeSpan.FromSeconds(240)); // disposed (QEMU killed) before Xvfb
        var descriptor = await env.DescriptorAsync(withDisk: false);
        var window = env.SiteOptions() with
        {
            Display = QemuDisplayMode.Window,
            IgnoreWindowClose = true,
            WindowEnvironment = new Dictionary<string, string> { ["DISPLAY"] = x.Display },
        };
        var vnc = env.SiteOptions() with { Display = QemuDisplayMode.Vnc };
        var headless = env.SiteOptions();

        var trees = new Dictionary<QemuDisplayMode, string>();
        foreach (var site in (QemuSiteOptions[])[headless, vnc, window])
        {
            // Compared before the firmware runs (paused, waiting for state): the tree also shows what the firmware
            // programs (MCFG, BARs), which depends on how far it got.
            var vm = await env.StartAsync(descriptor, site, incoming: true);
            trees[site.Display] = await MonitorAsync(vm, "info qtree", env.Token) + await MonitorAsync(vm, "info pci", env.Token);
            Assert.Equal(0, await vm.QuitAsync());
        }
        Assert.Contains("VGA", trees[QemuDisplayMode.Headless]);
        Assert.Equal(trees[QemuDisplayMode.Headless], trees[QemuDisplayMode.Vnc]);
        Assert.Equal(trees[QemuDisplayMode.Headless], trees[QemuDisplayMode.Window]);

        // Saved from the window, resumed behind VNC, saved again and resumed headless.
        var source = await env.StartAsync(descriptor, window, incoming: false);
        await Task.Delay(2000, env.Token); // let SeaBIOS draw, so the state includes a used VGA
        var state = await SaveAsync(source, env.Token);
        foreach (var site in (QemuSiteOptions[])[vnc, headless])
        {
            var target = await env.StartAsync(descriptor, site, incoming: true);
            await target.LoadStateAsync((s, ct) => s.WriteAsync(state, ct).AsTask(), env.Token);
            await target.ContinueAsync(env.Token);
            Assert.Equal("running", await target.QueryStatusAsync(env.Token));
            state = await SaveAsync(target, env.Token);
        }
    }

    private static async Task<byte[]> SaveAsync(QemuVm vm, CancellationToken ct)
    {
        var saved = new MemoryStream();
        await vm.SaveStateAsync((s, token) => s.CopyToAsync(saved, token), ct);
        Assert.Equal(0, await vm.QuitAsync());
        return saved.ToArray();
    }

    private static async Task<string> MonitorAsync(QemuVm vm, string command, CancellationToken ct) =>
        (await vm.Qmp.ExecuteAsync("human-monitor-command", new JsonObject { ["command-line"] = command }, ct)).GetString()!;

    /// <summary>An RFB server speaks first: 12 bytes, "RFB 003.008\n" for the protocol version QEMU offers.</summary>
    private static async Task<string> ReadBannerAsync(Socket socket, CancellationToken ct)
    {
        var buffer = new byte[12];
        var read = 0;
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(TimeSpan.FromSeconds(10));
        while (read < buffer.Length)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, limit.Token);
            if (n == 0)
                break;
            read += n;
        }
        return Encoding.ASCII.GetString(buffer, 0, read);
    }
}
