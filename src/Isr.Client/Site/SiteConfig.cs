using System.Globalization;
using System.Text.Json;

namespace Isr.Client.Site;

/// <summary>
/// Site policy, from ISR_HOME/config.json (written by the site's administrator or user; every field optional):
/// <code>{"cacheLimit": "20G", "wipeAfterCheckin": true, "wipeCache": true, "hoardBwlimit": "2M", "hoardPollSeconds": 30}</code>
/// ISR_CACHE_LIMIT overrides <c>cacheLimit</c>.
/// </summary>
public sealed record SiteConfig
{
    /// <summary>Bytes the chunk cache may take before clean chunks are evicted (null: only the file system's size bounds it).</summary>
    public long? CacheLimitBytes { get; init; }
    /// <summary>After a check-in that released the lock, remove what this site kept readable for the user (<see cref="SiteWipe"/>).</summary>
    public bool WipeAfterCheckin { get; init; }
    /// <summary>With <see cref="WipeAfterCheckin"/>: also drop the parcel's ciphertext from the cache.</summary>
    public bool WipeCache { get; init; }
    /// <summary>Download rate (bytes/s) of the daemon's background hoards requested from other sites (null: unlimited).</summary>
    public double? HoardBytesPerSecond { get; init; }
    /// <summary>How often the daemon asks the server for hoard requests when all is well (errors back off from there).</summary>
    public TimeSpan HoardPoll { get; init; } = TimeSpan.FromSeconds(30);

    internal sealed record FileForm(string? CacheLimit, bool? WipeAfterCheckin, bool? WipeCache, string? HoardBwlimit, double? HoardPollSeconds);

    public static SiteConfig Load(string root)
    {
        var file = Path.Combine(root, "config.json");
        var form = File.Exists(file)
            ? JsonSerializer.Deserialize(File.ReadAllBytes(file), SiteJsonContext.Default.FileForm)
              ?? throw new FormatException($"{file} is empty")
            : new FileForm(null, null, null, null, null);
        var limit = Environment.GetEnvironmentVariable("ISR_CACHE_LIMIT") is { Length: > 0 } env ? env : form.CacheLimit;
        return new SiteConfig
        {
            CacheLimitBytes = limit is null ? null : ParseSize(limit),
            WipeAfterCheckin = form.WipeAfterCheckin ?? false,
            WipeCache = form.WipeCache ?? false,
            HoardBytesPerSecond = form.HoardBwlimit is { } rate ? Transfer.TokenBucket.ParseRate(rate) : null,
            HoardPoll = form.HoardPollSeconds is > 0 and var seconds ? TimeSpan.FromSeconds(seconds) : TimeSpan.FromSeconds(30),
        };
    }

    /// <summary>"1048576", "512K", "64M", "20G", "1T" (binary units).</summary>
    public static long ParseSize(string text)
    {
        var t = text.Trim().TrimEnd('B', 'b').TrimEnd('i');
        int shift = t.Length == 0 ? 0 : char.ToUpperInvariant(t[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, _ => 0 };
        if (shift > 0) t = t[..^1];
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var number) || number < 0)
            throw new FormatException($"'{text}' is not a size (examples: 1048576, 512M, 20G)");
        return (long)(number * (1L << shift));
    }
}
