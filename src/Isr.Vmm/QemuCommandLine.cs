using System.Globalization;

namespace Isr.Vmm;

/// <summary>
/// Derives QEMU's arguments from a descriptor (everything guest-visible) plus site options
/// (sockets, backends, display). Nothing is left to QEMU defaults that could differ between
/// sites: <c>-nodefaults</c>, explicit PCI addresses, explicit topology.
/// </summary>
public static class QemuCommandLine
{
    private const long MiB = 1024 * 1024;

    public static IReadOnlyList<string> Build(VmDescriptor descriptor, QemuSiteOptions site, bool incoming)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        ArgumentNullException.ThrowIfNull(site);
        if (descriptor.Vmm != "qemu")
            throw new ArgumentException($"Descriptor is for VMM '{descriptor.Vmm}', not qemu.", nameof(descriptor));
        if (descriptor.MemoryBytes <= 0 || descriptor.MemoryBytes % MiB != 0)
            throw new ArgumentException("Memory size must be a positive whole number of MiB.", nameof(descriptor));
        if (descriptor.CpuCount <= 0)
            throw new ArgumentException("CPU count must be positive.", nameof(descriptor));

        CheckSocketPath(site.QmpSocketPath, "QMP socket");
        if (site.Disk is QemuDiskBackend.Nbd nbdDisk)
            CheckSocketPath(nbdDisk.SocketPath, "NBD socket");
        if (site.VncSocketPath is { } vncSocket)
            CheckSocketPath(vncSocket, "VNC socket");
        if (site.GuestAgentSocketPath is { } agentSocket)
            CheckSocketPath(agentSocket, "guest agent socket");
        if (site.VncDisplayNumber is < 0 or > 99)
            throw new ArgumentException("VNC display number must be 0..99 (TCP port 5900+N).", nameof(site));

        var args = new List<string>
        {
            // No implicit NIC/VGA/serial/CD-ROM and no host config files: only what the descriptor lists.
            "-nodefaults", "-no-user-config",
            "-machine", $"{QemuArgs.Identifier(descriptor.MachineType, "machine type")},accel={QemuArgs.Identifier(descriptor.Accelerator, "accelerator")}",
            "-cpu", QemuArgs.Identifier(descriptor.CpuModel, "CPU model"),
            // Without a suffix -m means MiB; say so explicitly.
            "-m", (descriptor.MemoryBytes / MiB).ToString(CultureInfo.InvariantCulture) + "M",
            // Explicit topology: the default split between sockets and cores varies by QEMU version,
            // and one socket keeps guests with per-socket licensing limits happy.
            "-smp", Invariant($"{descriptor.CpuCount},sockets=1,cores={descriptor.CpuCount},threads=1"),
        };

        var ids = new HashSet<string>(StringComparer.Ordinal);
        var slots = new HashSet<int>();
        var serialIndex = 0;
        var sawDisk = false;
        foreach (var device in descriptor.Devices)
        {
            var id = QemuArgs.Identifier(device.Id, "device id");
            if (!ids.Add(id))
                throw new ArgumentException($"Duplicate device id '{id}'.", nameof(descriptor));
            var driver = QemuArgs.Identifier(device.Driver, "device driver");
            if (device.PciSlot is int slot)
            {
                // Slot 0 is the host bridge; q35 keeps 0x1f for the ICH9 functions.
                if (slot is < 1 or > 0x1e || !slots.Add(slot))
                    throw new ArgumentException($"Device '{id}': PCI slot {slot} is invalid or already used.", nameof(descriptor));
            }
            var addr = device.PciSlot is int s ? Invariant($",addr=0x{s:x}") : "";

            switch (device.Kind)
            {
                case VmDeviceKind.Disk:
                    if (sawDisk)
                        throw new ArgumentException("Only one disk device is supported.", nameof(descriptor));
                    sawDisk = true;
                    args.Add("-blockdev");
                    args.Add(BlockdevArgument(id, site.Disk
                        ?? throw new ArgumentException($"The descriptor has disk '{id}' but the site options give no disk backend.", nameof(site))));
                    var policy = site.DiskErrorPolicy == DiskErrorPolicy.Stop ? "stop" : "report";
                    args.Add("-device");
                    args.Add($"{driver},id={id},drive={id}{addr},rerror={policy},werror={policy}");
                    break;

                case VmDeviceKind.Network:
                    // User-mode networking: works unprivileged at any site; the guest gets NAT'ed access.
                    args.Add("-netdev");
                    args.Add($"user,id={id}");
                    var mac = device.MacAddress is null ? "" : ",mac=" + QemuArgs.Identifier(device.MacAddress, "MAC address");
                    // romfile= drops the iPXE option ROM: its size depends on the host's ipxe package,
                    // and a ROM size mismatch makes the migration stream fail to load.
                    args.Add("-device");
                    args.Add($"{driver},id={id},netdev={id}{addr}{mac},romfile=");
                    break;

                case VmDeviceKind.Serial:
                    args.Add("-chardev");
                    args.Add(site.SerialPipeBase is { } pipe ? $"pipe,id={id},path={QemuArgs.Escape(Path.GetFullPath(pipe))}"
                        : site.SerialLogPath is null ? $"null,id={id}"
                        : $"file,id={id},path={QemuArgs.Escape(Path.GetFullPath(site.SerialLogPath))}");
                    // isa-serial: index fixes the I/O port and IRQ (COM1 = 0x3f8/IRQ4, ...).
                    var index = driver == "isa-serial" ? Invariant($",index={serialIndex++}") : "";
                    args.Add("-device");
                    args.Add($"{driver},id={id},chardev={id}{index}{addr}");
                    break;

                case VmDeviceKind.GuestAgent:
                    // The port's name is what qemu-guest-agent looks for; its chardev is host-side only (not migrated).
                    args.Add("-chardev");
                    args.Add(site.GuestAgentSocketPath is { } agent ? $"socket,id={id},path={QemuArgs.Escape(agent)},server=on,wait=off" : $"null,id={id}");
                    args.Add("-device");
                    args.Add($"{driver},id={id}{addr}");
                    args.Add("-device");
                    args.Add($"virtserialport,id={id}port,bus={id}.0,nr=1,chardev={id},name=org.qemu.guest_agent.0");
                    break;

                case VmDeviceKind.Display:
                    args.Add("-device");
                    args.Add($"{driver},id={id}{addr}");
                    break;

                default:
                    throw new ArgumentException($"Device '{id}' has unsupported kind {device.Kind}.", nameof(descriptor));
            }
        }
        if (!sawDisk && site.Disk is not null)
            throw new ArgumentException("The site options give a disk backend but the descriptor has no disk device.", nameof(site));

