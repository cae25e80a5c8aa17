namespace Isr.BlockDevice.Tests;

/// <summary>Our server against QEMU's own NBD client (qemu-io, qemu-img): the client that matters in production.</summary>
public sealed class QemuClientTests
{
    private const long Size = 64L * 1024 * 1024;

    [Fact]
    public async Task QemuIo_WriteReadPatterns_IncludingUnaligned()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        string output = await ExternalTool.RunOkAsync("qemu-io", "-f", "raw", server.Uri,
            "-c", "write -P 0xab 0 1M",
            "-c", "read -P 0xab 0 1M",
            "-c", "write -P 0x11 12345 6789",
            "-c", "read -P 0x11 12345 6789",
            "-c", "read -P 0xab 0 12345",
            "-c", "write -P 0xcd 63M 1M",
            "-c", "read -P 0xcd 63M 1M",
            "-c", "read -P 0 2M 8M",
            "-c", "flush");
        Assert.Contains("read 1048576/1048576 bytes", output);
        Assert.Contains("read 8388608/8388608 bytes", output);
    }

    [Fact]
    public async Task QemuIo_AioParallelism_FuaDiscardAndWriteZeroes()
    {
        var device = new MemoryBlockDevice(Size);
        await using var server = new TestServer(device);
        var commands = new List<string>();
        for (int i = 0; i < 32; i++) commands.AddRange(["-c", $"aio_write -P {i + 1} {i}M 1M"]);
        commands.AddRange(["-c", "aio_flush"]);
        for (int i = 0; i < 32; i++) commands.AddRange(["-c", $"aio_read -P {i + 1} {i}M 1M"]);
        commands.AddRange(["-c", "aio_flush"]);
        commands.AddRange(["-c", "write -f -P 0x5a 40M 64k", "-c", "read -P 0x5a 40M 64k"]); // -f: FUA
        commands.AddRange(["-c", "discard 0 4M", "-c", "read -P 0 0 4M"]);
        commands.AddRange(["-c", "write -z 4M 1M", "-c", "read -P 0 4M 1M", "-c", "read -P 6 5M 1M"]);
        string output = await ExternalTool.RunOkAsync("qemu-io", ["-f", "raw", server.Uri, .. commands]);
        Assert.DoesNotContain("Pattern verification failed", output);
        Assert.True(device.FlushCount > 0);
        Assert.Equal(0, Enumerable.Range(0, 5 * 16).Count(p => device.MapAsync(p * 65536L, 65536, default).Result[0].IsZero == false));
    }

    [Fact]
    public async Task QemuImg_ConvertAndCompare_PreserveDataAndSparseness()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        string source = Path.Combine(server.Directory, "source.raw");
        string back = Path.Combine(server.Directory, "back.raw");

        // Sparse source: random data in a few places, holes elsewhere.
        var random = new Random(42);
        using (var file = new FileStream(source, FileMode.Create))
        {
            file.SetLength(Size);
            foreach (long at in new long[] { 0, 3 * 1024 * 1024 + 4096, 17 * 1024 * 1024, Size - 65536 })
            {
                var data = new byte[65536 * 3 / (at == Size - 65536 ? 3 : 1)];
                random.NextBytes(data);
                file.Position = at;
                file.Write(data);
            }
        }

        await ExternalTool.RunOkAsync("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source, server.Uri);
        await ExternalTool.RunOkAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", source, server.Uri);

        // Holes stay holes on the way back (block status + hole chunks), and the content matches.
        await ExternalTool.RunOkAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", server.Uri, back);
        await ExternalTool.RunOkAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", source, back);

        string map = await ExternalTool.RunOkAsync("qemu-img", "map", "--output=json", "-f", "raw", server.Uri);
        Assert.Contains("\"zero\": true", map);
        Assert.Contains("\"data\": true", map);

        // A change is noticed by compare (guards against a compare that always succeeds).
        await ExternalTool.RunOkAsync("qemu-io", "-f", "raw", server.Uri, "-c", "write -P 0x77 20M 4k");
        var differs = await ExternalTool.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, server.Uri]);
        Assert.Equal(1, differs.ExitCode);
    }

    [Fact]
    public async Task QemuImg_Info_SeesSizeAndWrongExportIsRejected()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        string info = await ExternalTool.RunOkAsync("qemu-img", "info", "--output=json", server.Uri);
        Assert.Contains($"\"virtual-size\": {Size}", info);

        var wrong = await ExternalTool.RunAsync("qemu-img", ["info", $"nbd+unix:///nope?socket={server.SocketPath}"]);
        Assert.NotEqual(0, wrong.ExitCode);
        Assert.Contains("nope", wrong.Output);
    }
}
