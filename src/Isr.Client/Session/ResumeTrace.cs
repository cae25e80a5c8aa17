namespace Isr.Client.Session;

/// <summary>One step of a resume and when it ended, in seconds since the `isr` process started.</summary>
public sealed record ResumeStep(string Step, double At);

/// <summary>
/// The timeline of one resume (`isr resume --json`: "trace"), from the CLI's process start to <c>cont</c>: where the
/// fixed cost of a resume goes. Clocks are wall clocks, as the steps happen in two processes (CLI and daemon).
/// </summary>
public sealed class ResumeTrace(DateTimeOffset origin)
{
    private readonly List<ResumeStep> _steps = [];

    public void Mark(string step, DateTimeOffset? at = null)
    {
        var seconds = Math.Round(((at ?? DateTimeOffset.UtcNow) - origin).TotalSeconds, 3);
        lock (_steps) _steps.Add(new ResumeStep(step, seconds));
    }

    public IReadOnlyList<ResumeStep> Steps
    {
        get { lock (_steps) return _steps.OrderBy(s => s.At).ToList(); }
    }
}
