using System.Buffers;
using System.Diagnostics;
using System.Threading.Channels;
using Isr.Client.Cache;
using Isr.Format;

namespace Isr.Client.Transfer;

/// <summary>
/// The VM's saved state as content-defined chunks, streamed both ways: at suspend from QEMU straight into the codec,
/// at resume from the fetcher straight into QEMU, so that fetching and decoding overlap loading.
/// </summary>
public static class MemoryImage
{
    /// <summary>Chunks fetched and decoded ahead of the one QEMU is reading.</summary>
    private const int ReadAhead = 16;

    /// <summary>Cuts <paramref name="source"/> into chunks, encodes them in parallel (order kept) and hands each blob to <paramref name="store"/>.
    /// <paramref name="chunker"/> is the format's (docs/FORMAT.md) unless a benchmark weighs another.</summary>
    public static async Task<IReadOnlyList<ChunkRef>> CaptureAsync(Stream source, ChunkCodec codec,
        Func<ChunkTag, byte[], CancellationToken, ValueTask> store, CancellationToken ct, FastCdc? chunker = null)
    {
        var pipeline = Channel.CreateBounded<Task<ChunkRef>>(Environment.ProcessorCount * 4);
        var refs = new List<ChunkRef>();
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var collect = Task.Run(async () =>
        {
            try
            {
                await foreach (var chunk in pipeline.Reader.ReadAllAsync(ct)) refs.Add(await chunk);
            }
            catch
            {
                failed.Cancel(); // stop the splitter: it would wait on the full pipeline forever, and QEMU on it
                throw;
            }
        }, ct);
        try
        {
            await (chunker ?? new FastCdc()).SplitAsync(source, async plaintext =>
            {
                await pipeline.Writer.WriteAsync(Task.Run(async () =>
                {
                    var (chunk, blob) = codec.Encode(plaintext);
                    await store(chunk.Tag, blob, ct);
                    return chunk;
                }, ct), failed.Token);
            }, failed.Token);
        }
        catch (OperationCanceledException) when (failed.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            // the store failed: its exception, from the collector below, is the one to report
        }
        finally
        {
            pipeline.Writer.TryComplete();
        }
        await collect;
        return refs;
    }

    /// <summary>Starts fetching and decoding the image, up to <see cref="ReadAhead"/> chunks ahead of its writer. A resume
    /// starts it before QEMU, so that QEMU's start (70–100 ms here) overlaps the first chunks' fetch and decode.</summary>
    public static Restore StartRestore(IAsyncEnumerable<ChunkRef> chunks, ChunkFetcher fetcher, ChunkCodec codec, CancellationToken ct) =>
        new(chunks, fetcher, codec, ct);

    /// <summary>An image on its way to QEMU. Plaintext goes through pooled buffers: a fresh array per chunk put ~67 MB of
    /// short-lived large objects (most chunks exceed 85 KB) through the GC on every resume.</summary>
    public sealed class Restore : IAsyncDisposable
    {
        private readonly Channel<Task<(byte[] Buffer, int Length)>> _pipeline = Channel.CreateBounded<Task<(byte[] Buffer, int Length)>>(ReadAhead);
        private readonly CancellationTokenSource _stop;
        private readonly Task _produce;

        internal Restore(IAsyncEnumerable<ChunkRef> chunks, ChunkFetcher fetcher, ChunkCodec codec, CancellationToken ct)
        {
            _stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var token = _stop.Token;
            _produce = Task.Run(async () =>
            {
                try
                {
                    await foreach (var chunk in chunks.WithCancellation(token))
                        await _pipeline.Writer.WriteAsync(Task.Run(async () =>
                        {
                            var blob = await fetcher.GetOnceAsync(chunk.Tag, token);
                            var plain = ArrayPool<byte>.Shared.Rent(chunk.Length);
                            try
                            {
                                codec.Decode(blob, chunk, plain);
                                return (plain, chunk.Length);
                            }
                            catch
                            {
                                ArrayPool<byte>.Shared.Return(plain);
                                throw;
                            }
                        }, token), token);
                    _pipeline.Writer.TryComplete();
                }
                catch (Exception e)
                {
                    _pipeline.Writer.TryComplete(e);
                }
            }, CancellationToken.None);
        }

        /// <summary>Writes the whole image into <paramref name="destination"/>. The trace learns how long the writer waited
        /// for decoded chunks and for QEMU to take them, which tells a decode-bound load from one bound by QEMU.</summary>
        public async Task WriteToAsync(Stream destination, CancellationToken ct, Session.StepTrace? trace = null)
        {
            TimeSpan waitedForDecode = TimeSpan.Zero, waitedForQemu = TimeSpan.Zero;
            await foreach (var decoded in _pipeline.Reader.ReadAllAsync(ct))
            {
                long started = Stopwatch.GetTimestamp();
                var (buffer, length) = await decoded;
                long ready = Stopwatch.GetTimestamp();
                try
                {
                    await destination.WriteAsync(buffer.AsMemory(0, length), ct);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
                waitedForDecode += Stopwatch.GetElapsedTime(started, ready);
                waitedForQemu += Stopwatch.GetElapsedTime(ready);
            }
            await destination.FlushAsync(ct);
            trace?.Mark($"memory image sent (waited {waitedForDecode.TotalMilliseconds:F0} ms for decoding, {waitedForQemu.TotalMilliseconds:F0} ms for QEMU)");
        }

        /// <summary>Stops the read-ahead (QEMU failed to start, or the load failed midway) and returns its buffers.</summary>
        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _produce;
            while (_pipeline.Reader.TryRead(out var pending))
            {
                try { ArrayPool<byte>.Shared.Return((await pending).Buffer); }
                catch (Exception) { } // its failure was the load's, or the cancellation above
            }
            _stop.Dispose();
        }
    }
}
