using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

// The fuzz targets each own a time budget; running them one after another keeps the budgets honest (no target
// starves another of CPU) and the per-case timeouts meaningful.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Isr.Fuzz.Tests;

/// <summary>
/// Settings shared by every target. <c>ISR_FUZZ_SECONDS</c>: budget per target (default 15). <c>ISR_FUZZ_SEED</c>: the run's
/// seed (default random; always printed). Case <c>k</c> of a target draws from <c>Random(Mix(seed, target, k))</c>, so a seed
/// replays every case exactly (timing-dependent targets aside), and <c>ISR_FUZZ_CASE=k</c> replays just that one case.
/// </summary>
public static class FuzzConfig
{
    public static TimeSpan Budget { get; } = TimeSpan.FromSeconds(
        double.TryParse(Environment.GetEnvironmentVariable("ISR_FUZZ_SECONDS"), System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 15);

    public static int Seed { get; } =
        int.TryParse(Environment.GetEnvironmentVariable("ISR_FUZZ_SEED"), out var seed) ? seed : RandomNumberGenerator.GetInt32(int.MaxValue);

    public static long? OnlyCase { get; } = long.TryParse(Environment.GetEnvironmentVariable("ISR_FUZZ_CASE"), out var c) ? c : null;

    public static int TargetSeed(string target) => Mix(Seed, Fnv(target));

    public static int CaseSeed(int targetSeed, long index) => Mix(targetSeed, (int)index ^ (int)(index >> 32));

    private static int Fnv(string s)
    {
        uint h = 2166136261;
        foreach (char c in s) h = (h ^ c) * 16777619;
        return (int)h;
    }

    private static int Mix(int a, int b)
    {
        ulong x = (uint)a * 0x9E3779B97F4A7C15UL ^ (uint)b * 0xC2B2AE3D27D4EB4FUL;
        x ^= x >> 31; x *= 0xBF58476D1CE4E5B9UL; x ^= x >> 29;
        return (int)(x & 0x7FFFFFFF);
    }
}

/// <summary>A failure detected by a target's oracle (as opposed to an exception thrown by the code under test).</summary>
public sealed class FuzzFailure(string message) : Exception(message);

/// <summary>
/// Runs one target for its budget on a dedicated thread while the test thread watches for a case that runs longer than
/// the per-case timeout (a hang: it is reported with its input, and its thread is abandoned). Stops at the first failure.
/// </summary>
public sealed class FuzzRunner(ITestOutputHelper output, string target)
{
    public delegate string Case(Random rng, long index, CaseContext context);

    public TimeSpan CaseTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan? Budget { get; init; }

    public sealed class CaseContext
    {
        /// <summary>The input under test, printed (hex) if the case fails or hangs.</summary>
        public byte[] Input { get; set; } = [];
        /// <summary>Extra lines printed with a failure (e.g. which endpoint or mode).</summary>
        public string Note { get; set; } = "";
    }

