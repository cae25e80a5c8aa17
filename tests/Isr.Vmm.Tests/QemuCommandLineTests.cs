namespace Isr.Vmm.Tests;

public class QemuCommandLineTests
{
    private static QemuSiteOptions Site(string qmp = "/tmp/x/qmp.sock") => new()
    {
        QmpSocketPath = qmp,
        Disk = new QemuDiskBackend.Nbd("/run/isr/nbd.sock", "parcel"),
    };

    private static string After(IReadOnlyList<string> args, string flag) => args[IndexOf(args, flag) + 1];

    private static int IndexOf(IReadOnlyList<string> args, string flag)
    {
        for (var i = 0; i < args.Count; i++)
            if (args[i] == flag)
                return i;
        throw new Xunit.Sdk.XunitException($"{flag} missing from: {string.Join(' ', args)}");
    }

    private static List<string> Values(IReadOnlyList<string> args, string flag) =>
        Enumerable.Range(0, args.Count - 1).Where(i => args[i] == flag).Select(i => args[i + 1]).ToList();

    // Everything that shapes the guest-visible machine and therefore the migration stream.
    private static List<string> GuestVisible(IReadOnlyList<string> args)
    {
        string[] flags = ["-machine", "-cpu", "-m", "-smp", "-device"];
        return Enumerable.Range(0, args.Count - 1).Where(i => flags.Contains(args[i])).Select(i => args[i] + " " + args[i + 1]).ToList();
    }

