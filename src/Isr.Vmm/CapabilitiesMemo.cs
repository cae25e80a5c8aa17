using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Isr.Vmm;

/// <summary>
/// The probe's answer kept on disk for later processes (a fresh site daemon would otherwise probe again: three QEMU
/// starts, and on a host whose /dev/kvm opens but does not run guests, a 10 s timeout). The answer is a fact about
/// this machine, not about a user, and holds nothing secret. It is keyed by everything that can change it: the
/// binary (path, size, modification time), installed packages (display modules), the boot (kernel modules, KVM), the
/// accelerator override and whether /dev/kvm opens; any change misses and probes again.
/// Where: $XDG_CACHE_HOME/isr, else ~/.cache/isr; ISR_QEMU_PROBE_CACHE=0 turns it off.
/// </summary>
internal static class CapabilitiesMemo
{
    public const string EnvironmentVariable = "ISR_QEMU_PROBE_CACHE";

    /// <summary>Where memos live, or null when they are turned off (or there is no home directory).</summary>
    public static string? DefaultDirectory()
    {
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) == "0") return null;
        var root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Environment.GetEnvironmentVariable("HOME") is { Length: > 0 } home ? Path.Combine(home, ".cache") : null;
        return root is null ? null : Path.Combine(root, "isr");
    }

    public static SiteCapabilities? Recall(string? directory, string binaryPath)
    {
        if (directory is null) return null;
        var path = PathFor(directory, binaryPath);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), CapabilitiesJsonContext.Default.SiteCapabilities);
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return null; // unreadable or from an older format: probe again
        }
    }

    public static void Keep(string? directory, string binaryPath, SiteCapabilities capabilities)
    {
        if (directory is null) return;
        var path = PathFor(directory, binaryPath);
        try
        {
            Directory.CreateDirectory(directory);
            var temp = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllBytes(temp, JsonSerializer.SerializeToUtf8Bytes(capabilities, CapabilitiesJsonContext.Default.SiteCapabilities));
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // a read-only home: probe each time
    }

    private static string PathFor(string directory, string binaryPath)
    {
        var binary = new FileInfo(binaryPath);
        var key = string.Join('\n', binary.FullName, binary.Length, binary.LastWriteTimeUtc.Ticks,
            Stamp("/var/lib/dpkg/status"), Read("/proc/sys/kernel/random/boot_id"),
            Environment.GetEnvironmentVariable(QemuInstallation.AcceleratorsEnvironmentVariable) ?? "", QemuInstallation.KvmDeviceOpens());
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..32];
        return Path.Combine(directory, $"qemu-probe-{hash}.json");
    }

    private static string Stamp(string path) => File.Exists(path) ? File.GetLastWriteTimeUtc(path).Ticks.ToString() : "";

    private static string Read(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (IOException) { return ""; }
    }
}

[JsonSerializable(typeof(SiteCapabilities))]
internal sealed partial class CapabilitiesJsonContext : JsonSerializerContext;
