using System.Diagnostics;

namespace Isr.Client.Disk;

/// <summary>
/// Wall time during which at least one guest read waited on a fetch. The guest's reads wait side by side (readahead,
/// several processes), so the sum of their waits can exceed the time the guest was held up; this is the union of the
/// waits, the figure to set against the workload's wall time.
/// </summary>
public sealed class StallClock(Func<long>? timestamp = null)
{
    private readonly Func<long> _now = timestamp ?? Stopwatch.GetTimestamp;
    private readonly object _gate = new();
    private int _waiting;
    private long _since, _stalled;

    public void Enter()
    {
        lock (_gate) if (_waiting++ == 0) _since = _now();
    }

    public void Exit()
    {
        lock (_gate) if (--_waiting == 0) _stalled += _now() - _since;
    }

    /// <summary>Stalled time so far, counting a stall in progress up to now.</summary>
    public TimeSpan Stalled
    {
        get
        {
            lock (_gate) return TimeSpan.FromSeconds((_stalled + (_waiting > 0 ? _now() - _since : 0)) / (double)Stopwatch.Frequency);
        }
    }
}
