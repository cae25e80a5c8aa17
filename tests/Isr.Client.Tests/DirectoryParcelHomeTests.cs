using System.Text;
using Isr.Client.Cache;
using Isr.Client.Disk;
using Isr.Client.Homes;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Tests;

public sealed class DirectoryParcelHomeTests : IDisposable
{
    private const int Chunk = 8 << 10;
    private readonly TempDir _dir = new();
    private readonly DirectoryParcelHome _home;
    private readonly UserSecrets _secrets = UserSecrets.Generate();

    public DirectoryParcelHomeTests() => _home = new DirectoryParcelHome(_dir["store"]);

    public void Dispose() => _dir.Dispose();

    private sealed record Parcel(ParcelInfo Info, ParcelKeys Keys, ChunkCodec Codec, VersionRecord First, ChunkRef[] Refs, byte[] Image);

    private async Task<Parcel> NewParcelLocally(string name, int seed = 1)
    {
        var keys = ParcelKeys.Generate();
        var codec = new ChunkCodec(_secrets.DomainSecret);
        var image = TestData.Random(20 * Chunk + 100, seed);
        Array.Clear(image, 5 * Chunk, Chunk);
        string id = $"id-{name}-{Guid.NewGuid():N}";
        var (version, refs) = await Versions.BuildAsync(image, Chunk, codec, keys, _home.Chunks, parcelId: id);
        var first = (version with { CommitId = Guid.NewGuid().ToString("N"), ParentMac = "" }).Sign(keys);
        var info = new ParcelInfo(name, id, Chunk, image.Length, _secrets.WrapParcelKey(keys, id), DateTimeOffset.UtcNow);
        return new Parcel(info, keys, codec, first, refs, image);
    }

    private async Task<(Parcel Parcel, VersionRecord First)> CreateParcel(string name, int seed = 1)
    {
        var parcel = await NewParcelLocally(name, seed);
        var first = await _home.CreateParcelAsync(parcel.Info, parcel.First, default);
        return (parcel, first);
    }

    /// <summary>A child of <paramref name="parent"/> with chunk <paramref name="index"/> replaced; its blobs stored unless told otherwise.</summary>
    private async Task<(VersionRecord Version, byte[] Plaintext)> ChildVersion(Parcel parcel, VersionRecord parent, long index, int seed,
        bool storeChunk = true, bool storePages = true)
    {
        var plaintext = TestData.Random(Chunk, seed);
        var (chunk, blob) = parcel.Codec.Encode(plaintext);
        if (storeChunk) await _home.Chunks.PutAsync(chunk.Tag, blob, default);
        var update = await ChunkListTree.UpdateAsync(parent.DiskRootTag, parent.DiskChunks, new Dictionary<long, ChunkRef> { [index] = chunk },
            async (tag, ct) => (await _home.Chunks.GetAsync(tag, ct))!, parcel.Keys, default);
        if (storePages) foreach (var (tag, page) in update.NewPages) await _home.Chunks.PutAsync(tag, page, default);
        var child = (parent with
        {
            CommitId = Guid.NewGuid().ToString("N"),
            ParentMac = parent.Mac,
            DiskRoot = update.Root.ToString(),
            Created = DateTimeOffset.UtcNow,
        }).Sign(parcel.Keys);
        return (child, plaintext);
    }