    public long Run(Case body)
    {
        int targetSeed = FuzzConfig.TargetSeed(target);
        TimeSpan budget = Budget ?? FuzzConfig.Budget;
        output.WriteLine($"[{target}] ISR_FUZZ_SEED={FuzzConfig.Seed} (target seed {targetSeed}), budget {budget.TotalSeconds:0.#} s, case timeout {CaseTimeout.TotalSeconds:0.#} s");
        var outcomes = new Dictionary<string, long>();
        long cases = 0;
        long running = -1; // index of the case in progress
        long caseStarted = 0;
        CaseContext? current = null;
        (long Index, CaseContext Context, Exception Error)? failure = null;
        var clock = Stopwatch.StartNew();

        var worker = new Thread(() =>
        {
            for (long k = FuzzConfig.OnlyCase ?? 0; ; k++)
            {
                if (FuzzConfig.OnlyCase is null ? clock.Elapsed >= budget : k > FuzzConfig.OnlyCase) break;
                var context = new CaseContext();
                Volatile.Write(ref current, context);
                Volatile.Write(ref caseStarted, clock.ElapsedTicks);
                Volatile.Write(ref running, k);
                string outcome;
                try
                {
                    outcome = body(new Random(FuzzConfig.CaseSeed(targetSeed, k)), k, context);
                }
                catch (Exception e)
                {
                    failure = (k, context, e);
                    Volatile.Write(ref running, -1);
                    return;
                }
                Volatile.Write(ref running, -1);
                Interlocked.Increment(ref cases);
                lock (outcomes) outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            }
        })
        { IsBackground = true, Name = $"fuzz-{target}" };
        worker.Start();

        string? hang = null;
        while (!worker.Join(50))
        {
            long k = Volatile.Read(ref running);
            if (k < 0) continue;
            var ran = TimeSpan.FromTicks((long)((clock.ElapsedTicks - Volatile.Read(ref caseStarted)) * (TimeSpan.TicksPerSecond / (double)Stopwatch.Frequency)));
            if (ran > CaseTimeout && Volatile.Read(ref running) == k)
            {
                hang = $"case {k} did not finish within {CaseTimeout.TotalSeconds:0.#} s (hang)";
                var context = Volatile.Read(ref current)!;
                failure = (k, context, new FuzzFailure(hang));
                break;
            }
        }

        output.WriteLine($"[{target}] {cases} cases in {clock.Elapsed.TotalSeconds:0.0} s ({cases / Math.Max(clock.Elapsed.TotalSeconds, 0.001):0} /s)");
        lock (outcomes)
            foreach (var (outcome, count) in outcomes.OrderByDescending(o => o.Value))
                output.WriteLine($"[{target}]   {count,9} {outcome}");
        if (failure is { } f)
        {
            output.WriteLine($"[{target}] FAILED at case {f.Index}; replay with ISR_FUZZ_SEED={FuzzConfig.Seed} ISR_FUZZ_CASE={f.Index}");
            if (f.Context.Note.Length > 0) output.WriteLine($"[{target}] note: {f.Context.Note}");
            string saved = Path.Combine(Path.GetTempPath(), "isr-fuzz-failures", $"{target}-seed{FuzzConfig.Seed}-case{f.Index}.bin");
            try
            {
                Directory.CreateDirectory(Path.GetDirectoryName(saved)!);
                File.WriteAllBytes(saved, f.Context.Input);
            }
            catch (IOException)
            {
                saved = "(not saved)";
            }
            output.WriteLine($"[{target}] input ({f.Context.Input.Length} bytes, saved to {saved}): {Hex(f.Context.Input, 4096)}");
            output.WriteLine($"[{target}] error: {f.Error}");
            Assert.Fail($"[{target}] case {f.Index} failed (ISR_FUZZ_SEED={FuzzConfig.Seed} ISR_FUZZ_CASE={f.Index}): {f.Error.GetType().Name}: {f.Error.Message}");
        }
        return cases;
    }

    public static string Hex(ReadOnlySpan<byte> data, int max = 64 * 1024) =>
        data.Length <= max ? Convert.ToHexStringLower(data) : Convert.ToHexStringLower(data[..max]) + $"…(+{data.Length - max} bytes)";
}

/// <summary>A position in a seed that holds an integer (a length, an offset, a count): the mutator aims at these.</summary>
public readonly record struct Field(int Offset, int Size, bool BigEndian);

public sealed record Seed(byte[] Data, IReadOnlyList<Field> Fields)
{
    public Seed(byte[] data) : this(data, []) { }
}

/// <summary>Coverage-free byte-level mutations: bit flips, interesting bytes, truncation, extension, splicing two seeds,
/// integer-field tampering, duplicated, deleted and inserted regions.</summary>
public static class Mutator
{
    private static readonly byte[] InterestingBytes = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, 0x81, 0x7E, 0x20, 0x40];

