using System.Diagnostics;
using System.Text.Json;
using Isr.Client.Site;
using Isr.Format;

namespace Isr.Client.Session;

/// <summary>
/// The QEMU a session runs, recorded in the parcel's state directory while it runs. A daemon killed with its VM running
/// leaves this behind: its QEMU lives on without its disk server (the NBD server died with the daemon), so it can never
/// continue. The next daemon finds it here and stops it. Identity is the PID plus the process's start time (field 22
/// of /proc/PID/stat) and its QMP socket path on its command line, so a recycled PID is never taken for ours.
/// </summary>
public sealed record QemuRecord(int Pid, long StartTime, string QmpSocket)
{
    public static string PathFor(SiteDirectory site, string parcel) => System.IO.Path.Combine(site.ParcelDirectory(parcel), "qemu.json");

    /// <summary>Records a just-started QEMU; null (nothing recorded) where /proc cannot tell its start time.</summary>
    public static QemuRecord? Save(SiteDirectory site, string parcel, int pid, string qmpSocket)
    {
        if (ReadStartTime(pid) is not long started) return null;
        var record = new QemuRecord(pid, started, qmpSocket);
        Durable.WriteFileAtomically(PathFor(site, parcel), JsonSerializer.SerializeToUtf8Bytes(record, ParcelStateJsonContext.Default.QemuRecord));
        return record;
    }

    public static QemuRecord? Load(SiteDirectory site, string parcel)
    {
        var path = PathFor(site, parcel);
        try { return File.Exists(path) ? JsonSerializer.Deserialize(File.ReadAllBytes(path), ParcelStateJsonContext.Default.QemuRecord) : null; }
        catch (JsonException) { return null; } // torn by a crash before it was ever used: nothing to find
    }

    public static void Delete(SiteDirectory site, string parcel) => File.Delete(PathFor(site, parcel));

    /// <summary>The recorded process is still running and is the QEMU we started (same start time, our QMP socket).</summary>
    public bool IsAlive()
    {
        if (ReadStartTime(Pid) != StartTime) return false;
        try
        {
            var args = File.ReadAllText($"/proc/{Pid}/cmdline").Split('\0');
            return args.Any(a => a.Contains(QmpSocket, StringComparison.Ordinal));
        }
        catch (IOException) { return false; }
    }

    /// <summary>SIGKILL to the recorded QEMU if it is still ours; waits (bounded) until it is gone. True if it was running.</summary>
    public bool KillIfAlive()
    {
        if (!IsAlive()) return false;
        try
        {
            using var process = Process.GetProcessById(Pid);
            process.Kill();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { } // exited meanwhile
        // Not our child any more (its parent died): poll /proc rather than wait; a zombie no longer counts as alive.
        for (int i = 0; i < 100 && IsAlive(); i++) Thread.Sleep(100);
        return true;
    }

    /// <summary>Start time in clock ticks since boot (field 22 of /proc/PID/stat), or null if there is no such process.</summary>
    private static long? ReadStartTime(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            // The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[19], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException) { return null; }
    }
}