    [Fact]
    public async Task InitializeThenUnlock()
    {
        Assert.False(DirectoryParcelHome.IsInitialized(_home.Root));
        await Assert.ThrowsAsync<ParcelNotFoundException>(async () => await _home.UnlockAsync("pw", default));
        var secrets = _home.Initialize("correct horse battery");
        Assert.True(DirectoryParcelHome.IsInitialized(_home.Root));

        var unlocked = await new DirectoryParcelHome(_home.Root).UnlockAsync("correct horse battery", default);
        Assert.Equal(secrets.DomainSecret, unlocked.DomainSecret);
        var parcel = ParcelKeys.Generate();
        Assert.Equal(parcel.Master, unlocked.UnwrapParcelKey(secrets.WrapParcelKey(parcel, "p"), "p").Master);

        var e = await Assert.ThrowsAsync<WrongPasswordException>(async () => await _home.UnlockAsync("correct horse batterz", default));
        Assert.Contains(_home.Root, e.Message);
        Assert.Throws<InvalidOperationException>(() => _home.Initialize("again"));

        var keyFile = File.ReadAllText(Path.Combine(_home.Root, "store.json"));
        Assert.DoesNotContain(Convert.ToBase64String(secrets.DomainSecret), keyFile);
        Assert.DoesNotContain(Convert.ToHexString(secrets.DomainSecret), keyFile, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("correct horse", keyFile);
    }

    [Fact]
    public async Task CreateParcelThenListAndGet()
    {
        var (parcel, first) = await CreateParcel("work-vm");
        Assert.Equal(1, first.Number);
        Assert.Null(first.Parent);
        Assert.False(first.Side);

        var info = await _home.GetParcelAsync("work-vm", default);
        Assert.Equal(parcel.Info.Id, info.Id);
        Assert.Equal(parcel.Info.DiskSize, info.DiskSize);
        Assert.Equal(parcel.Info.ChunkSize, info.ChunkSize);
        Assert.Equal(parcel.Info.WrappedKey, info.WrappedKey);
        Assert.Equal(parcel.Keys.Master, _secrets.UnwrapParcelKey(info.WrappedKey, info.Id).Master);

        var parcels = await _home.ListParcelsAsync(default);
        Assert.Equal(["work-vm"], parcels.Select(p => p.Name));

        var versions = await _home.ListVersionsAsync("work-vm", default);
        var only = Assert.Single(versions);
        Assert.Equal(1, only.Number);
        only.Verify(parcel.Keys, parcel.Info.Id);
        Assert.Equal(parcel.First.DiskRoot, only.DiskRoot);
        Assert.Equal(parcel.First.Mac, only.Mac);
    }

    [Fact]
    public async Task ParcelsAreListedByName()
    {
        await CreateParcel("b-parcel", 1);
        await CreateParcel("a-parcel", 2);
        Assert.Equal(["a-parcel", "b-parcel"], (await _home.ListParcelsAsync(default)).Select(p => p.Name));
    }

    [Fact]
    public async Task EmptyStoreHasNoParcels()
    {
        Assert.Empty(await _home.ListParcelsAsync(default));
        await Assert.ThrowsAsync<ParcelNotFoundException>(async () => await _home.GetParcelAsync("nope", default));
        await Assert.ThrowsAsync<ParcelNotFoundException>(async () => await _home.ListVersionsAsync("nope", default));
    }

    [Fact]
    public async Task CreatingAnExistingParcelIsAConflict()
    {
        await CreateParcel("dup");
        var again = await NewParcelLocally("dup", 2);
        await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CreateParcelAsync(again.Info, again.First, default));
        Assert.Single(await _home.ListVersionsAsync("dup", default));
    }

