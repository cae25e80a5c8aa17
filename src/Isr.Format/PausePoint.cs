namespace Isr.Format;

/// <summary>
/// Deterministic holds for tests, the twin of <see cref="KillPoint"/>: when ISR_PAUSE_AT is "STEP:FILE" and STEP is
/// reached, the process says so on stderr and waits there until FILE exists, so that a test can act while it is
/// mid-step and then let it go on.
/// </summary>
public static class PausePoint
{
    /// <summary>A held step gives up waiting after this long (a test that never releases it must not hang forever).</summary>
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(10);

    public static void Reach(string step)
    {
        if (Environment.GetEnvironmentVariable("ISR_PAUSE_AT") is not { } spec || !spec.StartsWith(step + ":", StringComparison.Ordinal)) return;
        var release = spec[(step.Length + 1)..];
        Console.Error.WriteLine($"isr: paused at {step} until {release} exists (ISR_PAUSE_AT)");
        Console.Error.Flush();
        var deadline = DateTime.UtcNow + Limit;
        while (!File.Exists(release) && DateTime.UtcNow < deadline) Thread.Sleep(100);
    }
}
