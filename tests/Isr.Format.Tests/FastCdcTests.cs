using System.Security.Cryptography;
using Isr.Format;

namespace Isr.Format.Tests;

public class FastCdcTests
{
    private static async Task<List<byte[]>> Split(FastCdc cdc, Stream input)
    {
        var chunks = new List<byte[]>();
        await cdc.SplitAsync(input, chunk => { chunks.Add(chunk); return ValueTask.CompletedTask; }, default);
        return chunks;
    }

    private static Task<List<byte[]>> Split(FastCdc cdc, byte[] data) => Split(cdc, new MemoryStream(data));

    private static List<int> CutAll(FastCdc cdc, byte[] data)
    {
        var lengths = new List<int>();
        for (int offset = 0; offset < data.Length;)
        {
            int cut = cdc.Cut(data.AsSpan(offset));
            Assert.True(cut > 0);
            lengths.Add(cut);
            offset += cut;
        }
        return lengths;
    }

    [Theory]
    [InlineData(0, 64 << 10, 256 << 10)]
    [InlineData(16 << 10, 16 << 10, 256 << 10)]
    [InlineData(16 << 10, 64 << 10, 64 << 10)]
    [InlineData(16 << 10, 48 << 10, 256 << 10)]
    [InlineData(32 << 10, 16 << 10, 256 << 10)]
    public void RejectsBadParameters(int min, int average, int max)
    {
        Assert.Throws<ArgumentException>(() => new FastCdc(min, average, max));
    }

    [Fact]
    public void DefaultParameters()
    {
        var cdc = new FastCdc();
        Assert.Equal(16 << 10, cdc.MinSize);
        Assert.Equal(64 << 10, cdc.AverageSize);
        Assert.Equal(256 << 10, cdc.MaxSize);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(16 << 10)]
    public void ShortInputIsOneChunk(int length)
    {
        Assert.Equal(length, new FastCdc().Cut(TestData.Random(length, 1)));
    }

    [Fact]
    public void CutsStayWithinBoundsAndAverageIsNearTheTarget()
    {
        var cdc = new FastCdc();
        var data = TestData.Random(16 << 20, 2);
        var lengths = CutAll(cdc, data);
        Assert.Equal(data.Length, lengths.Sum());
        foreach (int length in lengths[..^1]) Assert.InRange(length, cdc.MinSize + 1, cdc.MaxSize);
        Assert.InRange(lengths[^1], 1, cdc.MaxSize);
        double average = lengths.Average();
        Assert.InRange(average, cdc.AverageSize / 2.0, cdc.AverageSize * 2.0);
        Assert.True(lengths.Count(l => l == cdc.MaxSize) < lengths.Count / 10, "most cuts should be content-defined, not forced at the maximum");
    }

    [Fact]
    public void UniformDataStaysWithinBounds()
    {
        var cdc = new FastCdc(4 << 10, 16 << 10, 64 << 10);
        var lengths = CutAll(cdc, new byte[1 << 20]);
        Assert.Equal(1 << 20, lengths.Sum());
        foreach (int length in lengths[..^1]) Assert.InRange(length, cdc.MinSize + 1, cdc.MaxSize);
    }

    [Fact]
    public async Task SmallParametersStayWithinBounds()
    {
        var cdc = new FastCdc(256, 1024, 4096);
        var chunks = await Split(cdc, TestData.Random(1 << 20, 3));
        foreach (var chunk in chunks[..^1]) Assert.InRange(chunk.Length, 257, 4096);
        Assert.InRange(chunks.Average(c => c.Length), 512, 2048);
    }

    [Fact]
    public async Task SplittingIsDeterministic()
    {
        var data = TestData.Random(4 << 20, 4);
        var first = await Split(new FastCdc(), data);
        var second = await Split(new FastCdc(), data.ToArray());
        Assert.Equal(first.Select(c => c.Length), second.Select(c => c.Length));
        Assert.True(first.Count > 10);
    }

    /// <summary>Cut points are part of the format: a fixed input must keep cutting at the same places.</summary>
    [Fact]
    public void CutPointsOfAFixedInputAreStableAcrossInstances()
    {
        var data = TestData.Random(2 << 20, 5);
        Assert.Equal(CutAll(new FastCdc(), data), CutAll(new FastCdc(16 << 10, 64 << 10, 256 << 10), data));
    }