    [Fact]
    public async Task CreatingAParcelWithAMissingChunkIsAConflict()
    {
        var parcel = await NewParcelLocally("holey");
        var victim = parcel.Refs.First(r => !r.IsZeroChunk);
        await _home.Chunks.DeleteAsync(victim.Tag, default);
        var e = await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CreateParcelAsync(parcel.Info, parcel.First, default));
        Assert.Contains(victim.Tag.ToString(), e.Message);
        await Assert.ThrowsAsync<ParcelNotFoundException>(async () => await _home.GetParcelAsync("holey", default));
        Assert.Empty(await _home.ListParcelsAsync(default));
    }

    [Fact]
    public async Task CommitAddsAVersionAfterTheHead()
    {
        var (parcel, first) = await CreateParcel("p");
        var (child, plaintext) = await ChildVersion(parcel, first, 3, 10);
        var second = await _home.CommitAsync("p", child, default);
        Assert.Equal(2, second.Number);
        Assert.Equal(1, second.Parent);
        Assert.False(second.Side);

        var (grandchild, _) = await ChildVersion(parcel, second, 4, 11);
        var third = await _home.CommitAsync("p", grandchild, default);
        Assert.Equal(3, third.Number);
        Assert.Equal(2, third.Parent);

        var versions = await _home.ListVersionsAsync("p", default);
        Assert.Equal([1L, 2L, 3L], versions.Select(v => v.Number));
        foreach (var v in versions) v.Verify(parcel.Keys, parcel.Info.Id);
        Assert.Equal(versions[0].Mac, versions[1].ParentMac);
        Assert.Equal(versions[1].Mac, versions[2].ParentMac);

        var leaf = await ChunkListTree.LoadLeafAsync(versions[1].DiskRootTag, versions[1].DiskChunks, 0,
            async (tag, ct) => (await _home.Chunks.GetAsync(tag, ct))!, parcel.Keys, default);
        Assert.Equal(parcel.Codec.DeriveKey(plaintext), leaf[3].Key);
    }

    [Fact]
    public async Task CommitFromAnOutdatedParentIsAConflict()
    {
        var (parcel, first) = await CreateParcel("p");
        var (child, _) = await ChildVersion(parcel, first, 3, 10);
        await _home.CommitAsync("p", child, default);
        // Another site also started from version 1.
        var (rival, _) = await ChildVersion(parcel, first, 7, 12);
        await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CommitAsync("p", rival, default));
        // And a version claiming no parent at all.
        var orphan = (rival with { ParentMac = "", CommitId = "orphan" }).Sign(parcel.Keys);
        await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CommitAsync("p", orphan, default));
        Assert.Equal(2, (await _home.ListVersionsAsync("p", default)).Count);
    }

    [Fact]
    public async Task RetriedCommitReturnsTheVersionItMade()
    {
        var (parcel, first) = await CreateParcel("p");
        var (child, _) = await ChildVersion(parcel, first, 3, 10);
        var made = await _home.CommitAsync("p", child, default);
        var again = await _home.CommitAsync("p", child, default);
        Assert.Equal(made, again);
        Assert.Equal(2, (await _home.ListVersionsAsync("p", default)).Count);
    }

    [Fact]
    public async Task CommitReferencingAMissingChunkIsAConflict()
    {
        var (parcel, first) = await CreateParcel("p");
        var (child, plaintext) = await ChildVersion(parcel, first, 3, 10, storeChunk: false);
        var e = await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CommitAsync("p", child, default));
        Assert.Contains(parcel.Codec.Encode(plaintext).Ref.Tag.ToString(), e.Message);
        Assert.Single(await _home.ListVersionsAsync("p", default));
    }

    [Fact]
    public async Task CommitReferencingAMissingPageIsAConflict()
    {
        var (parcel, first) = await CreateParcel("p");
        var (child, _) = await ChildVersion(parcel, first, 3, 10, storePages: false);
        await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CommitAsync("p", child, default));
        Assert.Single(await _home.ListVersionsAsync("p", default));
    }

    [Fact]
    public async Task CommitReferencingAMissingDescriptorOrMemoryImageIsAConflict()
    {
        var (parcel, first) = await CreateParcel("p");
        var (child, _) = await ChildVersion(parcel, first, 3, 10);
        var noDescriptor = (child with { DescriptorTag = ChunkTag.Of(TestData.Random(10, 1)).ToString() }).Sign(parcel.Keys);
        await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CommitAsync("p", noDescriptor, default));

        var memoryTree = ChunkListTree.Build([parcel.Codec.Encode(TestData.Random(Chunk, 2)).Ref], parcel.Keys); // chunk never stored
        foreach (var (tag, page) in memoryTree.NewPages) await _home.Chunks.PutAsync(tag, page, default);
        var memoryMissing = (child with { MemoryRoot = memoryTree.Root.ToString(), MemoryChunks = 1, MemoryBytes = Chunk }).Sign(parcel.Keys);
        await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CommitAsync("p", memoryMissing, default));
        var memoryRootMissing = (child with { MemoryRoot = ChunkTag.Of(TestData.Random(10, 3)).ToString(), MemoryChunks = 1 }).Sign(parcel.Keys);
        await Assert.ThrowsAsync<CommitConflictException>(async () => await _home.CommitAsync("p", memoryRootMissing, default));
        Assert.Single(await _home.ListVersionsAsync("p", default));

        Assert.Equal(2, (await _home.CommitAsync("p", child, default)).Number); // the sound one goes in
    }

    [Theory]
    [InlineData("")]
    [InlineData(".hidden")]
    [InlineData("..")]
    [InlineData("../escape")]
    [InlineData("a/b")]
    [InlineData("a\\b")]
    [InlineData("sp ace")]
    [InlineData("ünïcode")]
    public void InvalidParcelNamesAreRefused(string name)
    {
        Assert.Throws<ArgumentException>(() => DirectoryParcelHome.ValidName(name));
    }

    [Fact]
    public void ValidParcelNames()
    {
        Assert.Equal("work-vm_2.0", DirectoryParcelHome.ValidName("work-vm_2.0"));
        Assert.Equal(new string('x', 64), DirectoryParcelHome.ValidName(new string('x', 64)));
        Assert.Throws<ArgumentException>(() => DirectoryParcelHome.ValidName(new string('x', 65)));
    }

    [Fact]
    public async Task InvalidNameCannotReachOutsideTheStore()
    {
        var parcel = await NewParcelLocally("x");
        await Assert.ThrowsAsync<ArgumentException>(async () => await _home.CreateParcelAsync(parcel.Info with { Name = "../outside" }, parcel.First, default));
        Assert.False(Directory.Exists(_dir["outside"]));
    }

    /// <summary>The whole site cycle over a store: open the head, write, flush, upload, commit, reopen the new head elsewhere.</summary>
    [Fact]
    public async Task SiteCycleThroughTheStore()
    {
        var (parcel, first) = await CreateParcel("cycle");
        var model = parcel.Image.ToArray();
        var siteA = new DirectoryChunkStore(_dir["siteA/cache"], durable: false);
        IReadOnlyDictionary<long, ChunkRef> changes;
        using (var disk = new ParcelDisk(first, parcel.Keys, parcel.Codec, new ChunkFetcher(siteA, _home.Chunks), DirtyJournal.Open(_dir["siteA/journal"], first.Number, parcel.Keys)))
        {
            var data = TestData.Random(3 * Chunk, 50);
            await disk.WriteAsync(2L * Chunk + 10, data, fua: false, default);
            data.CopyTo(model, 2 * Chunk + 10);
            await disk.WriteZeroesAsync(10L * Chunk, Chunk, fua: false, default);
            Array.Clear(model, 10 * Chunk, Chunk);
            await disk.FlushAsync(default);
            changes = disk.FlushedChanges.ToDictionary();
        }
        foreach (var chunk in changes.Values.Where(c => !c.IsZeroChunk))
            await _home.Chunks.PutAsync(chunk.Tag, (await siteA.GetAsync(chunk.Tag, default))!, default);
        var update = await ChunkListTree.UpdateAsync(first.DiskRootTag, first.DiskChunks, changes,
            async (tag, ct) => (await _home.Chunks.GetAsync(tag, ct))!, parcel.Keys, default);
        foreach (var (tag, page) in update.NewPages) await _home.Chunks.PutAsync(tag, page, default);
        var committed = await _home.CommitAsync("cycle", (first with
        {
            CommitId = "site-a-1", ParentMac = first.Mac, DiskRoot = update.Root.ToString(), Created = DateTimeOffset.UtcNow,
        }).Sign(parcel.Keys), default);

        var head = (await _home.ListVersionsAsync("cycle", default))[^1];
        Assert.Equal(committed.Number, head.Number);
        head.Verify(parcel.Keys, parcel.Info.Id);
        var siteB = new DirectoryChunkStore(_dir["siteB/cache"], durable: false);
        using var resumed = new ParcelDisk(head, parcel.Keys, parcel.Codec, new ChunkFetcher(siteB, _home.Chunks), DirtyJournal.Open(_dir["siteB/journal"], head.Number, parcel.Keys));
        Assert.Equal(model, await resumed.ReadAllAsync());
        Assert.Empty(resumed.FlushedChanges);
    }

    [Fact]
    public async Task Copy_to_another_home_is_incremental_and_refuses_a_diverged_copy()
    {
        var (parcel, first) = await CreateParcel("p");
        var (child, _) = await ChildVersion(parcel, first, 2, 50);
        var second = await _home.CommitAsync("p", child, default);
        var target = new DirectoryParcelHome(_dir["copy"]);
        var site = new Site.SiteIdentity("site-id", "site");

        var copied = await Portable.ParcelCopy.CopyAsync(_home, target, "p", site, null, default);
        Assert.Equal(2, copied.VersionsCopied);
        Assert.Equal(await _home.Chunks.ListAsync(default).CountAsync(), copied.BlobsCopied);
        Assert.Equal((await _home.ListVersionsAsync("p", default)).Select(v => v.Mac), (await target.ListVersionsAsync("p", default)).Select(v => v.Mac));
        var again = await Portable.ParcelCopy.CopyAsync(_home, target, "p", site, null, default);
        Assert.Equal((0, 0), (again.VersionsCopied, again.BlobsCopied));

        var (grandchild, _) = await ChildVersion(parcel, second, 7, 51);
        await _home.CommitAsync("p", grandchild, default);
        var next = await Portable.ParcelCopy.CopyAsync(_home, target, "p", site, null, default);
        Assert.Equal(1, next.VersionsCopied);
        Assert.InRange(next.BlobsCopied, 2, 4); // the changed chunk and the changed pages (leaf, maybe its parent)

        // The copy went on by itself: copying over it would lose its versions, so nothing is copied.
        var (rival, _) = await ChildVersion(parcel, (await target.ListVersionsAsync("p", default))[^1], 9, 52);
        foreach (var tag in await target.Chunks.MissingAsync(await _home.Chunks.ListAsync(default).ToListAsync(), default))
            await target.Chunks.PutAsync(tag, (await _home.Chunks.GetAsync(tag, default))!, default);
        await target.CommitAsync("p", rival, default);
        await Assert.ThrowsAsync<CommitConflictException>(() => Portable.ParcelCopy.CopyAsync(_home, target, "p", site, null, default));
    }

    [Fact]
    public async Task Opening_a_parcel_asks_for_its_record_and_its_history_at_once()
    {
        var (_, first) = await CreateParcel("p");
        var home = new HistoryFirstHome(_home);

        var opened = await Session.OpenedParcel.OpenAsync(home, _secrets, "p", default);

        Assert.Equal(first.Mac, opened.Head.Mac);
        Assert.True(home.AskedAtOnce, "the history was asked for only after the parcel's record had come back");
    }

    /// <summary>A home that answers for a parcel's record only once its history has been asked for too (or after 10 s):
    /// sequential questions show as the long wait.</summary>
    private sealed class HistoryFirstHome(IParcelHome inner) : IParcelHome
    {
        private readonly TaskCompletionSource _historyAsked = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public bool AskedAtOnce { get; private set; }
        public string Describe => inner.Describe;
        public IChunkStore Chunks => inner.Chunks;
        public ValueTask<UserSecrets> UnlockAsync(string password, CancellationToken ct) => inner.UnlockAsync(password, ct);
        public ValueTask ChangePasswordAsync(string oldPassword, string newPassword, CancellationToken ct) => inner.ChangePasswordAsync(oldPassword, newPassword, ct);
        public ValueTask<IReadOnlyList<ParcelInfo>> ListParcelsAsync(CancellationToken ct) => inner.ListParcelsAsync(ct);
        public ValueTask<VersionRecord> CreateParcelAsync(ParcelInfo parcel, VersionRecord first, CancellationToken ct) => inner.CreateParcelAsync(parcel, first, ct);
        public ValueTask<VersionRecord> CommitAsync(string name, VersionRecord version, CancellationToken ct) => inner.CommitAsync(name, version, ct);

        public async ValueTask<ParcelInfo> GetParcelAsync(string name, CancellationToken ct)
        {
            AskedAtOnce = await Task.WhenAny(_historyAsked.Task, Task.Delay(TimeSpan.FromSeconds(10), ct)) == _historyAsked.Task;
            return await inner.GetParcelAsync(name, ct);
        }

        public ValueTask<IReadOnlyList<VersionRecord>> ListVersionsAsync(string name, CancellationToken ct)
        {
            _historyAsked.TrySetResult();
            return inner.ListVersionsAsync(name, ct);
        }
    }
}