    private static readonly ulong[] InterestingValues =
    [
        0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x1FF, 0x200, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
        0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFE, 1 << 20, (1 << 20) + 1, 16 << 20, (16 << 20) + 1,
        32 << 20, 64 << 20, 1024, 1025, 4096, 65535, 65536 + 1,
    ];

    public static byte[] Mutate(Random rng, Seed seed, IReadOnlyList<Seed> pool, int maxLength = 1 << 20, int? rounds = null)
    {
        var data = new List<byte>(seed.Data);
        int n = rounds ?? (rng.Next(3) == 0 ? 1 + rng.Next(12) : 1 + rng.Next(3));
        for (int i = 0; i < n; i++) MutateOnce(rng, data, seed.Fields, pool);
        if (data.Count > maxLength) data.RemoveRange(maxLength, data.Count - maxLength);
        return [.. data];
    }

    /// <summary>Mutations that keep every byte where it was (the length may only shrink, by truncation).</summary>
    public static byte[] MutateInPlace(Random rng, byte[] seed, int rounds, bool allowTruncation)
    {
        var data = (byte[])seed.Clone();
        int length = data.Length;
        for (int i = 0; i < rounds && length > 0; i++)
        {
            int pos = rng.Next(length);
            switch (rng.Next(allowTruncation ? 4 : 3))
            {
                case 0: data[pos] ^= (byte)(1 << rng.Next(8)); break;
                case 1: data[pos] = InterestingBytes[rng.Next(InterestingBytes.Length)]; break;
                case 2: data[pos] = (byte)rng.Next(256); break;
                default: length = rng.Next(length); break;
            }
        }
        return data.AsSpan(0, length).ToArray();
    }

