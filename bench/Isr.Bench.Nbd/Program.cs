using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Isr.BlockDevice;
using Isr.Bench.Nbd;

// Serves the same raw images through our NbdServer (over FileBlockDevice) and through qemu-nbd, and drives
// both with `qemu-img bench` in the same run. Usage: Isr.Bench.Nbd [output.md] [repetitions] [filter]
string outputPath = args.Length > 0 ? args[0] : Path.Combine("docs", "benchmarks", "nbd.md");
int repetitions = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 5;
string filter = args.Length > 2 ? args[2] : ""; // substring of "image: workload", for quick experiments
const string Export = "bench";
const int K = 1024;

var workloads = new Workload[]
{
    new("sequential read", 64 * K, 1, null, false),
    new("sequential read", 64 * K, 16, null, false),
    new("scattered read", 64 * K, 16, 17 * 64 * K, false), // stride coprime to the block count: visits every block, defeats readahead
    new("sequential read", 1024 * K, 16, null, false),
    new("sequential write", 64 * K, 1, null, true),
    new("sequential write", 64 * K, 16, null, true),
};

string work = Directory.CreateTempSubdirectory("isr-nbd-bench-").FullName;
var results = new List<(string Image, Workload Workload, double Ours, double Qemu)>();
try
{
    foreach (var (imageName, create) in new (string, Func<string, string>)[] { ("dense", Images.CreateDense), ("sparse 10%", Images.CreateSparse) })
    {
        Console.Error.WriteLine($"== {imageName}");
        string pristine = create(work);
        foreach (bool writes in new[] { false, true })
        {
            // Read runs share one file; write runs get a fresh sparse-preserving copy per server.
            string oursFile = writes ? await Images.CopyAsync(pristine, Path.Combine(work, "ours.raw")) : pristine;
            string qemuFile = writes ? await Images.CopyAsync(pristine, Path.Combine(work, "qemu.raw")) : pristine;
            Images.Warm(oursFile);
            Images.Warm(qemuFile);

            string oursSocket = Path.Combine(work, "ours.sock"), qemuSocket = Path.Combine(work, "qemu.sock");
            using var device = new FileBlockDevice(oursFile);
            await using var server = new NbdServer(device, Export);
            using var stop = new CancellationTokenSource();
            Task serving = server.ServeAsync(oursSocket, stop.Token);
            await using (var qemu = await Tool.Daemon.StartAsync("qemu-nbd",
                ["-f", "raw", "--socket", qemuSocket, "-x", Export, "--persistent", qemuFile], qemuSocket))
            {
                foreach (var workload in workloads.Where(w => w.Write == writes && $"{imageName}: {w.Label}".Contains(filter, StringComparison.Ordinal)))
                {
                    var ours = new List<double>();
                    var theirs = new List<double>();
                    for (int r = 0; r < repetitions; r++)
                    {
                        // Alternate who goes first so neither systematically benefits from the other's warm-up.
                        bool oursFirst = r % 2 == 0;
                        foreach (bool isOurs in oursFirst ? new[] { true, false } : [false, true])
                            (isOurs ? ours : theirs).Add(await RunBenchAsync(workload, isOurs ? oursSocket : qemuSocket));
                    }
                    double o = Median(ours), q = Median(theirs);
                    Console.Error.WriteLine($"{workload.Label,-34} ours {o,8:F0} MB/s   qemu-nbd {q,8:F0} MB/s   ratio {o / q:F2}");
                    results.Add((imageName, workload, o, q));
                }
            }
            stop.Cancel();
            await serving;
        }
    }
}
finally
{
    Directory.Delete(work, recursive: true);
}

WriteReport(outputPath, results, repetitions);
Console.Error.WriteLine($"wrote {outputPath}");
return;

static async Task<double> RunBenchAsync(Workload w, string socket)
{
    int count = (int)Math.Min(Images.Size / w.BufferSize * (w.Write ? 1 : 2), 8192);
    string output = await Tool.RunAsync("qemu-img", [.. w.Arguments(count), $"nbd+unix:///{Export}?socket={socket}"], TimeSpan.FromMinutes(5));
    var match = Regex.Match(output, @"Run completed in ([0-9.]+) seconds");
    if (!match.Success) throw new InvalidOperationException($"unexpected qemu-img bench output: {output}");
    double seconds = double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    return (double)count * w.BufferSize / seconds / 1e6;
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToList();
    return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
}

static void WriteReport(string path, List<(string Image, Workload Workload, double Ours, double Qemu)> results, int repetitions)
{
    var md = new StringBuilder();
    md.AppendLine("# NBD server benchmark: Isr.BlockDevice.NbdServer vs qemu-nbd");
    md.AppendLine();
    md.AppendLine(CultureInfo.InvariantCulture, $"- Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
    md.AppendLine(CultureInfo.InvariantCulture, $"- Machine: {Environment.ProcessorCount} CPUs (nproc), {CpuModel()}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}");
    md.AppendLine(CultureInfo.InvariantCulture, $"- Images: {Images.Size / (1024 * 1024)} MiB raw files in the page cache: dense random data, and sparse with every tenth MiB data (10%), rest holes.");
    md.AppendLine("- Ours: `NbdServer` over `FileBlockDevice` (SEEK_DATA/SEEK_HOLE map), in-process. qemu-nbd: `qemu-nbd -f raw --socket SOCK -x bench --persistent FILE` (defaults: writeback cache, thread-pool AIO).");
    md.AppendLine("- Client for both: `qemu-img bench -f raw -t none -c COUNT -d DEPTH -s SIZE [-S STEP] [-w] 'nbd+unix:///bench?socket=SOCK'` (structured replies and base:allocation negotiated by QEMU).");
    md.AppendLine(CultureInfo.InvariantCulture, $"- Each cell is the median of {repetitions} runs, ours and qemu-nbd interleaved; MB/s = 10^6 bytes/s.");
    md.AppendLine("- Command: `dotnet run -c Release --project bench/Isr.Bench.Nbd -- docs/benchmarks/nbd.md`");
    md.AppendLine();
    md.AppendLine("| Image | Workload | Ours MB/s | qemu-nbd MB/s | Ours / qemu-nbd |");
    md.AppendLine("|---|---|---:|---:|---:|");
    foreach (var (image, w, ours, qemu) in results)
        md.AppendLine(CultureInfo.InvariantCulture, $"| {image} | {w.Label} | {ours:F0} | {qemu:F0} | {ours / qemu:F2} |");
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    File.WriteAllText(path, md.ToString());
}

static string CpuModel()
{
    try
    {
        var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
        return line is null ? "unknown CPU" : line[(line.IndexOf(':') + 1)..].Trim();
    }
    catch (IOException)
    {
        return "unknown CPU";
    }
}

internal sealed record Workload(string Kind, int BufferSize, int Depth, int? Step, bool Write)
{
    public string Label => $"{Kind} {BufferSize / 1024} KiB, QD{Depth}" + (Step is { } s ? $" (step {s / 1024} KiB)" : "");

    public IEnumerable<string> Arguments(int count)
    {
        yield return "bench";
        foreach (var a in new[] { "-f", "raw", "-t", "none", "-c", $"{count}", "-d", $"{Depth}", "-s", $"{BufferSize}" }) yield return a;
        if (Step is { } step) { yield return "-S"; yield return $"{step}"; }
        if (Write) yield return "-w";
    }
}
