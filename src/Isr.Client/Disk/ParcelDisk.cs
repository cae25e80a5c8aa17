using System.Collections.Concurrent;
using System.Diagnostics;
using Isr.BlockDevice;
using Isr.Client.Cache;
using Isr.Format;

namespace Isr.Client.Disk;

/// <summary>
/// A parcel's virtual disk as a block device: the base version's keyring (leaves loaded on demand) plus the site's
/// dirty state. Reads: written-but-unflushed plaintext → dirty chunks → base chunks (decoded-chunk LRU, then the
/// fetcher: cache → home). Writes replace whole-chunk buffers copy-on-write, so a buffer being encoded is never
/// mutated. FLUSH/FUA encode pending chunks into the site cache (ciphertext, fsynced) and journal their keys (sealed, fsynced).
/// </summary>
public sealed class ParcelDisk : IBlockDevice, IDisposable
{
    private VersionRecord _base;
    private readonly ParcelKeys _keys;
    private readonly ChunkCodec _codec;
    private readonly ChunkFetcher _fetcher;
    private DirtyJournal _journal;
    private readonly PlaintextLru _decoded = new(512);
    private ConcurrentDictionary<long, Task<ChunkRef[]>> _leaves = new();
    private readonly ConcurrentDictionary<long, byte[]> _pending = new();
    private readonly ConcurrentDictionary<long, ChunkRef> _dirty;
    private readonly SemaphoreSlim[] _chunkLocks = Enumerable.Range(0, 256).Select(_ => new SemaphoreSlim(1, 1)).ToArray();
    private readonly SemaphoreSlim _flushGate = new(1, 1);
    private readonly byte[] _zeroChunk;
    private long _guestWaitTicks, _misses;
    private readonly StallClock _stall = new();

    /// <summary>Unflushed chunks kept in memory before writes trigger a flush by themselves (64 MiB at 64 KiB chunks).</summary>
    private const int MaxPendingChunks = 1024;

    public ParcelDisk(VersionRecord baseVersion, ParcelKeys keys, ChunkCodec codec, ChunkFetcher fetcher, DirtyJournal journal)
    {
        (_base, _keys, _codec, _fetcher, _journal) = (baseVersion, keys, codec, fetcher, journal);
        _dirty = new ConcurrentDictionary<long, ChunkRef>(journal.Replayed);
        _zeroChunk = new byte[ChunkSize];
    }

    public long Size => _base.DiskSize;
    public int ChunkSize => _base.ChunkSize;
    public int PreferredBlockSize => ChunkSize;
    public long ChunkCount => _base.DiskChunks;
    public int DirtyChunks => _dirty.Keys.Union(_pending.Keys).Count();
    public long DirtyBytes => _dirty.Values.Where(c => !c.IsZeroChunk).Sum(c => (long)c.Length) + _pending.Values.Sum(b => (long)b.Length);
    /// <summary>The guest's reads' waits on fetches, summed (reads waiting side by side each count).</summary>
    public TimeSpan GuestWaitTime => TimeSpan.FromTicks(Interlocked.Read(ref _guestWaitTicks));
    /// <summary>Wall time during which at least one guest read waited on a fetch.</summary>
    public TimeSpan GuestStallTime => _stall.Stalled;
    public long Misses => Interlocked.Read(ref _misses);
    /// <summary>Called with the chunk index of every read (and partial write) the guest makes of the version's own non-zero
    /// data, what another site would have to fetch: working-set recording. Not for reads of what the guest wrote in this
    /// session: a repeated workload writes those again before it reads them, and replaying them cost the next resume
    /// link time the guest did not need (62 MiB fetched against 48 MiB by demand at 10 Mbit/s).</summary>
    public Action<long>? ChunkRead { get; set; }

    private int ChunkLength(long index) => (int)Math.Min(ChunkSize, Size - index * ChunkSize);

    /// <summary>Flushed changes against the base version: what a commit must record.</summary>
    public IReadOnlyDictionary<long, ChunkRef> FlushedChanges => _dirty;

