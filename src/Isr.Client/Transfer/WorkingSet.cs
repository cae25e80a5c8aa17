using System.Buffers.Binary;
using System.Text;
using Isr.Format;

namespace Isr.Client.Transfer;

/// <summary>
/// Records, in order, the disk chunk indices the guest touches for the first time after a resume. Thread-safe and
/// cheap per read (one bit test); keeps at most <see cref="Capacity"/> indices.
/// </summary>
public sealed class WorkingSetRecorder(long chunkCount, int capacity = WorkingSet.MaxEntries)
{
    private readonly long[] _seen = new long[(chunkCount + 63) / 64];
    private readonly List<long> _order = new();
    private long _touched;

    public int Capacity => capacity;
    /// <summary>Distinct chunks touched so far (recorded or not).</summary>
    public long Touched => Interlocked.Read(ref _touched);
    /// <summary>Called once per chunk index, on its first touch.</summary>
    public Action<long>? FirstTouch { get; set; }

    /// <summary>The guest read chunk <paramref name="index"/> (or part of it).</summary>
    public void Touch(long index)
    {
        if ((ulong)index >= (ulong)chunkCount) return;
        long bit = 1L << (int)(index & 63);
        ref long word = ref _seen[index >> 6];
        if ((Volatile.Read(ref word) & bit) != 0 || (Interlocked.Or(ref word, bit) & bit) != 0) return;
        Interlocked.Increment(ref _touched);
        lock (_order) if (_order.Count < capacity) _order.Add(index);
        FirstTouch?.Invoke(index);
    }

    public IReadOnlyList<long> Snapshot()
    {
        lock (_order) return _order.ToArray();
    }
}

/// <summary>
/// The working set as a blob (docs/FORMAT.md, "Working set"): sealed under the parcel's metadata key, so only the
/// parcel's owner learns which chunks the guest used, and referenced from the version made at the next suspend.
/// </summary>
public static class WorkingSet
{
    public const int MaxEntries = 65536;
    private const string Context = "isr working set v1";
    private static ReadOnlySpan<byte> Magic => "ISRW"u8;

    public static (ChunkTag Tag, byte[] Blob) Seal(IReadOnlyList<long> indices, ParcelKeys keys, string parcelId)
    {
        if (indices.Count > MaxEntries) indices = indices.Take(MaxEntries).ToList();
        var body = new List<byte>(9 + indices.Count * 2);
        body.AddRange(Magic.ToArray());
        body.Add(1);
        Span<byte> count = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(count, (uint)indices.Count);
        body.AddRange(count.ToArray());
        long previous = 0;
        foreach (var index in indices)
        {
            long delta = index - previous;
            ulong zigzag = (ulong)((delta << 1) ^ (delta >> 63));
            do
            {
                byte b = (byte)(zigzag & 0x7F);
                zigzag >>= 7;
                body.Add(zigzag != 0 ? (byte)(b | 0x80) : b);
            } while (zigzag != 0);
            previous = index;
        }
        var blob = SealedBox.Seal(keys.MetadataKey, body.ToArray(), Context, Encoding.UTF8.GetBytes(parcelId));
        return (ChunkTag.Of(blob), blob);
    }

    /// <exception cref="MalformedDataException">not a working set of this parcel</exception>
    public static IReadOnlyList<long> Open(byte[] blob, ParcelKeys keys, string parcelId)
    {
        var body = SealedBox.Open(keys.MetadataKey, blob, Context, Encoding.UTF8.GetBytes(parcelId));
        if (body.Length < 9 || !body.AsSpan(0, 4).SequenceEqual(Magic) || body[4] != 1) throw new MalformedDataException("not a working-set blob");
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(5));
        if (count > MaxEntries) throw new MalformedDataException("the working set is too long");
        var indices = new List<long>((int)count);
        int at = 9;
        long previous = 0;
        for (uint i = 0; i < count; i++)
        {
            ulong zigzag = 0;
            for (int shift = 0; ; shift += 7)
            {
                if (at >= body.Length || shift > 63) throw new MalformedDataException("the working set is truncated");
                byte b = body[at++];
                zigzag |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) break;
            }
            long delta = (long)(zigzag >> 1) ^ -(long)(zigzag & 1);
            previous += delta;
            indices.Add(previous);
        }
        if (at != body.Length) throw new MalformedDataException("the working set has trailing bytes");
        return indices;
    }

    /// <summary>The recorded indices as chunk references of <paramref name="version"/>, in recorded order, loading each keyring
    /// leaf once (out-of-range indices are skipped: a stale list costs time, never correctness).</summary>
    public static async IAsyncEnumerable<PrefetchItem> ResolveAsync(IReadOnlyList<long> indices, VersionRecord version, PageLoader load, ParcelKeys keys,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
    {
        var leaves = new Dictionary<long, ChunkRef[]>();
        foreach (var index in indices)
        {
            if (index < 0 || index >= version.DiskChunks) continue;
            long leaf = index / ChunkListTree.LeafCapacity;
            if (!leaves.TryGetValue(leaf, out var entries))
                leaves[leaf] = entries = await ChunkListTree.LoadLeafAsync(version.DiskRootTag, version.DiskChunks, leaf, load, keys, ct);
            yield return new PrefetchItem(index, entries[index % ChunkListTree.LeafCapacity]);
        }
    }
}