    [Fact]
    public async Task InsertionNearTheStartResynchronises()
    {
        var cdc = new FastCdc();
        var original = TestData.Random(8 << 20, 6);
        var inserted = TestData.Random(100, 7);
        var modified = new byte[original.Length + inserted.Length];
        original.AsSpan(0, 1 << 20).CopyTo(modified);
        inserted.CopyTo(modified, 1 << 20);
        original.AsSpan(1 << 20).CopyTo(modified.AsSpan((1 << 20) + inserted.Length));

        var before = (await Split(cdc, original)).Select(c => Convert.ToHexString(SHA256.HashData(c))).ToHashSet();
        var after = (await Split(cdc, modified)).Select(c => Convert.ToHexString(SHA256.HashData(c))).ToList();
        int shared = after.Count(before.Contains);
        Assert.True(shared >= 0.8 * after.Count, $"only {shared} of {after.Count} chunks are shared after a 100-byte insertion");
        Assert.True(shared < after.Count, "the insertion must change at least one chunk");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(16 << 10)]
    [InlineData((16 << 10) + 1)]
    [InlineData(256 << 10)]
    [InlineData(512 << 10)]
    [InlineData((3 << 20) + 12345)]
    public async Task ConcatenationEqualsInput(int length)
    {
        var data = TestData.Random(length, length);
        var chunks = await Split(new FastCdc(), data);
        Assert.Equal(data, chunks.SelectMany(c => c).ToArray());
        Assert.Equal(length == 0 ? 0 : CutAll(new FastCdc(), data).Count, chunks.Count);
        Assert.DoesNotContain(chunks, c => c.Length == 0);
    }

    [Fact]
    public async Task SmallRandomReadsGiveTheSameChunks()
    {
        var data = TestData.Random((5 << 20) + 777, 8);
        var expected = await Split(new FastCdc(), data);
        var trickled = await Split(new FastCdc(), new TrickleStream(data, maxRead: 5000, seed: 9));
        Assert.Equal(expected.Count, trickled.Count);
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i], trickled[i]);
        Assert.Equal(data, trickled.SelectMany(c => c).ToArray());
    }

    [Fact]
    public async Task OneByteReadsGiveTheSameChunks()
    {
        var data = TestData.Random(300 << 10, 10);
        var expected = await Split(new FastCdc(), data);
        var trickled = await Split(new FastCdc(), new TrickleStream(data, maxRead: 1, seed: 11));
        Assert.Equal(expected.Select(c => c.Length), trickled.Select(c => c.Length));
        Assert.Equal(data, trickled.SelectMany(c => c).ToArray());
    }

    [Fact]
    public async Task ChunksHandedOverAreIndependentCopies()
    {
        var data = TestData.Random(1 << 20, 12);
        var chunks = await Split(new FastCdc(), data);
        Assert.True(chunks.Count > 2);
        Assert.Equal(data, chunks.SelectMany(c => c).ToArray()); // later chunks did not overwrite earlier ones
    }

    [Fact]
    public async Task CancellationStopsSplitting()
    {
        using var cts = new CancellationTokenSource();
        int seen = 0;
        var data = TestData.Random(4 << 20, 13);
        int total = (await Split(new FastCdc(), data)).Count;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => new FastCdc().SplitAsync(new MemoryStream(data),
            _ => { if (++seen == 2) cts.Cancel(); return ValueTask.CompletedTask; }, cts.Token));
        // Cancellation is noticed at the next read, at most a buffer (2 × max size) later.
        Assert.InRange(seen, 2, 2 + 2 * (256 << 10) / (16 << 10));
        Assert.True(seen < total);
    }

    /// <summary>Delivers data in reads of random size 1..maxRead, like a pipe from QEMU.</summary>
    private sealed class TrickleStream(byte[] data, int maxRead, int seed) : Stream
    {
        private readonly Random _rng = new(seed);
        private int _position;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(Math.Min(buffer.Length, _rng.Next(1, maxRead + 1)), data.Length - _position);
            data.AsSpan(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
        {
            await Task.Yield();
            return Read(buffer.Span);
        }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
