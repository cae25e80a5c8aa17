using System.Text.RegularExpressions;
using Isr.Client.Session;

namespace Isr.Client.Tests;

public sealed class StepTraceTests
{
    /// <summary>The cost step counts this process's work since the trace began: CPU burnt in between shows, and so do
    /// methods compiled for the first time in between.</summary>
    [Fact]
    public void A_cost_step_counts_the_CPU_and_the_compilations_since_the_trace_began()
    {
        var trace = new StepTrace(DateTimeOffset.UtcNow);
        var cpuBefore = Environment.CpuUsage.TotalTime;
        var wall = System.Diagnostics.Stopwatch.StartNew();
        long sum = 0;
        // 20 ms of this process's CPU (the wall bound only ends the loop on a host that starves it)
        while (Environment.CpuUsage.TotalTime - cpuBefore < TimeSpan.FromMilliseconds(20) && wall.Elapsed < TimeSpan.FromSeconds(30))
            sum += Environment.TickCount64 % 7;
        var compiled = new Func<int, int>(x => x * 3 + (int)(sum & 1)); // a lambda that has not run yet: compiled now
        Assert.True(compiled(2) >= 6);
        trace.MarkCost("test");

        var step = Assert.Single(trace.Steps).Step;
        var m = Regex.Match(step, @"^test: (\d+) ms CPU, (\d+) methods jitted in \d+ ms, \d+ GCs \(\d+ full\), paused \d+ ms$");
        Assert.True(m.Success, step);
        Assert.True(int.Parse(m.Groups[1].Value) >= 20, step);
        Assert.True(int.Parse(m.Groups[2].Value) >= 1, step);
    }
}