        AddDisplay(args, site);

        args.Add("-qmp");
        args.Add($"unix:{QemuArgs.Escape(site.QmpSocketPath)},server=on,wait=off");

        if (incoming)
        {
            // -S keeps the guest paused after the state is loaded whatever the saved run state was,
            // so the caller decides when it runs (cont); "defer" lets us pick the URI over QMP.
            args.Add("-S");
            args.Add("-incoming");
            args.Add("defer");
        }

        args.AddRange(site.ExtraArgumentsForTesting);
        return args;
    }

    private static string BlockdevArgument(string nodeName, QemuDiskBackend backend) => backend switch
    {
        QemuDiskBackend.Nbd nbd when !Path.IsPathRooted(nbd.SocketPath) =>
            throw new ArgumentException($"NBD socket path must be absolute: '{nbd.SocketPath}'."),
        QemuDiskBackend.Nbd nbd =>
            $"driver=nbd,node-name={nodeName},server.type=unix,server.path={QemuArgs.Escape(nbd.SocketPath)},export={QemuArgs.Escape(nbd.ExportName)}",
        QemuDiskBackend.RawFile raw =>
            $"driver=raw,node-name={nodeName},file.driver=file,file.filename={QemuArgs.Escape(Path.GetFullPath(raw.Path))}",
        QemuDiskBackend.Null n =>
            Invariant($"driver=null-co,node-name={nodeName},size={n.SizeBytes},read-zeroes=on"),
        _ => throw new ArgumentException($"Unsupported disk backend {backend.GetType().Name}."),
    };

    private static void AddDisplay(List<string> args, QemuSiteOptions site)
    {
        if (site.Title is { } title)
        {
            // Shown in the window title and as the VNC desktop name; QEMU does not pass it to the guest.
            args.Add("-name");
            args.Add("guest=" + QemuArgs.Escape(title));
        }
        switch (site.Display)
        {
            case QemuDisplayMode.Headless:
                args.Add("-display");
                args.Add("none");
                break;
            case QemuDisplayMode.Vnc:
                args.Add("-display");
                args.Add("none");
                args.Add("-vnc");
                // Loopback or a unix socket only: VNC has no real authentication here. Without a fixed display
                // number, "to=99" makes QEMU take the first free port from 5900 on (no race with other servers).
                args.Add(site.VncSocketPath is { } vncPath ? "unix:" + QemuArgs.Escape(vncPath)
                    : site.VncDisplayNumber is int number ? Invariant($"127.0.0.1:{number}")
                    : "127.0.0.1:0,to=99");
                break;
            case QemuDisplayMode.Window:
                args.Add("-display");
                var backend = QemuArgs.Identifier(site.WindowBackend, "display backend");
                // window-close is a gtk/sdl option; other backends reject it.
                args.Add(site.IgnoreWindowClose && backend is ("gtk" or "sdl") ? backend + ",window-close=off" : backend);
                break;
            default:
                throw new ArgumentException($"Unsupported display mode {site.Display}.", nameof(site));
        }
    }

    // sockaddr_un holds 108 bytes including the terminating NUL; longer paths fail obscurely later.
    private static void CheckSocketPath(string path, string what)
    {
        if (System.Text.Encoding.UTF8.GetByteCount(path) > 107)
            throw new ArgumentException($"{what} path is longer than 107 bytes, the unix socket limit: '{path}'.");
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
