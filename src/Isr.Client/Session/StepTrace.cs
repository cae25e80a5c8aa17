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
    private readonly ProcessCost _created = ProcessCost.Now();

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

    /// <summary>Marks what this process spent since the trace began: a slow step that shows CPU, JIT or GC here worked
    /// (and took cores from QEMU), one that does not waited.</summary>
    public void MarkCost(string who) => Mark($"{who}: {ProcessCost.Now().Since(_created)}");

    public IReadOnlyList<TraceStep> Steps
    {
        get { lock (_steps) return _steps.OrderBy(s => s.At).ToList(); }
    }
}

/// <summary>This process's CPU, JIT and GC counters at one moment.</summary>
public readonly record struct ProcessCost(TimeSpan Cpu, long JittedMethods, TimeSpan JitTime, int Gen0Collections, int Gen2Collections, TimeSpan GcPause)
{
    public static ProcessCost Now() => new(Environment.CpuUsage.TotalTime, System.Runtime.JitInfo.GetCompiledMethodCount(),
        System.Runtime.JitInfo.GetCompilationTime(), GC.CollectionCount(0), GC.CollectionCount(2), GC.GetTotalPauseDuration());

    public string Since(ProcessCost start) =>
        $"{(Cpu - start.Cpu).TotalMilliseconds:F0} ms CPU, {JittedMethods - start.JittedMethods} methods jitted in " +
        $"{(JitTime - start.JitTime).TotalMilliseconds:F0} ms, {Gen0Collections - start.Gen0Collections} GCs " +
        $"({Gen2Collections - start.Gen2Collections} full), paused {(GcPause - start.GcPause).TotalMilliseconds:F0} ms";
}
