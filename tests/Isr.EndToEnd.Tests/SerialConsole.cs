using System.Text.RegularExpressions;

namespace Isr.EndToEnd.Tests;

/// <summary>One line the test guest prints every second: a RAM-only counter and seed, and the disk's boot count.</summary>
public sealed record Tick(long Counter, string Seed, long Boot);

/// <summary>Reads the guest's serial console file written by QEMU.</summary>
public static partial class SerialConsole
{
    [GeneratedRegex(@"ISR-TICK counter=(\d+) seed=([0-9a-f]+) boot=(\d+)")]
    private static partial Regex TickLine();

    public static IReadOnlyList<Tick> Ticks(string path)
    {
        if (!File.Exists(path)) return [];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var text = new StreamReader(stream).ReadToEnd();
        return TickLine().Matches(text).Select(m => new Tick(long.Parse(m.Groups[1].Value), m.Groups[2].Value, long.Parse(m.Groups[3].Value))).ToList();
    }

    /// <summary>Waits (bounded) until the console shows at least <paramref name="count"/> ticks.</summary>
    public static async Task<IReadOnlyList<Tick>> WaitForTicksAsync(string path, int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var ticks = Ticks(path);
            if (ticks.Count >= count) return ticks;
            await Task.Delay(500);
        }
        var tail = File.Exists(path) ? File.ReadAllText(path) : "(no console file)";
        throw new TimeoutException($"the guest printed fewer than {count} ticks within {timeout}; console:\n{tail[Math.Max(0, tail.Length - 2000)..]}");
    }
}
