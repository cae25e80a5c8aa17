using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Isr.Vmm;

/// <summary>
/// A QEMU binary at this site and what it can do. Probing starts a throwaway QEMU
/// (<c>-machine none</c>) and asks over QMP, because the answers (machine aliases, version)
/// depend on the exact build; results are cached per process and binary path, and on disk (<see cref="CapabilitiesMemo"/>).
/// </summary>
public sealed class QemuInstallation
{
    public const string DefaultBinaryName = "qemu-system-x86_64";

    private static readonly ConcurrentDictionary<string, Lazy<Task<SiteCapabilities>>> Cache = new();

    private QemuInstallation(string binaryPath) => BinaryPath = binaryPath;

    /// <summary>Absolute path of the QEMU system emulator.</summary>
    public string BinaryPath { get; }

    /// <summary>
    /// Finds QEMU: the given path if any, otherwise <see cref="DefaultBinaryName"/> on PATH.
    /// Throws <see cref="QemuNotFoundException"/> with an actionable message when it is missing.
    /// </summary>
    public static QemuInstallation Locate(string? binaryPath = null)
    {
        if (binaryPath is not null)
        {
            var full = Path.GetFullPath(binaryPath);
            if (!File.Exists(full))
                throw new QemuNotFoundException($"QEMU binary '{full}' does not exist.");
            return new QemuInstallation(full);
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, DefaultBinaryName);
            if (File.Exists(candidate) && IsExecutable(candidate))
                return new QemuInstallation(Path.GetFullPath(candidate));
        }
        throw new QemuNotFoundException(
            $"{DefaultBinaryName} was not found on PATH. Install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86) " +
            "or pass the binary path explicitly.");
    }

    private static bool IsExecutable(string path) =>
        OperatingSystem.IsWindows()
        || (File.GetUnixFileMode(path) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0;

    /// <summary>Probes once per process (per binary); later calls return the cached result.</summary>
    public Task<SiteCapabilities> GetCapabilitiesAsync(CancellationToken cancellationToken = default)
    {
        var lazy = Cache.GetOrAdd(BinaryPath, path => new Lazy<Task<SiteCapabilities>>(() => RecallOrProbeAsync(path)));
        var task = lazy.Value;
        // A failed probe (e.g. transient) must not poison the cache for the rest of the process.
        task.ContinueWith(t => Cache.TryRemove(new KeyValuePair<string, Lazy<Task<SiteCapabilities>>>(BinaryPath, lazy)),
            CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        return task.WaitAsync(cancellationToken);
    }

    /// <summary>The versioned machine type for <paramref name="nameOrAlias"/> (e.g. q35 → pc-q35-7.2).</summary>
    public async Task<string> ResolveMachineAsync(string nameOrAlias, CancellationToken cancellationToken = default)
    {
        var caps = await GetCapabilitiesAsync(cancellationToken).ConfigureAwait(false);
        return caps.ResolveMachine(nameOrAlias)?.Name
            ?? throw new ArgumentException($"QEMU {caps.VmmVersion} has no machine type or alias '{nameOrAlias}'.", nameof(nameOrAlias));
    }

    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(30);

    private static async Task<SiteCapabilities> RecallOrProbeAsync(string binaryPath)
    {
        var memos = CapabilitiesMemo.DefaultDirectory();
        if (CapabilitiesMemo.Recall(memos, binaryPath) is { } known) return known;
        var probed = await ProbeAsync(binaryPath).ConfigureAwait(false);
        CapabilitiesMemo.Keep(memos, binaryPath, probed);
        return probed;
    }

    private static async Task<SiteCapabilities> ProbeAsync(string binaryPath)
    {
        // The probe is shared by all callers, so it runs under its own timeout, not one caller's token.
        using var cts = new CancellationTokenSource(ProbeTimeout);
        var accelerators = ParseHelpList(await RunHelpAsync(binaryPath, "-accel", cts.Token).ConfigureAwait(false));
        var displays = ParseHelpList(await RunHelpAsync(binaryPath, "-display", cts.Token).ConfigureAwait(false));

        var dir = RuntimeDirectory.Create("probe");
        try
        {
            var qmpPath = Path.Combine(dir.Path, "qmp.sock");
            await using var process = QemuProcess.Start(binaryPath,
            [
                "-machine", "none", "-nodefaults", "-no-user-config", "-display", "none", "-S",
                "-qmp", $"unix:{QemuArgs.Escape(qmpPath)},server=on,wait=off",
            ]);
            await using var qmp = await process.ConnectQmpAsync(qmpPath, ProbeTimeout, cts.Token).ConfigureAwait(false);

            var version = await qmp.ExecuteAsync("query-version", null, cts.Token).ConfigureAwait(false);
            var q = version.GetProperty("qemu");
            var versionString = $"{q.GetProperty("major").GetInt32()}.{q.GetProperty("minor").GetInt32()}.{q.GetProperty("micro").GetInt32()}";

            var machines = new List<QemuMachineType>();
            foreach (var m in (await qmp.ExecuteAsync("query-machines", null, cts.Token).ConfigureAwait(false)).EnumerateArray())
            {
                machines.Add(new QemuMachineType(
                    m.GetProperty("name").GetString()!,
                    m.TryGetProperty("alias", out var alias) ? alias.GetString() : null,
                    m.TryGetProperty("is-default", out var def) && def.GetBoolean(),
                    m.TryGetProperty("deprecated", out var dep) && dep.GetBoolean()));
            }

            var cpus = (await qmp.ExecuteAsync("query-cpu-definitions", null, cts.Token).ConfigureAwait(false))
                .EnumerateArray().Select(c => c.GetProperty("name").GetString()!).Order(StringComparer.Ordinal).ToList();

            var devices = (await qmp.ExecuteAsync("qom-list-types",
                    new JsonObject { ["implements"] = "device", ["abstract"] = false }, cts.Token).ConfigureAwait(false))
                .EnumerateArray().Select(t => t.GetProperty("name").GetString()!).Order(StringComparer.Ordinal).ToList();

            try
            {
                await qmp.ExecuteAsync("quit", null, cts.Token).ConfigureAwait(false);
            }
            catch (QmpConnectionClosedException)
            {
                // QEMU may close the socket before the reply is read; it is exiting either way.
            }
            await process.Exited.WaitAsync(TimeSpan.FromSeconds(10), cts.Token).ConfigureAwait(false);

            return new SiteCapabilities
            {
                Vmm = "qemu",
                VmmVersion = versionString,
                Package = version.TryGetProperty("package", out var pkg) ? pkg.GetString() ?? "" : "",
                MachineTypes = machines,
                Accelerators = await UsableAcceleratorsAsync(binaryPath, accelerators, cts.Token).ConfigureAwait(false),
                CpuModels = cpus,
                DeviceTypes = devices,
                DisplayBackends = displays,
            };
        }
        finally
        {
            dir.Delete();
        }
    }

    /// <summary>Forces the accelerators a site offers (e.g. <c>tcg</c>), bypassing the probe; comma-separated.</summary>
    public const string AcceleratorsEnvironmentVariable = "ISR_ACCELERATORS";

    // Compiled-in accelerators are not all usable: kvm needs a /dev/kvm that really runs guest code. A device node can
    // exist and open while the host's virtualisation is broken (e.g. nested without VMX): QEMU then starts, reports an
    // emulation failure and the guest never prints a byte, so the probe runs a few instructions under kvm.
    private static async Task<List<string>> UsableAcceleratorsAsync(string binaryPath, IReadOnlyList<string> compiledIn, CancellationToken ct)
    {
        if (Environment.GetEnvironmentVariable(AcceleratorsEnvironmentVariable) is { Length: > 0 } forced)
            return forced.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Where(compiledIn.Contains).ToList();
        var usable = new List<string>();
        foreach (var accel in compiledIn)
        {
            if (accel == "kvm" && !(KvmDeviceOpens() && await RunsGuestCodeAsync(binaryPath, "kvm", ct).ConfigureAwait(false)))
                continue;
            usable.Add(accel);
        }
        return usable;
    }

    internal static bool KvmDeviceOpens()
    {
        try
        {
            using var kvm = new FileStream("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    // A boot sector that enters 32-bit protected mode (flat GDT), returns through an iret, writes 'K' to COM1 and halts.
    // The iret matters: hosts whose KVM runs real-mode code but fails to emulate it in protected mode (an emulation
    // failure seen with nested virtualisation) would otherwise pass the probe and hang every real guest.
    private static readonly byte[] KvmProbeCode =
    [
        0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x0F, 0x01, 0x16, 0x58, 0x7C, 0x0F, 0x20, 0xC0, 0x66, 0x83, 0xC8,
        0x01, 0x0F, 0x22, 0xC0, 0xEA, 0x19, 0x7C, 0x08, 0x00, 0x66, 0xB8, 0x10, 0x00, 0x8E, 0xD8, 0x8E,
        0xD0, 0xBC, 0x00, 0x70, 0x00, 0x00, 0x9C, 0x6A, 0x08, 0x68, 0x2F, 0x7C, 0x00, 0x00, 0xCF, 0x66,
        0xBA, 0xF8, 0x03, 0xB0, 0x4B, 0xEE, 0xF4, 0xEB, 0xFD, 0x8D, 0xB4, 0x26, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xCF, 0x00,
        0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00, 0x17, 0x00, 0x40, 0x7C, 0x00, 0x00,
    ];

    /// <summary>True if QEMU under <paramref name="accelerator"/> runs a boot sector that prints to the serial port.</summary>
    internal static async Task<bool> RunsGuestCodeAsync(string binaryPath, string accelerator, CancellationToken ct)
    {
        var image = Path.Combine(Path.GetTempPath(), $"isr-kvm-probe-{Environment.ProcessId}-{Guid.NewGuid():N}.img");
        var sector = new byte[512];
        KvmProbeCode.CopyTo(sector, 0);
        sector[510] = 0x55;
        sector[511] = 0xAA;
        await File.WriteAllBytesAsync(image, sector, ct).ConfigureAwait(false);
        var psi = new ProcessStartInfo(binaryPath) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-accel", accelerator, "-machine", "pc", "-m", "16", "-display", "none", "-monitor", "none",
                     "-serial", "stdio", "-no-reboot", "-drive", $"format=raw,file={image},if=ide" })
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            var failed = WaitForLineAsync(process.StandardError, "internal error", timeout.Token); // KVM's emulation failure
            var ran = WaitForLineAsync(process.StandardOutput, "K", timeout.Token);
            if (await Task.WhenAny(ran, failed).ConfigureAwait(false) == failed && await failed.ConfigureAwait(false)) return false;
            return await ran.ConfigureAwait(false);
        }
        finally
        {
            try { process.Kill(); } catch (InvalidOperationException) { }
            File.Delete(image);
        }
    }

    /// <summary>True once the stream shows <paramref name="text"/>; false at its end or when cancelled.</summary>
    private static async Task<bool> WaitForLineAsync(StreamReader reader, string text, CancellationToken ct)
    {
        var seen = new System.Text.StringBuilder();
        var buffer = new char[256];
        try
        {
            int n;
            while ((n = await reader.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                seen.Append(buffer, 0, n);
                if (seen.ToString().Contains(text, StringComparison.Ordinal)) return true;
            }
        }
        catch (OperationCanceledException) { }
        return false;
    }

    private static async Task<string> RunHelpAsync(string binaryPath, string option, CancellationToken cancellationToken)
    {
        var psi = new ProcessStartInfo(binaryPath)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true, // module-not-found chatter; not part of the list
        };
        psi.ArgumentList.Add(option);
        psi.ArgumentList.Add("help");
        using var process = Process.Start(psi) ?? throw new QemuVmException($"Cannot start '{binaryPath}'.");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw;
        }
        await stderr.ConfigureAwait(false);
        return await stdout.ConfigureAwait(false);
    }

    // "-accel help" / "-display help" print a header line ending in ':' and then one name per line.
    private static List<string> ParseHelpList(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => !l.EndsWith(':') && !l.Contains(' '))
            .ToList();
}
