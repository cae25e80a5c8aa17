using Isr.Client.Transfer;
using Isr.Format;

namespace Isr.Client.Tests;

public sealed class MemoryImageTests
{
    /// <summary>A store that fails mid-image (a full disk) must end the capture with its error. It used to hang: the
    /// collector stopped at the failed chunk and the splitter waited forever on the full pipeline (and QEMU on it).</summary>
    [Fact]
    public async Task A_store_failure_mid_image_ends_the_capture_with_that_error()
    {
        var codec = new ChunkCodec(new byte[32]);
        using var source = new MemoryStream(TestData.Random(16 << 20, 7));
        int stored = 0;
        var capture = MemoryImage.CaptureAsync(source, codec, (_, _, _) =>
            Interlocked.Increment(ref stored) == 3 ? throw new IOException("No space left on device") : ValueTask.CompletedTask, default);
        // The bound only turns a hang into a failure; it measures nothing.
        var error = await Assert.ThrowsAsync<IOException>(() => capture.WaitAsync(TimeSpan.FromMinutes(2)));
        Assert.Equal("No space left on device", error.Message);
    }

    /// <summary>A benchmark's chunker is the one that cuts (its chunks fit its bounds, not the format's), and the
    /// default is the format's FastCDC: the same refs as splitting with <c>new FastCdc()</c>.</summary>
    [Fact]
    public async Task Capture_cuts_with_the_given_chunker_and_by_default_with_the_formats()
    {
        var codec = new ChunkCodec(new byte[32]);
        var data = TestData.Random(4 << 20, 11);
        ValueTask Ignore(ChunkTag tag, byte[] blob, CancellationToken ct) => ValueTask.CompletedTask;

        var small = await MemoryImage.CaptureAsync(new MemoryStream(data), codec, Ignore, default, new FastCdc(4 << 10, 16 << 10, 64 << 10));
        Assert.All(small.SkipLast(1), c => Assert.InRange(c.Length, 4 << 10, 64 << 10));
        Assert.Equal(data.Length, small.Sum(c => (long)c.Length));

        var byDefault = await MemoryImage.CaptureAsync(new MemoryStream(data), codec, Ignore, default);
        var lengths = new List<int>();
        await new FastCdc().SplitAsync(new MemoryStream(data), chunk => { lengths.Add(chunk.Length); return ValueTask.CompletedTask; }, default);
        Assert.Equal(lengths, byDefault.Select(c => c.Length));
        Assert.True(small.Count > 2 * byDefault.Count, $"{small.Count} chunks at 16 KiB average vs {byDefault.Count} at 64 KiB");
    }
}
