using System.Collections.Concurrent;
using System.Diagnostics;

namespace Isr.Bench.Scale;

/// <summary>Durations of one kind of request, from many threads.</summary>
public sealed class Latency(string name)
{
    private readonly ConcurrentBag<double> _ms = [];
    public string Name => name;
    public int Count => _ms.Count;

    public async Task<T> TimeAsync<T>(Func<Task<T>> call)
    {
        long start = Stopwatch.GetTimestamp();
        var result = await call();
        _ms.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return result;
    }

    /// <summary>The q-quantile (nearest rank) in milliseconds; NaN if nothing was measured.</summary>
    public double Quantile(double q)
    {
        var sorted = _ms.OrderBy(x => x).ToArray();
        return sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}
