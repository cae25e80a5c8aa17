using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Isr.Vmm.Tests;

/// <summary>
/// The disk wiring against a real NBD server on a unix socket. qemu-nbd (qemu-utils) stands in
/// for our own NBD server so this checks exactly the -blockdev syntax and the suspend/resume flow
/// with a disk attached.
/// </summary>
[Collection(QemuCollection.Name)]
public class QemuNbdDiskTests
{
    private sealed class QemuNbd : IAsyncDisposable
    {
        private readonly Process _process;

        private QemuNbd(Process process, string socketPath)
        {
            _process = process;
            SocketPath = socketPath;
        }

        public string SocketPath { get; }

        public static async Task<QemuNbd> StartAsync(string image, string socketPath, string export, CancellationToken ct)
        {
            var binary = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
                .Select(d => Path.Combine(d, "qemu-nbd")).FirstOrDefault(File.Exists)
                ?? throw new Xunit.Sdk.XunitException("This test needs qemu-nbd (apt-get install qemu-utils).");
            var psi = new ProcessStartInfo(binary) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
            // --persistent + --shared=2: the suspending and the resuming QEMU connect one after the other.
            foreach (var a in new[] { "--socket", socketPath, "--export-name", export, "--format", "raw", "--persistent", "--shared", "2", image })
                psi.ArgumentList.Add(a);
            var process = Process.Start(psi)!;
            var nbd = new QemuNbd(process, socketPath);
            while (!File.Exists(socketPath))
            {
                if (process.HasExited)
                    throw new Xunit.Sdk.XunitException("qemu-nbd failed: " + await process.StandardError.ReadToEndAsync(ct));
                await Task.Delay(20, ct);
            }
            return nbd;
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
                _process.Kill(); // the qemu-nbd this test started, by its PID
            await _process.WaitForExitAsync();
            _process.Dispose();
        }
    }

    [Fact]
    public async Task Vm_with_nbd_disk_suspends_and_resumes()
    {
        await using var env = new QemuTestEnvironment();
        var image = Path.Combine(env.Directory, "disk.img");
        await using (var f = File.Create(image))
            f.SetLength(64L * 1024 * 1024);
        await using var nbd = await QemuNbd.StartAsync(image, Path.Combine(env.Directory, "nbd.sock"), "parcel", env.Token);
        var descriptor = await env.DescriptorAsync();
        var disk = new QemuDiskBackend.Nbd(nbd.SocketPath, "parcel");

        var source = await env.StartAsync(descriptor, env.SiteOptions(disk), incoming: false);
        var block = (await source.Qmp.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, env.Token))
            .EnumerateArray().Single(n => n.GetProperty("node-name").GetString() == "disk0");
        Assert.Equal("nbd", block.GetProperty("drv").GetString());
        Assert.Equal(64L * 1024 * 1024, block.GetProperty("image").GetProperty("virtual-size").GetInt64());

        var saved = new MemoryStream();
        await source.SaveStateAsync((s, ct) => s.CopyToAsync(saved, ct), env.Token);
        await source.QuitAsync();

        var target = await env.StartAsync(descriptor, env.SiteOptions(disk), incoming: true);
        saved.Position = 0;
        await target.LoadStateAsync((s, ct) => saved.CopyToAsync(s, ct), env.Token);
        await target.ContinueAsync(env.Token);
        Assert.Equal("running", await target.QueryStatusAsync(env.Token));
        await target.QuitAsync();
    }
}