    private static void MutateOnce(Random rng, List<byte> data, IReadOnlyList<Field> fields, IReadOnlyList<Seed> pool)
    {
        int op = rng.Next(fields.Count > 0 ? 14 : 12);
        if (data.Count == 0 && op is not (4 or 5 or 11)) op = 4;
        switch (op)
        {
            case 0: // bit flip
            {
                int pos = rng.Next(data.Count);
                data[pos] ^= (byte)(1 << rng.Next(8));
                break;
            }
            case 1: // interesting byte
                data[rng.Next(data.Count)] = InterestingBytes[rng.Next(InterestingBytes.Length)];
                break;
            case 2: // random byte
                data[rng.Next(data.Count)] = (byte)rng.Next(256);
                break;
            case 3: // truncation
                TruncateAt(data, rng.Next(data.Count + 1));
                break;
            case 4: // extension: random bytes, zeros, or a repeat of the tail
            {
                int count = 1 + rng.Next(rng.Next(4) == 0 ? 4096 : 64);
                switch (rng.Next(3))
                {
                    case 0: for (int i = 0; i < count; i++) data.Add((byte)rng.Next(256)); break;
                    case 1: for (int i = 0; i < count; i++) data.Add(0); break;
                    default:
                        if (data.Count == 0) { data.Add(0xFF); break; }
                        int from = rng.Next(data.Count);
                        var tail = data.GetRange(from, Math.Min(count, data.Count - from));
                        data.AddRange(tail);
                        break;
                }
                break;
            }
            case 5: // splice: a prefix of this input with a suffix of another seed
            {
                var other = pool[rng.Next(pool.Count)].Data;
                int cut = rng.Next(data.Count + 1);
                int otherCut = other.Length == 0 ? 0 : rng.Next(other.Length);
                // Prefer cutting at the same offset (aligned structures stay aligned).
                if (rng.Next(2) == 0 && cut <= other.Length) otherCut = cut;
                TruncateAt(data, cut);
                data.AddRange(other.AsSpan(otherCut).ToArray());
                break;
            }
            case 6: // integer field at a random position
            case 12: // integer field at a known position
            case 13:
            {
                Field field = op >= 12
                    ? fields[rng.Next(fields.Count)]
                    : new Field(rng.Next(data.Count), rng.Next(3) switch { 0 => 2, 1 => 4, _ => 8 }, rng.Next(2) == 0);
                if (field.Offset + field.Size > data.Count) break;
                ulong old = ReadField(data, field);
                ulong value = rng.Next(6) switch
                {
                    0 => old + (ulong)(rng.Next(33) - 16),
                    1 => old * 2,
                    2 => (ulong)rng.NextInt64(),
                    3 => old ^ (1UL << rng.Next(field.Size * 8)),
                    _ => InterestingValues[rng.Next(InterestingValues.Length)],
                };
                WriteField(data, field, value);
                break;
            }
            case 7: // duplicate a region (insert a copy somewhere)
            {
                int from = rng.Next(data.Count);
                int count = 1 + rng.Next(Math.Min(data.Count - from, rng.Next(4) == 0 ? 4096 : 64));
                var region = data.GetRange(from, count);
                data.InsertRange(rng.Next(2) == 0 ? from + count : rng.Next(data.Count + 1), region);
                break;
            }
            case 8: // delete a region
            {
                int from = rng.Next(data.Count);
                data.RemoveRange(from, 1 + rng.Next(Math.Min(data.Count - from, 256)));
                break;
            }
            case 9: // insert random or interesting bytes
            {
                int at = rng.Next(data.Count + 1);
                int count = 1 + rng.Next(16);
                var bytes = new byte[count];
                if (rng.Next(2) == 0) rng.NextBytes(bytes);
                else bytes.AsSpan().Fill(InterestingBytes[rng.Next(InterestingBytes.Length)]);
                data.InsertRange(at, bytes);
                break;
            }
            case 10: // overwrite a region with a copy of another region
            {
                int from = rng.Next(data.Count), to = rng.Next(data.Count);
                int count = 1 + rng.Next(Math.Min(Math.Min(data.Count - from, data.Count - to), 64));
                var region = data.GetRange(from, count);
                for (int i = 0; i < count; i++) data[to + i] = region[i];
                break;
            }
            default: // 11: overwrite a region with bytes from another seed at the same offset
            {
                var other = pool[rng.Next(pool.Count)].Data;
                if (other.Length == 0 || data.Count == 0) break;
                int at = rng.Next(Math.Min(data.Count, other.Length));
                int count = 1 + rng.Next(Math.Min(Math.Min(data.Count, other.Length) - at, 64));
                for (int i = 0; i < count; i++) data[at + i] = other[at + i];
                break;
            }
        }
    }

    private static void TruncateAt(List<byte> data, int length)
    {
        if (length < data.Count) data.RemoveRange(length, data.Count - length);
    }

    private static ulong ReadField(List<byte> data, Field f)
    {
        Span<byte> b = stackalloc byte[8];
        for (int i = 0; i < f.Size; i++) b[i] = data[f.Offset + i];
        return (f.Size, f.BigEndian) switch
        {
            (1, _) => b[0],
            (2, true) => BinaryPrimitives.ReadUInt16BigEndian(b),
            (2, false) => BinaryPrimitives.ReadUInt16LittleEndian(b),
            (4, true) => BinaryPrimitives.ReadUInt32BigEndian(b),
            (4, false) => BinaryPrimitives.ReadUInt32LittleEndian(b),
            (_, true) => BinaryPrimitives.ReadUInt64BigEndian(b),
            _ => BinaryPrimitives.ReadUInt64LittleEndian(b),
        };
    }

    private static void WriteField(List<byte> data, Field f, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        if (f.BigEndian) BinaryPrimitives.WriteUInt64BigEndian(b, value << (64 - 8 * f.Size));
        else BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        for (int i = 0; i < f.Size; i++) data[f.Offset + i] = b[i];
    }

    public static string RandomText(Random rng, int maxLength)
    {
        var sb = new StringBuilder();
        int n = rng.Next(maxLength + 1);
        for (int i = 0; i < n; i++) sb.Append((char)rng.Next(0x20, 0x7F));
        return sb.ToString();
    }
}
