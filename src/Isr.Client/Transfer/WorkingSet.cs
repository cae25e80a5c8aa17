using System.Buffers.Binary;
using System.Text;
using Isr.Format;

namespace Isr.Client.Transfer;

/// <summary>
/// Records, in order, the disk chunk indices the guest touches for the first time after a resume, and when: guest time
/// since `cont` (<see cref="StartClock"/>), the wall time less what the guest stalled on fetches, so a session that
/// waited records the pace the guest would have kept had it not. Thread-safe and cheap per read (one bit test); keeps at
/// most <see cref="Capacity"/> indices.
/// </summary>
public sealed class WorkingSetRecorder(long chunkCount, int capacity = WorkingSet.MaxEntries)
{
    private readonly long[] _seen = new long[(chunkCount + 63) / 64];
    private readonly List<long> _order = new();
    private readonly List<int> _touchedMs = new();
    private Func<TimeSpan>? _guestTime;
    private long _touched;

    public int Capacity => capacity;
    /// <summary>Distinct chunks touched so far (recorded or not).</summary>
    public long Touched => Interlocked.Read(ref _touched);
    /// <summary>Chunks recorded so far (at most <see cref="Capacity"/>).</summary>
    public int Recorded
    {
        get { lock (_order) return _order.Count; }
    }
    /// <summary>Called once per chunk index, on its first touch.</summary>
    public Action<long>? FirstTouch { get; set; }

    /// <summary>From now on touches are stamped with <paramref name="guestTime"/> (before: 0, the guest has not run).</summary>
    public void StartClock(Func<TimeSpan> guestTime) => Volatile.Write(ref _guestTime, guestTime);

    /// <summary>The guest read chunk <paramref name="index"/> (or part of it).</summary>
    public void Touch(long index)
    {
        if ((ulong)index >= (ulong)chunkCount) return;
        long bit = 1L << (int)(index & 63);
        ref long word = ref _seen[index >> 6];
        if ((Volatile.Read(ref word) & bit) != 0 || (Interlocked.Or(ref word, bit) & bit) != 0) return;
        Interlocked.Increment(ref _touched);
        lock (_order)
            if (_order.Count < capacity)
            {
                double ms = Volatile.Read(ref _guestTime)?.Invoke().TotalMilliseconds ?? 0;
                // Stamped under the lock, so times never go backwards along the order.
                _touchedMs.Add(Math.Max(_touchedMs.Count > 0 ? _touchedMs[^1] : 0, (int)Math.Clamp(ms, 0, int.MaxValue)));
                _order.Add(index);
            }
        FirstTouch?.Invoke(index);
    }

    public WorkingSetOrder Snapshot()
    {
        lock (_order) return new WorkingSetOrder(_order.ToArray(), _touchedMs.ToArray());
    }
}

/// <summary>A recorded working set: chunk indices in the order of first touch and, from format 2 on, when the guest
/// touched each (milliseconds of guest time after `cont`, non-decreasing; null for a format-1 record).</summary>
public sealed record WorkingSetOrder(IReadOnlyList<long> Indices, IReadOnlyList<int>? TouchedMs)
{
    public int Count => Indices.Count;
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

    public static (ChunkTag Tag, byte[] Blob) Seal(WorkingSetOrder order, ParcelKeys keys, string parcelId)
    {
        int count = Math.Min(order.Count, MaxEntries);
        if (order.TouchedMs is not { } times || times.Count != order.Count) throw new ArgumentException("a working set is sealed with its touch times", nameof(order));
        var body = new List<byte>(9 + count * 3);
        body.AddRange(Magic.ToArray());
        body.Add(2);
        Span<byte> header = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(header, (uint)count);
        body.AddRange(header.ToArray());
        long previous = 0;
        int previousMs = 0;
        for (int i = 0; i < count; i++)
        {
            long delta = order.Indices[i] - previous;
            WriteVarint(body, (ulong)((delta << 1) ^ (delta >> 63)));
            WriteVarint(body, (ulong)Math.Max(0, times[i] - previousMs));
            previous = order.Indices[i];
            previousMs = Math.Max(previousMs, times[i]);
        }
        var blob = SealedBox.Seal(keys.MetadataKey, body.ToArray(), Context, Encoding.UTF8.GetBytes(parcelId));
        return (ChunkTag.Of(blob), blob);
    }

    /// <summary>Opens format 2 (indices and times) and format 1 (indices only, written before times were recorded).</summary>
    /// <exception cref="MalformedDataException">not a working set of this parcel</exception>
    public static WorkingSetOrder Open(byte[] blob, ParcelKeys keys, string parcelId)
    {
        var body = SealedBox.Open(keys.MetadataKey, blob, Context, Encoding.UTF8.GetBytes(parcelId));
        if (body.Length < 9 || !body.AsSpan(0, 4).SequenceEqual(Magic) || body[4] is not (1 or 2)) throw new MalformedDataException("not a working-set blob");
        bool timed = body[4] == 2;
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(5));
        if (count > MaxEntries) throw new MalformedDataException("the working set is too long");
        var indices = new List<long>((int)count);
        var times = timed ? new List<int>((int)count) : null;
        int at = 9;
        long previous = 0, ms = 0;
        for (uint i = 0; i < count; i++)
        {
            ulong zigzag = ReadVarint(body, ref at);
            previous += (long)(zigzag >> 1) ^ -(long)(zigzag & 1);
            indices.Add(previous);
            if (times is null) continue;
            ms += (long)Math.Min(ReadVarint(body, ref at), int.MaxValue);
            times.Add((int)Math.Min(ms, int.MaxValue));
        }
        if (at != body.Length) throw new MalformedDataException("the working set has trailing bytes");
        return new WorkingSetOrder(indices, times);
    }

    private static void WriteVarint(List<byte> body, ulong value)
    {
        do
        {
            byte b = (byte)(value & 0x7F);
            value >>= 7;
            body.Add(value != 0 ? (byte)(b | 0x80) : b);
        } while (value != 0);
    }

    private static ulong ReadVarint(byte[] body, ref int at)
    {
        ulong value = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (at >= body.Length || shift > 63) throw new MalformedDataException("the working set is truncated");
            byte b = body[at++];
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return value;
        }
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
