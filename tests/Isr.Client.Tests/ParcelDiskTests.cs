using System.Text;
using Isr.BlockDevice;
using Isr.Client.Disk;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Tests;

public sealed class ParcelDiskTests : IAsyncLifetime
{
    private DiskSetup _s = null!;
    private const int Chunk = 16 << 10;

    public async Task InitializeAsync() => _s = await DiskSetup.CreateStandardAsync();
    public Task DisposeAsync()
    {
        _s.Dispose();
        return Task.CompletedTask;
    }

    [Fact]
    public async Task GeometryFollowsTheVersion()
    {
        using var disk = _s.OpenDisk();
        Assert.Equal(_s.Image.Length, disk.Size);
        Assert.Equal(Chunk, disk.ChunkSize);
        Assert.Equal(Chunk, disk.PreferredBlockSize);
        Assert.Equal(41, disk.ChunkCount);
        Assert.Equal(0, disk.DirtyChunks);
        Assert.Equal(_s.BaseRefs, await disk.AllBaseRefsAsync(default));
    }

    [Fact]
    public async Task ReadsOfTheBaseImageEqualTheSource()
    {
        using var disk = _s.OpenDisk();
        Assert.Equal(_s.Image, await disk.ReadAllAsync());
        var rng = new Random(2);
        for (int i = 0; i < 200; i++)
        {
            long offset = rng.NextInt64(disk.Size);
            int length = (int)Math.Min(rng.Next(1, 3 * Chunk), disk.Size - offset);
            Assert.Equal(_s.Image.AsSpan((int)offset, length).ToArray(), await disk.ReadAsync(offset, length));
        }
        Assert.Equal(_s.Image[^1..], await disk.ReadAsync(disk.Size - 1, 1));
        Assert.Empty(await disk.ReadAsync(disk.Size, 0));
    }

    [Fact]
    public async Task BaseReadsAreServedFromTheCacheOnceFetched()
    {
        using (var disk = _s.OpenDisk()) await disk.ReadAllAsync();
        // Every blob the disk needed is now in the site cache: the home may go away.
        await foreach (var tag in _s.Home.ListAsync(default))
            if (_s.Cache.Contains(tag)) await _s.Home.DeleteAsync(tag, default);
        using var again = _s.OpenDisk();
        Assert.Equal(_s.Image, await again.ReadAllAsync());
    }

