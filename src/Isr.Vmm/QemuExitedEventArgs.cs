namespace Isr.Vmm;

/// <summary>Raised once when a <see cref="QemuVm"/>'s process has ended.</summary>
public sealed class QemuExitedEventArgs(int exitCode, QemuExitReason reason, string outputTail) : EventArgs
{
    public int ExitCode { get; } = exitCode;

    public QemuExitReason Reason { get; } = reason;

    /// <summary>The last lines QEMU printed, for telling the user what happened.</summary>
    public string OutputTail { get; } = outputTail;
}