    [Fact]
    public void Derives_machine_cpu_memory_and_topology_from_descriptor()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site(), incoming: false);

        Assert.Contains("-nodefaults", args);
        Assert.Contains("-no-user-config", args);
        Assert.Equal("pc-q35-7.2,accel=tcg", After(args, "-machine"));
        Assert.Equal("qemu64", After(args, "-cpu"));
        Assert.Equal("256M", After(args, "-m"));
        Assert.Equal("2,sockets=1,cores=2,threads=1", After(args, "-smp"));
        Assert.DoesNotContain("-incoming", args);
        Assert.DoesNotContain("-S", args);
    }

    [Fact]
    public void Every_pci_device_gets_its_fixed_address_in_descriptor_order()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site(), incoming: false);

        Assert.Equal(
        [
            "VGA,id=video0,addr=0x2",
            "virtio-net-pci,id=net0,netdev=net0,addr=0x3,mac=52:54:00:12:34:56,romfile=",
            "virtio-blk-pci,id=disk0,drive=disk0,addr=0x4,rerror=stop,werror=stop",
            "isa-serial,id=serial0,chardev=serial0,index=0",
        ], Values(args, "-device"));
        Assert.Equal(["user,id=net0"], Values(args, "-netdev"));
    }

    [Fact]
    public void Disk_is_our_nbd_server_on_a_unix_socket()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site(), incoming: false);

        Assert.Equal(["driver=nbd,node-name=disk0,server.type=unix,server.path=/run/isr/nbd.sock,export=parcel"], Values(args, "-blockdev"));
    }

    [Fact]
    public void Report_policy_passes_disk_errors_to_the_guest()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site() with { DiskErrorPolicy = DiskErrorPolicy.Report }, incoming: false);

        Assert.Contains("virtio-blk-pci,id=disk0,drive=disk0,addr=0x4,rerror=report,werror=report", Values(args, "-device"));
    }

    [Fact]
    public void Incoming_waits_paused_for_a_deferred_migration()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site(), incoming: true);

        Assert.Equal("defer", After(args, "-incoming"));
        Assert.Contains("-S", args);
    }

    [Fact]
    public void Site_options_never_change_guest_visible_arguments()
    {
        var d = TestDescriptors.Sample();
        var headless = QemuCommandLine.Build(d, Site("/tmp/a/qmp.sock"), incoming: false);
        var vnc = QemuCommandLine.Build(d, Site("/tmp/b/qmp.sock") with
        {
            Display = QemuDisplayMode.Vnc,
            VncSocketPath = "/tmp/b/vnc.sock",
            SerialLogPath = "/tmp/b/serial.log",
            Disk = new QemuDiskBackend.Null(1 << 30),
        }, incoming: true);
        var window = QemuCommandLine.Build(d, Site() with { Display = QemuDisplayMode.Window, WindowBackend = "sdl" }, incoming: false);

        Assert.Equal(GuestVisible(headless), GuestVisible(vnc));
        Assert.Equal(GuestVisible(headless), GuestVisible(window));
        // ...while the host-side parts did change.
        Assert.Equal("none", After(headless, "-display"));
        Assert.Equal("unix:/tmp/b/vnc.sock", After(vnc, "-vnc"));
        Assert.Equal("sdl", After(window, "-display"));
        Assert.Equal("null,id=serial0", After(headless, "-chardev"));
        Assert.Equal("file,id=serial0,path=/tmp/b/serial.log", After(vnc, "-chardev"));
        var piped = QemuCommandLine.Build(d, Site() with { SerialPipeBase = "/tmp/c,d/console" }, incoming: false);
        Assert.Equal(GuestVisible(headless), GuestVisible(piped));
        Assert.Equal("pipe,id=serial0,path=/tmp/c,,d/console", After(piped, "-chardev"));
    }

    [Fact]
    public void Guest_agent_port_is_named_for_qemu_guest_agent_and_its_socket_is_host_side_only()
    {
        var d = TestDescriptors.Sample() with { Devices = [.. TestDescriptors.Sample().Devices, new("agent0", VmDeviceKind.GuestAgent, "virtio-serial-pci", 0x5)] };
        var withSocket = QemuCommandLine.Build(d, Site() with { GuestAgentSocketPath = "/tmp/x/agent.sock" }, incoming: false);
        var without = QemuCommandLine.Build(d, Site(), incoming: false);

        Assert.Contains("virtio-serial-pci,id=agent0,addr=0x5", Values(withSocket, "-device"));
        Assert.Contains("virtserialport,id=agent0port,bus=agent0.0,nr=1,chardev=agent0,name=org.qemu.guest_agent.0", Values(withSocket, "-device"));
        Assert.Contains("socket,id=agent0,path=/tmp/x/agent.sock,server=on,wait=off", Values(withSocket, "-chardev"));
        Assert.Contains("null,id=agent0", Values(without, "-chardev"));
        Assert.Equal(GuestVisible(withSocket), GuestVisible(without));
        // A parcel created before the agent port keeps its device model.
        Assert.DoesNotContain(Values(QemuCommandLine.Build(TestDescriptors.Sample(), Site(), incoming: false), "-device"), a => a.Contains("virtserialport"));
    }

    [Fact]
    public void Vnc_without_socket_listens_on_loopback_only()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site() with { Display = QemuDisplayMode.Vnc, VncDisplayNumber = 7 }, incoming: false);

        Assert.Equal("127.0.0.1:7", After(args, "-vnc"));
    }

    [Fact]
    public void Commas_in_paths_are_escaped_for_qemu_option_syntax()
    {
        var args = QemuCommandLine.Build(TestDescriptors.Sample(), Site("/tmp/a,b/qmp.sock") with
        {
            Disk = new QemuDiskBackend.Nbd("/run/a,b/nbd.sock", "x,y"),
        }, incoming: false);

        Assert.Equal("unix:/tmp/a,,b/qmp.sock,server=on,wait=off", After(args, "-qmp"));
        Assert.Equal("driver=nbd,node-name=disk0,server.type=unix,server.path=/run/a,,b/nbd.sock,export=x,,y", After(args, "-blockdev"));
    }

    [Fact]
    public void Disk_device_without_backend_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            QemuCommandLine.Build(TestDescriptors.Sample(), Site() with { Disk = null }, incoming: false));
        Assert.Contains("disk", e.Message);
    }

    [Fact]
    public void Diskless_descriptor_has_no_blockdev()
    {
        var d = TestDescriptors.Sample() with { Devices = [.. TestDescriptors.Sample().Devices.Where(x => x.Kind != VmDeviceKind.Disk)] };
        var args = QemuCommandLine.Build(d, Site() with { Disk = null }, incoming: false);

        Assert.DoesNotContain("-blockdev", args);
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(d, Site(), incoming: false));
    }

    [Theory]
    [InlineData(256L * 1024 * 1024 + 1)]
    [InlineData(0L)]
    public void Memory_must_be_whole_mebibytes(long bytes)
    {
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(TestDescriptors.Sample(bytes), Site(), incoming: false));
    }

    [Fact]
    public void Duplicate_pci_slots_are_refused()
    {
        var d = TestDescriptors.Sample();
        d = d with { Devices = [.. d.Devices.Select(x => x.Kind == VmDeviceKind.Disk ? x with { PciSlot = 0x3 } : x)] };

        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(d, Site(), incoming: false));
    }

    [Fact]
    public void Relative_nbd_socket_path_is_refused()
    {
        Assert.Throws<ArgumentException>(() =>
            QemuCommandLine.Build(TestDescriptors.Sample(), Site() with { Disk = new QemuDiskBackend.Nbd("nbd.sock", "x") }, incoming: false));
    }

    [Fact]
    public void Overlong_socket_path_is_refused_up_front()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            QemuCommandLine.Build(TestDescriptors.Sample(), Site("/tmp/" + new string('x', 120) + "/qmp.sock"), incoming: false));
        Assert.Contains("107 bytes", e.Message);
    }
}
