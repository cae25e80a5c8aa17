using System.Collections.Concurrent;

namespace Isr.BlockDevice;

/// <summary>
/// A sparse in-memory disk for tests and benchmarks: 64 KiB pages allocated on first write, unallocated
/// pages read as zeros and map as holes. Safe for concurrent calls on non-overlapping ranges.
/// </summary>
public sealed class MemoryBlockDevice : IBlockDevice
{
    public const int PageSize = 64 * 1024;

    private readonly ConcurrentDictionary<long, byte[]> _pages = new();

    public MemoryBlockDevice(long size, int preferredBlockSize = PageSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(preferredBlockSize);
        Size = size;
        PreferredBlockSize = preferredBlockSize;
    }

    public long Size { get; }

    public int PreferredBlockSize { get; }

    /// <summary>Number of pages holding data (for tests of sparseness).</summary>
    public int AllocatedPages => _pages.Count;

    /// <summary>Number of FlushAsync calls (lets tests see that FLUSH and FUA reach the device).</summary>
    public int FlushCount => Volatile.Read(ref _flushCount);

    private int _flushCount;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        CheckRange(offset, buffer.Length);
        Span<byte> span = buffer.Span;
        for (int done = 0, count; done < span.Length; done += count)
        {
            (long page, int inPage) = Locate(offset + done);
            count = Math.Min(PageSize - inPage, span.Length - done);
            Span<byte> target = span.Slice(done, count);
            if (_pages.TryGetValue(page, out var data)) data.AsSpan(inPage, count).CopyTo(target);
            else target.Clear();
        }
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken ct)
    {
        CheckRange(offset, data.Length);
        ReadOnlySpan<byte> span = data.Span;
        for (int done = 0, count; done < span.Length; done += count)
        {
            (long page, int inPage) = Locate(offset + done);
            count = Math.Min(PageSize - inPage, span.Length - done);
            span.Slice(done, count).CopyTo(_pages.GetOrAdd(page, static _ => new byte[PageSize]).AsSpan(inPage, count));
        }
        if (fua) Interlocked.Increment(ref _flushCount);
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteZeroesAsync(long offset, long length, bool fua, CancellationToken ct) => Discard(offset, length);

    public ValueTask TrimAsync(long offset, long length, CancellationToken ct) => Discard(offset, length);

    public ValueTask FlushAsync(CancellationToken ct)
    {
        Interlocked.Increment(ref _flushCount);
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<Extent>> MapAsync(long offset, long length, CancellationToken ct)
    {
        CheckRange(offset, length);
        var extents = new List<Extent>();
        for (long done = 0, count; done < length; done += count)
        {
            (long page, int inPage) = Locate(offset + done);
            count = Math.Min(PageSize - inPage, length - done);
            bool zero = !_pages.ContainsKey(page);
            if (extents.Count > 0 && extents[^1].IsZero == zero)
                extents[^1] = extents[^1] with { Length = extents[^1].Length + count };
            else
                extents.Add(new Extent(count, zero));
        }
        return new ValueTask<IReadOnlyList<Extent>>(extents);
    }

    private ValueTask Discard(long offset, long length)
    {
        CheckRange(offset, length);
        for (long done = 0, count; done < length; done += count)
        {
            (long page, int inPage) = Locate(offset + done);
            count = Math.Min(PageSize - inPage, length - done);
            if (count == PageSize) _pages.TryRemove(page, out _);
            else if (_pages.TryGetValue(page, out var data)) data.AsSpan(inPage, (int)count).Clear();
        }
        return ValueTask.CompletedTask;
    }

    private static (long Page, int OffsetInPage) Locate(long position) => (position / PageSize, (int)(position % PageSize));

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"Range {offset}+{length} is outside the {Size}-byte device.");
    }
}
