using System.Diagnostics;
using System.Security.Cryptography;
using Xunit.Abstractions;

namespace Isr.Vmm.Tests;

/// <summary>
/// Reports how long saving and loading a 256 MiB guest's state takes and how big the stream is
/// (see test output). No thresholds: timings depend on the machine.
/// </summary>
[Collection(QemuCollection.Name)]
public class StateTransferMeasurement(ITestOutputHelper output)
{
    [Theory]
    [InlineData(0)]   // idle firmware: RAM almost all zero pages
    [InlineData(200)] // 200 MiB of random data preloaded into guest RAM: the incompressible worst case
    public async Task Save_and_load_256_MiB_guest(int filledMiB)
    {
        await using var env = new QemuTestEnvironment(TimeSpan.FromMinutes(5));
        var descriptor = await env.DescriptorAsync(memoryMiB: 256, withDisk: false);
        IReadOnlyList<string> extra = [];
        if (filledMiB > 0)
        {
            var blob = Path.Combine(env.Directory, "fill.bin");
            await File.WriteAllBytesAsync(blob, RandomNumberGenerator.GetBytes(filledMiB << 20), env.Token);
            // Test-only: QEMU's generic loader copies the file into guest RAM at 16 MiB on reset.
            extra = ["-device", $"loader,file={blob},addr=0x1000000,force-raw=on"];
        }

        var source = await env.StartAsync(descriptor, env.SiteOptions() with { ExtraArgumentsForTesting = extra }, incoming: false);
        while (await source.QueryStatusAsync(env.Token) != "running")
            await Task.Delay(20, env.Token);
        // Pre-sized: re-growing a 200 MB MemoryStream costs more than QEMU's whole save.
        var saved = new MemoryStream(capacity: (int)descriptor.MemoryBytes + (32 << 20));
        var sw = Stopwatch.StartNew();
        await source.SaveStateAsync((s, ct) => s.CopyToAsync(saved, 1 << 20, ct), env.Token);
        var saveTime = sw.Elapsed;
        await source.QuitAsync();

        var target = await env.StartAsync(descriptor, env.SiteOptions(), incoming: true);
        var bytes = saved.GetBuffer().AsMemory(0, (int)saved.Length);
        sw.Restart();
        await target.LoadStateAsync((s, ct) => s.WriteAsync(bytes, ct).AsTask(), env.Token);
        var loadTime = sw.Elapsed;
        await target.ContinueAsync(env.Token);
        Assert.Equal("running", await target.QueryStatusAsync(env.Token));
        await target.QuitAsync();

        output.WriteLine($"256 MiB guest, {filledMiB} MiB random RAM: state {bytes.Length / 1e6:F1} MB, " +
            $"save {saveTime.TotalMilliseconds:F0} ms, load {loadTime.TotalMilliseconds:F0} ms");
    }
}
