using System.Diagnostics;
using System.Globalization;

namespace Isr.Client.Transfer;

/// <summary>
/// A bandwidth limit: a token bucket of bytes refilled at <see cref="BytesPerSecond"/>, holding at most
/// <see cref="BurstBytes"/>. Transfers pay after the fact (<see cref="Consume"/>), because a blob's size is known only
/// once it arrived; <see cref="WaitAsync"/> holds the next transfer until the debt is paid. Over any long run the
/// average rate stays at the limit; a transfer may exceed it by one blob per concurrent worker.
/// The clock and the sleep are injectable so tests can account without waiting.
/// </summary>
public sealed class TokenBucket
{
    private readonly object _gate = new();
    private readonly Func<TimeSpan> _now;
    private readonly Func<TimeSpan, CancellationToken, Task> _sleep;
    private double _tokens;
    private TimeSpan _last;
    private long _consumed, _waits, _waitedTicks;

    public TokenBucket(double bytesPerSecond, long? burstBytes = null, Func<TimeSpan>? now = null, Func<TimeSpan, CancellationToken, Task>? sleep = null)
    {
        if (bytesPerSecond <= 0) throw new ArgumentOutOfRangeException(nameof(bytesPerSecond), "a rate must be positive");
        BytesPerSecond = bytesPerSecond;
        // Default burst: a quarter second of traffic, at least 256 KiB, so one large blob does not stall the pipe.
        BurstBytes = burstBytes ?? Math.Max(256 << 10, (long)(bytesPerSecond / 4));
        long start = Stopwatch.GetTimestamp();
        _now = now ?? (() => Stopwatch.GetElapsedTime(start));
        _sleep = sleep ?? ((d, ct) => Task.Delay(d, ct));
        _last = _now();
        _tokens = BurstBytes;
    }

    public double BytesPerSecond { get; }
    public long BurstBytes { get; }
    /// <summary>Bytes paid for so far.</summary>
    public long BytesConsumed => Interlocked.Read(ref _consumed);
    /// <summary>How often a transfer was held back, and for how long in all (as requested of the sleep).</summary>
    public long Waits => Interlocked.Read(ref _waits);
    public TimeSpan Waited => TimeSpan.FromTicks(Interlocked.Read(ref _waitedTicks));

    private void Refill()
    {
        var now = _now();
        if (now > _last) _tokens = Math.Min(BurstBytes, _tokens + (now - _last).TotalSeconds * BytesPerSecond);
        _last = now;
    }

    /// <summary>Waits until the bucket is not in debt.</summary>
    public async Task WaitAsync(CancellationToken ct)
    {
        while (true)
        {
            TimeSpan delay;
            lock (_gate)
            {
                Refill();
                if (_tokens > 0) return;
                delay = TimeSpan.FromSeconds(-_tokens / BytesPerSecond) + TimeSpan.FromMilliseconds(1);
            }
            Interlocked.Increment(ref _waits);
            Interlocked.Add(ref _waitedTicks, delay.Ticks);
            await _sleep(delay, ct);
        }
    }

    /// <summary>Pays for <paramref name="bytes"/> just transferred (the bucket may go into debt).</summary>
    public void Consume(long bytes)
    {
        lock (_gate)
        {
            Refill();
            _tokens -= bytes;
        }
        Interlocked.Add(ref _consumed, bytes);
    }

    /// <summary>
    /// Parses a rate in BYTES per second: a number with an optional suffix K, M, G (powers of 1000) or Ki, Mi, Gi (powers
    /// of 1024), optionally followed by "B" or "B/s"; "bit" after the prefix means bits ("10Mbit" = 1.25 MB/s).
    /// "10M" = 10 MB/s = 10 000 000 bytes per second. Zero or "off" means no limit (null).
    /// </summary>
    public static double? ParseRate(string text)
    {
        var s = text.Trim();
        if (s.Equals("off", StringComparison.OrdinalIgnoreCase) || s.Equals("none", StringComparison.OrdinalIgnoreCase)) return null;
        int end = 0;
        while (end < s.Length && (char.IsAsciiDigit(s[end]) || s[end] == '.')) end++;
        if (end == 0 || !double.TryParse(s[..end], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value))
            throw new ArgumentException($"'{text}' is not a rate: use bytes per second, e.g. 500K, 10M, 1.5Mi, 20Mbit");
        var unit = s[end..].Trim();
        if (unit.EndsWith("/s", StringComparison.OrdinalIgnoreCase)) unit = unit[..^2];
        bool bits = false;
        if (unit.EndsWith("bit", StringComparison.OrdinalIgnoreCase)) { bits = true; unit = unit[..^3]; }
        else if (unit.EndsWith("bps", StringComparison.Ordinal)) { bits = true; unit = unit[..^3]; }
        else if (unit.EndsWith('B')) unit = unit[..^1];
        double multiplier = unit.ToLowerInvariant() switch
        {
            "" => 1,
            "k" => 1e3, "m" => 1e6, "g" => 1e9,
            "ki" => 1024, "mi" => 1024 * 1024, "gi" => 1024 * 1024 * 1024,
            _ => throw new ArgumentException($"'{text}' is not a rate: unknown unit '{s[end..]}' (use K, M, G, Ki, Mi, Gi, optionally 'bit')"),
        };
        double rate = value * multiplier / (bits ? 8 : 1);
        return rate <= 0 ? null : rate;
    }
}
