namespace Isr.Client.Session;

/// <summary>One step of a resume or check-in and when it ended, in seconds since the `isr` process started.</summary>
public sealed record TraceStep(string Step, double At);

/// <summary>
/// The timeline of one resume or check-in (`isr resume --json` and `isr checkin --json`: "trace"), from the CLI's
/// process start to <c>cont</c> or the lock's release: where the fixed cost goes. Clocks are wall clocks, as the steps
/// happen in two processes (CLI and daemon).
/// </summary>
public sealed class StepTrace(DateTimeOffset origin)
{
    private readonly List<TraceStep> _steps = [];

    /// <summary>A trace from the CLI's process start, its first step the parsed command (when the CLI said when).</summary>
    public static StepTrace FromCommand(DateTimeOffset? processStarted, DateTimeOffset? commandStarted)
    {
        var trace = new StepTrace(processStarted ?? commandStarted ?? DateTimeOffset.UtcNow);
        if (commandStarted is { } parsed) trace.Mark("cli: command parsed", parsed);
        return trace;
    }

    public void Mark(string step, DateTimeOffset? at = null)
    {
        var seconds = Math.Round(((at ?? DateTimeOffset.UtcNow) - origin).TotalSeconds, 3);
        lock (_steps) _steps.Add(new TraceStep(step, seconds));
    }

    public IReadOnlyList<TraceStep> Steps
    {
        get { lock (_steps) return _steps.OrderBy(s => s.At).ToList(); }
    }
}