    /// <summary>A copy of the flushed changes and the journal's length that holds them, taken together (call while the guest is paused).</summary>
    public (Dictionary<long, ChunkRef> Changes, long JournalBytes) Freeze()
    {
        _flushGate.Wait();
        try { return (new Dictionary<long, ChunkRef>(_dirty), _journal.Length); }
        finally { _flushGate.Release(); }
    }

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        CheckRange(offset, buffer.Length);
        while (buffer.Length > 0)
        {
            long index = offset / ChunkSize;
            int within = (int)(offset % ChunkSize);
            int n = Math.Min(buffer.Length, ChunkLength(index) - within);
            var plain = await GetPlaintextAsync(index, ct);
            plain.AsSpan(within, n).CopyTo(buffer.Span);
            buffer = buffer[n..];
            offset += n;
        }
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken ct)
    {
        CheckRange(offset, data.Length);
        while (data.Length > 0)
        {
            long index = offset / ChunkSize;
            int within = (int)(offset % ChunkSize);
            int n = Math.Min(data.Length, ChunkLength(index) - within);
            var piece = data[..n];
            await UpdateChunkAsync(index, (buffer) => piece.Span.CopyTo(buffer.AsSpan(within)), wholeChunk: n == ChunkLength(index), ct);
            data = data[n..];
            offset += n;
        }
        if (fua || _pending.Count > MaxPendingChunks) await FlushAsync(ct);
    }

    public async ValueTask WriteZeroesAsync(long offset, long length, bool fua, CancellationToken ct)
    {
        CheckRange(offset, length);
        while (length > 0)
        {
            long index = offset / ChunkSize;
            int within = (int)(offset % ChunkSize);
            int n = (int)Math.Min(length, ChunkLength(index) - within);
            await UpdateChunkAsync(index, buffer => buffer.AsSpan(within, n).Clear(), wholeChunk: n == ChunkLength(index), ct);
            length -= n;
            offset += n;
        }
        if (fua || _pending.Count > MaxPendingChunks) await FlushAsync(ct);
    }

    public ValueTask TrimAsync(long offset, long length, CancellationToken ct) => WriteZeroesAsync(offset, length, fua: false, ct);

    /// <summary>Copy-on-write update of one chunk, serialized per chunk so concurrent partial writes compose.</summary>
    private async ValueTask UpdateChunkAsync(long index, Action<byte[]> modify, bool wholeChunk, CancellationToken ct)
    {
        await BaseRefAsync(index, ct); // the leaf a commit will rewrite is now in the site cache, even if the network goes
        var gate = _chunkLocks[index % _chunkLocks.Length];
        await gate.WaitAsync(ct);
        try
        {
            var next = new byte[ChunkLength(index)];
            if (!wholeChunk) (await GetPlaintextAsync(index, ct)).AsSpan(0, next.Length).CopyTo(next);
            modify(next);
            _pending[index] = next;
        }
        finally
        {
            gate.Release();
        }
    }

    public async ValueTask FlushAsync(CancellationToken ct)
    {
        await _flushGate.WaitAsync(ct);
        try
        {
            var snapshot = _pending.ToArray();
            if (snapshot.Length == 0) return;
            var encoded = new KeyValuePair<long, ChunkRef>[snapshot.Length];
            await Parallel.ForAsync(0, snapshot.Length, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Environment.ProcessorCount },
                async (i, token) => encoded[i] = new(snapshot[i].Key, await EncodeToCacheAsync(snapshot[i].Value, token)));
            _journal.Append(encoded);
            for (int i = 0; i < snapshot.Length; i++)
            {
                _dirty[encoded[i].Key] = encoded[i].Value;
                // Drop the pending buffer only if no newer write replaced it meanwhile.
                _pending.TryRemove(new KeyValuePair<long, byte[]>(snapshot[i].Key, snapshot[i].Value));
            }
        }
        finally
        {
            _flushGate.Release();
        }
    }

    private async Task<ChunkRef> EncodeToCacheAsync(byte[] plaintext, CancellationToken ct)
    {
        if (ChunkCodec.IsAllZero(plaintext)) return ChunkRef.Zero(plaintext.Length);
        var (chunk, blob) = _codec.Encode(plaintext);
        // Fsynced before the journal names it: a flushed write must survive a power loss.
        await _fetcher.Space.PutDirtyAsync(chunk.Tag, blob, _fetcher.Home, "writing the guest's disk changes",
            "Writes flushed before are kept in the journal; this flush failed (the VM pauses) and is retried when the guest retries it.", ct);
        _decoded.Put(chunk.Tag, plaintext);
        return chunk;
    }

    public async ValueTask<IReadOnlyList<Extent>> MapAsync(long offset, long length, CancellationToken ct)
    {
        CheckRange(offset, length);
        var extents = new List<Extent>();
        while (length > 0)
        {
            long index = offset / ChunkSize;
            int within = (int)(offset % ChunkSize);
            int n = (int)Math.Min(length, ChunkLength(index) - within);
            bool zero = await IsZeroChunkAsync(index, ct);
            if (extents.Count > 0 && extents[^1].IsZero == zero) extents[^1] = extents[^1] with { Length = extents[^1].Length + n };
            else extents.Add(new Extent(n, zero));
            length -= n;
            offset += n;
        }
        return extents;
    }

    private async ValueTask<bool> IsZeroChunkAsync(long index, CancellationToken ct)
    {
        if (_pending.TryGetValue(index, out var plain)) return ChunkCodec.IsAllZero(plain);
        if (_dirty.TryGetValue(index, out var dirty)) return dirty.IsZeroChunk;
        return (await BaseRefAsync(index, ct)).IsZeroChunk;
    }

    /// <summary>The chunk's current plaintext; callers must not modify it.</summary>
    private async ValueTask<byte[]> GetPlaintextAsync(long index, CancellationToken ct)
    {
        if (_pending.TryGetValue(index, out var plain)) return plain;
        if (!_dirty.TryGetValue(index, out var chunk))
        {
            chunk = await BaseRefAsync(index, ct);
            if (!chunk.IsZeroChunk) ChunkRead?.Invoke(index);
        }
        if (chunk.IsZeroChunk) return chunk.Length == ChunkSize ? _zeroChunk : new byte[chunk.Length];
        var decoded = _decoded.Get(chunk.Tag);
        if (decoded != null) return decoded;
        Interlocked.Increment(ref _misses);
        long started = Stopwatch.GetTimestamp();
        _stall.Enter();
        byte[] blob;
        // A home that does not answer fails this read at once (the NBD client pauses the VM, rerror=stop) while the
        // fetch goes on; the session continues the VM when it lands, and QEMU retries the read.
        try { blob = await _fetcher.GetOrStallAsync(chunk.Tag, ct); }
        finally
        {
            _stall.Exit();
            Interlocked.Add(ref _guestWaitTicks, Stopwatch.GetElapsedTime(started).Ticks);
        }
        var result = new byte[chunk.Length];
        _codec.Decode(blob, chunk, result);
        _decoded.Put(chunk.Tag, result);
        return result;
    }

    private async ValueTask<ChunkRef> BaseRefAsync(long index, CancellationToken ct)
    {
        long leaf = index / ChunkListTree.LeafCapacity;
        var load = _leaves.GetOrAdd(leaf, l => ChunkListTree.LoadLeafAsync(_base.DiskRootTag, ChunkCount, l, _fetcher.LoadPageAsync, _keys, CancellationToken.None));
        ChunkRef[] entries;
        try { entries = await load; }
        catch
        {
            _leaves.TryRemove(new KeyValuePair<long, Task<ChunkRef[]>>(leaf, load)); // a failed load is tried again by the next read
            throw;
        }
        return entries[index % ChunkListTree.LeafCapacity];
    }

    /// <summary>Every base chunk reference in order, loading each leaf once (for hoarding and baseline copy-in).</summary>
    public async Task<IReadOnlyList<ChunkRef>> AllBaseRefsAsync(CancellationToken ct)
    {
        var refs = new List<ChunkRef>((int)ChunkCount);
        for (long leaf = 0; leaf < ChunkListTree.LeafCount(ChunkCount); leaf++)
        {
            await BaseRefAsync(leaf * ChunkListTree.LeafCapacity, ct);
            refs.AddRange(await _leaves[leaf]);
        }
        return refs;
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Size)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the {Size}-byte disk");
    }

    /// <summary>
    /// After a checkpoint committed <paramref name="committed"/> (the changes frozen at that time) as <paramref name="newBase"/>,
    /// makes it the base: the journal is rewritten for it, keeping only chunks written since the freeze.
    /// </summary>
    public async Task RebaseAsync(VersionRecord newBase, IReadOnlyDictionary<long, ChunkRef> committed, string journalPath, CancellationToken ct)
    {
        await _flushGate.WaitAsync(ct);
        try
        {
            var remaining = _dirty.Where(d => !committed.TryGetValue(d.Key, out var c) || c != d.Value).ToList();
            var journal = DirtyJournal.Rewrite(journalPath, newBase.Number, remaining, _keys);
            _journal.Dispose();
            _journal = journal;
            _base = newBase;
            _leaves = new(); // a fresh map: a leaf load of the old base still in flight cannot land in it
            foreach (var (index, chunk) in committed)
                if (_dirty.TryGetValue(index, out var now) && now == chunk) _dirty.TryRemove(index, out _);
        }
        finally
        {
            _flushGate.Release();
        }
    }

    public void Dispose() => _journal.Dispose();
}