    [Fact]
    public async Task MissingBaseChunkIsAnIntegrityError()
    {
        var victim = _s.BaseRefs[7];
        await _s.Home.DeleteAsync(victim.Tag, default);
        using var disk = _s.OpenDisk();
        Assert.Equal(_s.Image[..Chunk], await disk.ReadAsync(0, Chunk));
        var e = await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await disk.ReadAsync(7L * Chunk + 5, 10));
        Assert.Contains(victim.Tag.ToString(), e.Message);
    }

    [Fact]
    public async Task WritesOfEveryShapeComposeAndSurviveFlushAndReopen()
    {
        var model = _s.Image.ToArray();
        var rng = new Random(3);
        using (var disk = _s.OpenDisk())
        {
            async Task Write(long offset, int length)
            {
                var data = TestData.Random(length, rng.Next());
                data.CopyTo(model, offset);
                await disk.WriteAsync(offset, data, fua: false, default);
                Assert.Equal(model, await disk.ReadAllAsync());
            }
            await Write(2L * Chunk, Chunk);                 // aligned whole chunk
            await Write(4L * Chunk, Chunk);                 // aligned whole chunk over a zero chunk
            await Write(5L * Chunk + 100, 37);              // unaligned, inside a chunk
            await Write(3L * Chunk + 1, 10);                // unaligned, inside a zero chunk
            await Write(6L * Chunk - 10, 2 * Chunk + 20);   // spanning three chunks
            await Write(disk.Size - 3000, 3000);            // exactly the partial last chunk
            await Write(disk.Size - 5000, 4000);            // spanning into the partial last chunk, not to the end
            await Write(disk.Size - 1, 1);                  // last byte
            await Write(0, 1);                              // first byte
            await Write(5L * Chunk + 120, 37);              // next to an earlier unflushed write in the same chunk
            Assert.Equal(10, disk.DirtyChunks); // 0, 2, 3, 4, 5, 6, 7, 8, 39, 40
            Assert.Empty(disk.FlushedChanges);
            await disk.FlushAsync(default);
            Assert.Equal(model, await disk.ReadAllAsync());
            Assert.Equal(10, disk.DirtyChunks);
            Assert.Equal(10, disk.FlushedChanges.Count);
            Assert.Equal(disk.Size - 40L * Chunk, disk.FlushedChanges[40].Length);
            await Write(5L * Chunk + 200, 5);               // after a flush, on top of the flushed chunk
            await disk.FlushAsync(default);
        }
        using var reopened = _s.OpenDisk();
        Assert.Equal(model, await reopened.ReadAllAsync());
        Assert.Equal(10, reopened.FlushedChanges.Count);
    }

    [Fact]
    public async Task RandomWritesMatchAModel()
    {
        var model = _s.Image.ToArray();
        var rng = new Random(4);
        using (var disk = _s.OpenDisk())
        {
            for (int i = 0; i < 150; i++)
            {
                long offset = rng.NextInt64(disk.Size);
                int length = (int)Math.Min(rng.Next(1, 2 * Chunk + 100), disk.Size - offset);
                var data = TestData.Random(length, i);
                data.CopyTo(model, offset);
                await disk.WriteAsync(offset, data, fua: false, default);
                if (i % 25 == 0) await disk.FlushAsync(default);
                if (i % 10 == 0)
                {
                    long at = rng.NextInt64(disk.Size);
                    int n = (int)Math.Min(rng.Next(1, 3 * Chunk), disk.Size - at);
                    Assert.Equal(model.AsSpan((int)at, n).ToArray(), await disk.ReadAsync(at, n));
                }
            }
            Assert.Equal(model, await disk.ReadAllAsync());
            await disk.FlushAsync(default);
        }
        using var reopened = _s.OpenDisk();
        Assert.Equal(model, await reopened.ReadAllAsync());
    }

    [Theory]
    [InlineData(5)]    // a base chunk with data
    [InlineData(3)]    // a zero chunk
    [InlineData(40)]   // the partial last chunk
    public async Task ConcurrentPartialWritesToOneChunkCompose(int index)
    {
        var model = _s.Image.ToArray();
        long start = (long)index * Chunk;
        int length = (int)Math.Min(Chunk, _s.Image.Length - start);
        const int piece = 40;
        int pieces = length / piece;
        using (var disk = _s.OpenDisk())
        {
            for (int round = 0; round < 3; round++)
            {
                var tasks = Enumerable.Range(0, pieces).Select(p => Task.Run(async () =>
                {
                    var data = TestData.Random(piece, round * 100_000 + p);
                    await disk.WriteAsync(start + p * piece, data, fua: false, default);
                    if (p % 16 == 0) await disk.FlushAsync(default); // flushes racing with writes
                })).ToList();
                for (int p = 0; p < pieces; p++) TestData.Random(piece, round * 100_000 + p).CopyTo(model, start + p * piece);
                await Task.WhenAll(tasks);
                Assert.Equal(model, await disk.ReadAllAsync());
            }
            await disk.FlushAsync(default);
        }
        using var reopened = _s.OpenDisk();
        Assert.Equal(model, await reopened.ReadAllAsync());
    }

    [Fact]
    public async Task ConcurrentWritesToManyChunksWithFlushes()
    {
        var model = _s.Image.ToArray();
        using (var disk = _s.OpenDisk())
        {
            // Each task owns a disjoint 1000-byte stripe that crosses chunk boundaries at various places.
            int stripes = (int)(disk.Size / 1000);
            var tasks = Enumerable.Range(0, stripes).Select(i => Task.Run(async () =>
            {
                var data = TestData.Random(1000, 500 + i);
                await disk.WriteAsync(i * 1000L, data, fua: i % 50 == 0, default);
            })).ToList();
            for (int i = 0; i < stripes; i++) TestData.Random(1000, 500 + i).CopyTo(model, i * 1000L);
            await Task.WhenAll(tasks);
            await disk.FlushAsync(default);
            Assert.Equal(model, await disk.ReadAllAsync());
        }
        using var reopened = _s.OpenDisk();
        Assert.Equal(model, await reopened.ReadAllAsync());
    }

    [Fact]
    public async Task RestartSeesFlushedWritesButNotUnflushedOnes()
    {
        var flushed = TestData.Random(5000, 5);
        var unflushed = TestData.Random(5000, 6);
        using (var disk = _s.OpenDisk())
        {
            await disk.WriteAsync(1000, flushed, fua: false, default);
            await disk.FlushAsync(default);
            await disk.WriteAsync(9L * Chunk + 7, unflushed, fua: false, default);
            Assert.Equal(unflushed, await disk.ReadAsync(9L * Chunk + 7, 5000));
            // The process is killed here: no flush, no orderly shutdown.
        }
        using var reopened = _s.OpenDisk();
        Assert.Equal(flushed, await reopened.ReadAsync(1000, 5000));
        Assert.Equal(_s.Image.AsSpan(9 * Chunk, 2 * Chunk).ToArray(), await reopened.ReadAsync(9L * Chunk, 2 * Chunk));
        var expected = _s.Image.ToArray();
        flushed.CopyTo(expected, 1000);
        Assert.Equal(expected, await reopened.ReadAllAsync());
        Assert.Equal([0L], reopened.FlushedChanges.Keys);
    }

    [Fact]
    public async Task FuaWriteIsDurableWithoutAFlush()
    {
        var data = TestData.Random(100, 7);
        using (var disk = _s.OpenDisk()) await disk.WriteAsync(2L * Chunk + 50, data, fua: true, default);
        using var reopened = _s.OpenDisk();
        Assert.Equal(data, await reopened.ReadAsync(2L * Chunk + 50, 100));
    }

    [Fact]
    public async Task FlushWithNothingPendingWritesNoRecord()
    {
        using (var disk = _s.OpenDisk())
        {
            await disk.FlushAsync(default);
            await disk.ReadAllAsync();
            await disk.FlushAsync(default);
        }
        Assert.Equal(13, new FileInfo(_s.JournalPath).Length); // header only
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(50)]
    [InlineData(105)] // the whole last record (4-byte length + 104-byte box) but the first 3 bytes
    public async Task TornJournalTailIsIgnoredAndOverwritten(int cut)
    {
        var first = TestData.Random(300, 8);
        var second = TestData.Random(300, 9);
        using (var disk = _s.OpenDisk())
        {
            await disk.WriteAsync(Chunk + 10, first, fua: false, default);
            await disk.FlushAsync(default);
            await disk.WriteAsync(2L * Chunk + 10, second, fua: false, default);
            await disk.FlushAsync(default);
        }
        long length = new FileInfo(_s.JournalPath).Length;
        using (var file = new FileStream(_s.JournalPath, FileMode.Open)) file.SetLength(length - cut);

        var third = TestData.Random(300, 10);
        using (var disk = _s.OpenDisk())
        {
            Assert.Equal(first, await disk.ReadAsync(Chunk + 10, 300));
            Assert.Equal(_s.Image.AsSpan(2 * Chunk + 10, 300).ToArray(), await disk.ReadAsync(2L * Chunk + 10, 300));
            Assert.Equal([1L], disk.FlushedChanges.Keys);
            await disk.WriteAsync(3L * Chunk, third, fua: true, default);
        }
        using var again = _s.OpenDisk();
        Assert.Equal(first, await again.ReadAsync(Chunk + 10, 300));
        Assert.Equal(third, await again.ReadAsync(3L * Chunk, 300));
        Assert.Equal([1L, 3L], again.FlushedChanges.Keys.Order());
    }

    [Fact]
    public async Task GarbageAfterTheLastRecordIsIgnored()
    {
        var data = TestData.Random(300, 11);
        using (var disk = _s.OpenDisk())
        {
            await disk.WriteAsync(Chunk, data, fua: true, default);
        }
        using (var file = new FileStream(_s.JournalPath, FileMode.Append)) file.Write(TestData.Random(200, 12));
        using var reopened = _s.OpenDisk();
        Assert.Equal(data, await reopened.ReadAsync(Chunk, 300));
        Assert.Single(reopened.FlushedChanges);
    }

    [Fact]
    public async Task JournalRecordsAreSealedUnderTheParcelKey()
    {
        using (var disk = _s.OpenDisk()) await disk.WriteAsync(Chunk, TestData.Random(300, 13), fua: true, default);
        // Opened with another parcel's keys, the records do not authenticate and are not applied.
        var otherKeys = ParcelKeys.Generate();
        using var journal = DirtyJournal.Open(_s.JournalPath, _s.Base.Number, otherKeys);
        Assert.Empty(journal.Replayed);
    }

    [Fact]
    public async Task JournalOfAnotherBaseVersionIsRefused()
    {
        using (var disk = _s.OpenDisk()) await disk.WriteAsync(0, new byte[] { 1 }, fua: true, default);
        Assert.Equal(_s.Base.Number, DirtyJournal.PeekBaseVersion(_s.JournalPath));
        Assert.Null(DirtyJournal.PeekBaseVersion(_s.Dir["nothing-here"]));
        Assert.Throws<MalformedDataException>(() => DirtyJournal.Open(_s.JournalPath, _s.Base.Number + 1, _s.Keys));
        File.WriteAllBytes(_s.Dir["not-a-journal"], "hello, world!!"u8.ToArray());
        Assert.Throws<MalformedDataException>(() => DirtyJournal.Open(_s.Dir["not-a-journal"], 1, _s.Keys));
        Assert.Null(DirtyJournal.PeekBaseVersion(_s.Dir["not-a-journal"]));
    }

    [Fact]
    public async Task WriteEmptyDiscardsLocalChanges()
    {
        using (var disk = _s.OpenDisk()) await disk.WriteAsync(0, TestData.Random(100, 14), fua: true, default);
        DirtyJournal.WriteEmpty(_s.JournalPath, _s.Base.Number);
        using var reopened = _s.OpenDisk();
        Assert.Empty(reopened.FlushedChanges);
        Assert.Equal(_s.Image, await reopened.ReadAllAsync());
    }

    private static List<Extent> ExpectedExtents(byte[] image, int chunkSize, long offset, long length)
    {
        var extents = new List<Extent>();
        while (length > 0)
        {
            long index = offset / chunkSize;
            long chunkEnd = Math.Min((index + 1) * chunkSize, image.Length);
            int n = (int)Math.Min(length, chunkEnd - offset);
            bool zero = ChunkCodec.IsAllZero(image.AsSpan((int)(index * chunkSize), (int)(chunkEnd - index * chunkSize)));
            if (extents.Count > 0 && extents[^1].IsZero == zero) extents[^1] = extents[^1] with { Length = extents[^1].Length + n };
            else extents.Add(new Extent(n, zero));
            offset += n;
            length -= n;
        }
        return extents;
    }

    [Fact]
    public async Task MapReportsZeroChunksAsHoles()
    {
        using var disk = _s.OpenDisk();
        var map = await disk.MapAsync(0, disk.Size, default);
        Assert.Equal(disk.Size, map.Sum(e => e.Length));
        Assert.Equal(
        [
            new Extent(3L * Chunk, false), new Extent(2L * Chunk, true), new Extent(5L * Chunk, false), new Extent(Chunk, true),
            new Extent(9L * Chunk, false), new Extent(Chunk, true), new Extent(19L * Chunk + 3000, false),
        ], map);
        Assert.Equal([new Extent(Chunk - 100, true), new Extent(200, false)], await disk.MapAsync(4L * Chunk + 100, Chunk - 100 + 200, default));
        Assert.Equal([new Extent(10, true)], await disk.MapAsync(3L * Chunk + 5, 10, default));
        Assert.Empty(await disk.MapAsync(0, 0, default));

        var rng = new Random(15);
        for (int i = 0; i < 50; i++)
        {
            long offset = rng.NextInt64(disk.Size);
            long length = rng.NextInt64(disk.Size - offset + 1);
            Assert.Equal(ExpectedExtents(_s.Image, Chunk, offset, length), await disk.MapAsync(offset, length, default));
        }
    }

    [Fact]
    public async Task MapFollowsWritesAndZeroes()
    {
        var model = _s.Image.ToArray();
        using (var disk = _s.OpenDisk())
        {
            await disk.WriteAsync(3L * Chunk + 7, new byte[] { 9 }, fua: false, default);   // data into a zero chunk
            model[3 * Chunk + 7] = 9;
            await disk.WriteZeroesAsync(8L * Chunk, Chunk, fua: false, default);             // a whole data chunk zeroed
            Array.Clear(model, 8 * Chunk, Chunk);
            await disk.WriteAsync(20L * Chunk, new byte[Chunk], fua: false, default);        // zeros written as data
            Assert.Equal(ExpectedExtents(model, Chunk, 0, model.Length), await disk.MapAsync(0, disk.Size, default));
            await disk.FlushAsync(default);
            Assert.Equal(ExpectedExtents(model, Chunk, 0, model.Length), await disk.MapAsync(0, disk.Size, default));
            Assert.True(disk.FlushedChanges[8].IsZeroChunk);
            Assert.True(disk.FlushedChanges[20].IsZeroChunk);
            Assert.False(disk.FlushedChanges[3].IsZeroChunk);
        }
        using var reopened = _s.OpenDisk();
        var map = await reopened.MapAsync(0, reopened.Size, default);
        Assert.Equal(ExpectedExtents(model, Chunk, 0, model.Length), map);
        Assert.Contains(new Extent(Chunk, true), map);
        Assert.Equal(model, await reopened.ReadAllAsync());
    }

    [Fact]
    public async Task WriteZeroesAndTrimGiveZeros()
    {
        var model = _s.Image.ToArray();
        using (var disk = _s.OpenDisk())
        {
            await disk.WriteZeroesAsync(Chunk + 100, 3L * Chunk, fua: false, default);        // unaligned, spanning
            Array.Clear(model, Chunk + 100, 3 * Chunk);
            await disk.TrimAsync(13L * Chunk - 1, 2, default);                                 // two bytes across a boundary
            Array.Clear(model, 13 * Chunk - 1, 2);
            await disk.TrimAsync(30L * Chunk, 2L * Chunk, default);                            // aligned whole chunks
            Array.Clear(model, 30 * Chunk, 2 * Chunk);
            await disk.WriteZeroesAsync(disk.Size - 4000, 4000, fua: true, default);           // into the partial last chunk
            Array.Clear(model, model.Length - 4000, 4000);
            Assert.Equal(model, await disk.ReadAllAsync());
            Assert.Equal(new byte[3 * Chunk], await disk.ReadAsync(Chunk + 100, 3 * Chunk));
            Assert.True(disk.FlushedChanges[30].IsZeroChunk);
            Assert.True(disk.FlushedChanges[40].IsZeroChunk);
            Assert.Equal(3000, disk.FlushedChanges[40].Length);
        }
        using var reopened = _s.OpenDisk();
        Assert.Equal(model, await reopened.ReadAllAsync());
        Assert.Equal(new byte[3000], await reopened.ReadAsync(reopened.Size - 3000, 3000));
    }

    [Fact]
    public async Task WritesAfterZeroingReadBackTheirData()
    {
        using var disk = _s.OpenDisk();
        await disk.TrimAsync(5L * Chunk, Chunk, default);
        await disk.FlushAsync(default);
        var data = TestData.Random(10, 16);
        await disk.WriteAsync(5L * Chunk + 100, data, fua: true, default);
        var expected = new byte[Chunk];
        data.CopyTo(expected, 100);
        Assert.Equal(expected, await disk.ReadAsync(5L * Chunk, Chunk));
    }

    [Fact]
    public async Task OutOfRangeRequestsAreRefused()
    {
        using var disk = _s.OpenDisk();
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.ReadAsync(disk.Size - 1, 2));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.ReadAsync(-1, 1));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.WriteAsync(disk.Size, new byte[1], false, default));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.WriteZeroesAsync(0, disk.Size + 1, false, default));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.TrimAsync(0, -1, default));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.MapAsync(1, disk.Size, default));
        Assert.Equal(0, disk.DirtyChunks);
    }

    [Fact]
    public async Task DirtyAccounting()
    {
        using var disk = _s.OpenDisk();
        await disk.WriteAsync(0, new byte[] { 1 }, fua: false, default);
        await disk.WriteAsync(Chunk, new byte[] { 1 }, fua: false, default);
        Assert.Equal(2, disk.DirtyChunks);
        Assert.Equal(2L * Chunk, disk.DirtyBytes);
        await disk.FlushAsync(default);
        Assert.Equal(2, disk.DirtyChunks);
        Assert.Equal(2L * Chunk, disk.DirtyBytes);
        await disk.WriteZeroesAsync(0, Chunk, fua: false, default);
        await disk.FlushAsync(default);
        Assert.Equal(2, disk.DirtyChunks);
        Assert.Equal(Chunk, disk.DirtyBytes); // a zero chunk stores nothing
    }

    [Fact]
    public async Task FlushedChunksAreEncodedIntoTheCacheWithKeysThatDecodeThem()
    {
        var data = TestData.Random(Chunk, 17);
        using var disk = _s.OpenDisk();
        await disk.WriteAsync(6L * Chunk, data, fua: true, default);
        var chunk = disk.FlushedChanges[6];
        Assert.Equal(_s.Codec.DeriveKey(data), chunk.Key);
        var blob = await _s.Cache.GetAsync(chunk.Tag, default);
        Assert.NotNull(blob);
        var plain = new byte[Chunk];
        _s.Codec.Decode(blob, chunk, plain);
        Assert.Equal(data, plain);
        Assert.False(_s.Home.Contains(chunk.Tag)); // the home only learns of it at commit
    }

    /// <summary>Nothing the site writes to disk holds plaintext: not the cache (ciphertext), not the journal (sealed keys).</summary>
    [Fact]
    public async Task NoPlaintextOrKeysRestOnDisk()
    {
        var marker = Encoding.ASCII.GetBytes("ISR-PLAINTEXT-MARKER-do-not-leak-7f3a9c");
        // A base chunk holding the marker in random data (stored, not compressed).
        var image = TestData.Random(8 * Chunk + 500, 18);
        marker.CopyTo(image, 2 * Chunk + 1234);
        using var s = await DiskSetup.CreateAsync(image, Chunk);

        ChunkRef[] dirtyRefs;
        using (var disk = s.OpenDisk())
        {
            await disk.ReadAllAsync(); // fills the cache with base chunks and pages
            var payload = TestData.Random(Chunk, 19);
            marker.CopyTo(payload, 77);
            await disk.WriteAsync(5L * Chunk, payload, fua: false, default);             // whole chunk of random data with the marker
            await disk.WriteAsync(6L * Chunk + 3, marker, fua: false, default);           // marker into a base chunk
            var text = new byte[Chunk];
            for (int i = 0; i + marker.Length <= Chunk; i += marker.Length) marker.CopyTo(text, i);
            await disk.WriteAsync(7L * Chunk, text, fua: false, default);                 // compressible: marker repeated
            await disk.FlushAsync(default);
            dirtyRefs = disk.FlushedChanges.Values.ToArray();
        }
        Assert.Equal(3, dirtyRefs.Length);

        var secrets = new List<(string What, byte[] Bytes)> { ("marker", marker) };
        foreach (var chunk in dirtyRefs.Concat(s.BaseRefs).Where(c => !c.IsZeroChunk)) secrets.Add(("chunk key", chunk.Key.Hash.ToArray()));
        secrets.Add(("journal key", s.Keys.JournalKey));
        secrets.Add(("page key", s.Keys.PageKey));

        Assert.NotEqual(-1, File.ReadAllBytes(s.SourcePath).AsSpan().IndexOf(marker)); // the scan can see it where it is
        var files = Directory.EnumerateFiles(s.Dir.Path, "*", SearchOption.AllDirectories).Where(f => f != s.SourcePath).ToList();
        Assert.Contains(files, f => f == s.JournalPath);
        Assert.True(files.Count(f => f.StartsWith(s.Cache.Root)) >= 8);
        foreach (var file in files)
        {
            var bytes = File.ReadAllBytes(file);
            foreach (var (what, secret) in secrets)
                Assert.True(bytes.AsSpan().IndexOf(secret) == -1, $"{what} found in {Path.GetRelativePath(s.Dir.Path, file)}");
        }
    }

    [Fact]
    public async Task DisksSpanningSeveralKeyringLeaves()
    {
        const int small = 4096;
        var image = TestData.Random(2100 * small + 17, 20);
        Array.Clear(image, 1023 * small, 3 * small); // zero chunks across the leaf boundary
        using var s = await DiskSetup.CreateAsync(image, small);
        var model = image.ToArray();
        using (var disk = s.OpenDisk())
        {
            Assert.Equal(2101, disk.ChunkCount);
            Assert.Equal(image, await disk.ReadAllAsync());
            Assert.Equal(s.BaseRefs, await disk.AllBaseRefsAsync(default));
            Assert.Equal([new Extent(small * 1023L, false), new Extent(3 * small, true), new Extent(small, false)],
                (await disk.MapAsync(0, 1027L * small, default)));
            var data = TestData.Random(3 * small, 21);
            data.CopyTo(model, 1023L * small + 5);
            await disk.WriteAsync(1023L * small + 5, data, fua: false, default);
            data.CopyTo(model, 2048L * small - 2);
            await disk.WriteAsync(2048L * small - 2, data, fua: true, default);
            Assert.Equal(model, await disk.ReadAllAsync());
            Assert.Equal([new Extent(1027L * small, false)], await disk.MapAsync(0, 1027L * small, default));
        }
        using var reopened = s.OpenDisk();
        Assert.Equal(model, await reopened.ReadAllAsync());
    }

    /// <summary>A keyring page the home cannot serve right now (a network error, a blob not yet uploaded) fails the reads
    /// that need it, but is tried again by later reads rather than failing that range until restart.</summary>
    [Fact]
    public async Task FailedKeyringLeafLoadIsRetried()
    {
        const int small = 4096;
        var image = TestData.Random(2100 * small, 22);
        using var s = await DiskSetup.CreateAsync(image, small);
        var root = ChunkListPage.Parse((await s.Home.GetAsync(s.Base.DiskRootTag, default))!);
        var leafTag = root.Tags[1];
        var leafPage = (await s.Home.GetAsync(leafTag, default))!;
        await s.Home.DeleteAsync(leafTag, default);

        using var disk = s.OpenDisk();
        Assert.Equal(image[..small], await disk.ReadAsync(0, small)); // leaf 0 is fine
        var e = await Assert.ThrowsAsync<ChunkIntegrityException>(async () => await disk.ReadAsync(1500L * small, small));
        Assert.Contains(leafTag.ToString(), e.Message);

        await s.Home.PutAsync(leafTag, leafPage, default);
        Assert.Equal(image.AsSpan(1500 * small, small).ToArray(), await disk.ReadAsync(1500L * small, small));
        Assert.Equal(image, await disk.ReadAllAsync());
    }

    /// <summary>A checkpoint commits the changes frozen at some point; writes made since stay dirty on top of the new base.</summary>
    [Fact]
    public async Task RebaseOntoTheCommittedVersionKeepsLaterWrites()
    {
        var model = _s.Image.ToArray();
        async Task Write(ParcelDisk disk, long offset, int length, int seed)
        {
            var data = TestData.Random(length, seed);
            data.CopyTo(model, offset);
            await disk.WriteAsync(offset, data, fua: false, default);
        }
        VersionRecord v2;
        using (var disk = _s.OpenDisk())
        {
            await disk.ReadAllAsync(); // every base leaf loaded
            await Write(disk, 2L * Chunk + 5, 100, 30);
            await Write(disk, 7L * Chunk, Chunk, 31);
            await disk.FlushAsync(default);
            var frozen = disk.FlushedChanges.ToDictionary();
            await Write(disk, 7L * Chunk + 10, 10, 32); // rewrites a frozen chunk after the freeze
            await Write(disk, 9L * Chunk, 10, 33);
            await disk.FlushAsync(default);

            foreach (var chunk in frozen.Values) await _s.Home.PutAsync(chunk.Tag, (await _s.Cache.GetAsync(chunk.Tag, default))!, default);
            var update = await ChunkListTree.UpdateAsync(_s.Base.DiskRootTag, _s.Base.DiskChunks, frozen,
                async (tag, ct) => (await _s.Home.GetAsync(tag, ct))!, _s.Keys, default);
            foreach (var (tag, page) in update.NewPages) await _s.Home.PutAsync(tag, page, default);
            v2 = (_s.Base with { Number = 2, Parent = 1, DiskRoot = update.Root.ToString() }).Sign(_s.Keys);

            await disk.RebaseAsync(v2, frozen, _s.JournalPath, default);
            Assert.Equal([7L, 9L], disk.FlushedChanges.Keys.Order());
            Assert.Equal(model, await disk.ReadAllAsync()); // chunk 2 now comes from the new base's keyring
        }
        Assert.Equal(2, DirtyJournal.PeekBaseVersion(_s.JournalPath));
        Assert.Throws<MalformedDataException>(() => _s.OpenDisk());
        using var reopened = _s.OpenDisk(v2);
        Assert.Equal([7L, 9L], reopened.FlushedChanges.Keys.Order());
        Assert.Equal(model, await reopened.ReadAllAsync());
    }

    [Fact]
    public async Task ZeroLengthDisk()
    {
        using var s = await DiskSetup.CreateAsync([], Chunk);
        Assert.True(s.Base.DiskRootTag.IsZeroChunk);
        using var disk = s.OpenDisk();
        Assert.Equal(0, disk.Size);
        Assert.Empty(await disk.ReadAllAsync());
        Assert.Empty(await disk.MapAsync(0, 0, default));
        Assert.Empty(await disk.AllBaseRefsAsync(default));
        await disk.FlushAsync(default);
    }
}

public class StallClockTests
{
    [Fact]
    public void ReadsWaitingSideBySideCountOnceAndAStallInProgressCountsUpToNow()
    {
        long now = 0, second = System.Diagnostics.Stopwatch.Frequency;
        var clock = new Isr.Client.Disk.StallClock(() => now);
        clock.Enter();                     // read A waits from 0
        now = 1 * second; clock.Enter();   // read B from 1
        now = 3 * second; clock.Exit();    // A done at 3
        now = 4 * second; clock.Exit();    // B done at 4: stalled 0..4, though the waits sum to 6
        Assert.Equal(4, clock.Stalled.TotalSeconds, 6);
        now = 10 * second; clock.Enter();  // idle 4..10 does not count
        now = 12 * second;
        Assert.Equal(6, clock.Stalled.TotalSeconds, 6);
        clock.Exit();
        now = 20 * second;
        Assert.Equal(6, clock.Stalled.TotalSeconds, 6);
    }
}
