namespace Isr.Vmm;

/// <summary>
/// A QEMU process failed (start, migration, unexpected exit). Carries QEMU's own words: its last
/// stderr lines usually say exactly what was wrong ("load of migration failed: ...").
/// </summary>
public class QemuVmException : Exception
{
    public QemuVmException(string message, string stderrTail = "", int? exitCode = null, Exception? inner = null)
        : base(Compose(message, stderrTail, exitCode), inner)
    {
        StderrTail = stderrTail;
        ExitCode = exitCode;
    }

    /// <summary>Last lines QEMU wrote to stderr (may be empty).</summary>
    public string StderrTail { get; }

    /// <summary>QEMU's exit code if it had exited.</summary>
    public int? ExitCode { get; }

    private static string Compose(string message, string stderrTail, int? exitCode)
    {
        var s = message;
        if (exitCode is int code)
            s += $" (QEMU exited with code {code})";
        if (!string.IsNullOrWhiteSpace(stderrTail))
            s += Environment.NewLine + "QEMU stderr:" + Environment.NewLine + stderrTail.TrimEnd();
        return s;
    }
}
