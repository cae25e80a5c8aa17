namespace Isr.BlockDevice;

/// <summary>A range of a device, reported by <see cref="IBlockDevice.MapAsync"/>: either data or known zeros (a hole).</summary>
public readonly record struct Extent(long Length, bool IsZero);

/// <summary>
/// A virtual disk addressed by byte offset. Knows nothing of chunks, parcels or networks, so the NBD server
/// can be tested and benchmarked over memory. Implementations must be safe for concurrent calls on
/// non-overlapping ranges (the NBD server keeps many requests in flight).
/// </summary>
public interface IBlockDevice
{
    long Size { get; }

    /// <summary>Preferred I/O granularity (e.g. the parcel's chunk size); advertised to NBD clients.</summary>
    int PreferredBlockSize { get; }

    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct);

    /// <summary>Writes data. With <paramref name="fua"/> the data is durable when the call returns.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken ct);

    ValueTask WriteZeroesAsync(long offset, long length, bool fua, CancellationToken ct);

    /// <summary>Discards a range; later reads return zeros.</summary>
    ValueTask TrimAsync(long offset, long length, CancellationToken ct);

    /// <summary>Makes every completed write durable: after it returns, the data survives a kill of the process.</summary>
    ValueTask FlushAsync(CancellationToken ct);

    /// <summary>Describes [offset, offset+length) as consecutive extents whose lengths sum to length.</summary>
    ValueTask<IReadOnlyList<Extent>> MapAsync(long offset, long length, CancellationToken ct);
}
