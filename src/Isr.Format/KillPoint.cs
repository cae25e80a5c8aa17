using System.Diagnostics;

namespace Isr.Format;

/// <summary>
/// Deterministic crash injection for tests: when ISR_KILL_AT names a step, the process SIGKILLs itself there, as a
/// power loss would end it. Steps are named where they are reached (grep KillPoint.Reach).
/// </summary>
public static class KillPoint
{
    public static void Reach(string step)
    {
        if (Environment.GetEnvironmentVariable("ISR_KILL_AT") != step) return;
        Console.Error.WriteLine($"isr: killed at {step} (ISR_KILL_AT)");
        Console.Error.Flush();
        Process.GetCurrentProcess().Kill();
    }
}
