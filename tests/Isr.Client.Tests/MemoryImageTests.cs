using Isr.Client.Cache;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Storage;

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

    /// <summary>Chunks fetched in any order (a home answering after random delays) are written in image order.</summary>
    [Fact]
    public async Task A_restore_writes_the_image_in_order_whatever_order_its_chunks_arrive_in()
    {
        using var dir = new TempDir();
        var (image, refs, home) = await CapturedImageAsync(dir, 6 << 20, seed: 5, delays: true);
        using var fetcher = new ChunkFetcher(new DirectoryChunkStore(dir["cache"], durable: false), home);

        await using var restore = MemoryImage.StartRestore(AsAsync(refs), fetcher, Codec, default);
        var written = new MemoryStream();
        await restore.WriteToAsync(written, default);
        Assert.Equal(image, written.ToArray());
    }

    /// <summary>A restore given up before its writer (QEMU failed to start) stops its fetches and returns, even while the
    /// home does not answer.</summary>
    [Fact]
    public async Task A_restore_disposed_while_its_home_does_not_answer_returns()
    {
        using var dir = new TempDir();
        var (_, refs, _) = await CapturedImageAsync(dir, 2 << 20, seed: 9, delays: false);
        var silent = new SilentStore();
        using var fetcher = new ChunkFetcher(new DirectoryChunkStore(dir["cache"], durable: false), silent, Timeout.InfiniteTimeSpan);

        var restore = MemoryImage.StartRestore(AsAsync(refs), fetcher, Codec, default);
        for (int i = 0; i < 3000 && silent.Gets == 0; i++) await Task.Delay(10);
        Assert.True(silent.Gets > 0);
        // The bound only turns a hang into a failure; it measures nothing.
        await restore.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromMinutes(2));
    }

    private static readonly ChunkCodec Codec = new(new byte[32]);

    private static async Task<(byte[] Image, IReadOnlyList<ChunkRef> Refs, CountingStore Home)> CapturedImageAsync(TempDir dir, int length, int seed, bool delays)
    {
        var image = TestData.Random(length, seed);
        var store = new DirectoryChunkStore(dir["home"], durable: false);
        var refs = await MemoryImage.CaptureAsync(new MemoryStream(image), Codec, (tag, blob, ct) => store.PutAsync(tag, blob, ct), default);
        return (image, refs, new CountingStore(delays ? new DelayingStore(store, seed) : store));
    }

    private static async IAsyncEnumerable<ChunkRef> AsAsync(IEnumerable<ChunkRef> refs)
    {
        foreach (var chunk in refs)
        {
            await Task.Yield();
            yield return chunk;
        }
    }

    /// <summary>A home that answers each request after a random 0–4 ms.</summary>
    private sealed class DelayingStore(IChunkStore inner, int seed) : IChunkStore
    {
        private readonly Random _random = new(seed);

        public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
        {
            int delay;
            lock (_random) delay = _random.Next(5);
            await Task.Delay(delay, ct);
            return await inner.GetAsync(tag, ct);
        }

        public ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct) => inner.PutAsync(tag, blob, ct);
        public ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct) => inner.MissingAsync(tags, ct);
        public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct) => inner.DeleteAsync(tag, ct);
        public IAsyncEnumerable<ChunkTag> ListAsync(CancellationToken ct) => inner.ListAsync(ct);
    }

    /// <summary>A home that never answers a fetch (until cancelled).</summary>
    private sealed class SilentStore : IChunkStore
    {
        private int _gets;
        public int Gets => Volatile.Read(ref _gets);

        public async ValueTask<byte[]?> GetAsync(ChunkTag tag, CancellationToken ct)
        {
            Interlocked.Increment(ref _gets);
            await Task.Delay(Timeout.Infinite, ct);
            return null;
        }

        public ValueTask PutAsync(ChunkTag tag, ReadOnlyMemory<byte> blob, CancellationToken ct) => throw new NotSupportedException();
        public ValueTask<IReadOnlyList<ChunkTag>> MissingAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct) => throw new NotSupportedException();
        public ValueTask DeleteAsync(ChunkTag tag, CancellationToken ct) => throw new NotSupportedException();
        public IAsyncEnumerable<ChunkTag> ListAsync(CancellationToken ct) => throw new NotSupportedException();
    }
}
