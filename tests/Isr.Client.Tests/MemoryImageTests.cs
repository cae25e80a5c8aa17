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
}
