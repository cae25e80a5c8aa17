using System.Net;
using System.Text;
using Isr.Format;
using Isr.Server.Admin;

namespace Isr.Server.Tests;

/// <summary>prune, gc, fsck and stats on a server's data, plus what must never be in the data directory.</summary>
public class MaintenanceTests : IDisposable
{
    private static readonly CancellationToken Ct = CancellationToken.None;
    private readonly ServerFixture _server;

    public MaintenanceTests() : this(new ServerFixture()) { }
    protected MaintenanceTests(ServerFixture server) => _server = server;
    protected ServerFixture Server => _server;

    /// <summary>The files in which the metadata engine keeps this deployment's rows.</summary>
    protected virtual Task<IReadOnlyList<string>> MetadataFilesAsync() =>
        Task.FromResult<IReadOnlyList<string>>([.. Directory.EnumerateFiles(_server.Data.Path, "isr.db*")]);
    public void Dispose() => _server.Dispose();

    private sealed class Later(TimeProvider clock, TimeSpan by) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => clock.GetUtcNow() + by;
    }

    /// <summary>A parcel with <paramref name="versions"/> head versions, each with fresh content of <paramref name="chunks"/> chunks.</summary>
    private Task<(ApiClient Client, TestParcel Parcel, List<TestParcel.Content> Contents, List<VersionRecord> Versions)> ParcelWithVersionsAsync(
        int versions, int chunks, string password = "pw-alice") => ParcelWithVersionsAsync(_server, versions, chunks, password);

    private static async Task<(ApiClient Client, TestParcel Parcel, List<TestParcel.Content> Contents, List<VersionRecord> Versions)> ParcelWithVersionsAsync(
        ServerFixture server, int versions, int chunks, string password = "pw-alice")
    {
        var alice = await server.AddUserAsync("alice", password);
        var client = await server.LoginAsync(alice);
        var parcel = new TestParcel("vm1", client.Secrets!);
        var contents = new List<TestParcel.Content>();
        var records = new List<VersionRecord>();
        var content = parcel.MakeContent(chunks);
        await client.UploadAsync(content.Blobs);
        using (var created = await client.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(chunks), first = parcel.Record(content, chunks) }))
        {
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            records.Add((await created.BodyAsync()).Version());
        }
        contents.Add(content);
        var (token, _) = await client.LockAsync("vm1", "site-a");
        for (int i = 1; i < versions; i++)
        {
            content = parcel.MakeContent(chunks);
            await client.UploadAsync(content.Blobs);
            var record = parcel.Record(content, chunks, parentMac: records[^1].Mac);
            using var committed = await client.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = record }, token);
            Assert.Equal(HttpStatusCode.Created, committed.StatusCode);
            records.Add((await committed.BodyAsync()).Version());
            contents.Add(content);
        }
        return (client, parcel, contents, records);
    }

    [SkippableFact]
    public async Task Prune_and_gc_reclaim_storage_but_never_a_blob_a_kept_version_references()
    {
        var (client, _, contents, _) = await ParcelWithVersionsAsync(versions: 3, chunks: 30);
        using var _c = client;
        var before = _server.Chunks.StoredBytes();

        var pruned = await _server.Maintenance().PruneAsync(keep: 1, parcel: null, owner: null, Ct);
        Assert.Equal([1L, 2L], Assert.Single(pruned).Removed);
        // within the grace period nothing goes
        var fresh = await _server.Maintenance().CollectGarbageAsync(TimeSpan.FromMinutes(60), Ct);
        Assert.Equal(0, fresh.Deleted);
        Assert.True(fresh.SparedRecent > 0);

        var report = await _server.Maintenance(new Later(_server.Clock, TimeSpan.FromHours(2))).CollectGarbageAsync(TimeSpan.FromMinutes(60), Ct);
        Assert.Equal(contents[0].Blobs.Count + contents[1].Blobs.Count, report.Deleted);
        Assert.True(_server.Chunks.StoredBytes() < before);
        Assert.All(contents[2].Blobs, b => Assert.True(_server.Chunks.Contains(b.Tag)));
        Assert.All(contents[0].Blobs, b => Assert.False(_server.Chunks.Contains(b.Tag)));
        Assert.True((await _server.Maintenance().CheckAsync(Ct)).Clean);
        // the kept version still downloads whole
        var frames = await client.DownloadAsync(contents[2].Blobs.Select(b => b.Tag));
        Assert.All(frames, f => Assert.NotNull(f.Blob));
        // a deleted blob is reported missing again to its former holder, so a client would upload it
        Assert.Equal(contents[0].Blobs.Count, (await client.MissingAsync(contents[0].Blobs.Select(b => b.Tag))).Count);
    }

    [SkippableFact]
    public async Task Gc_grace_period_protects_fresh_uploads_and_blobs_reported_present()
    {
        var (client, parcel, _, _) = await ParcelWithVersionsAsync(versions: 1, chunks: 10);
        using var _c = client;
        var pending = parcel.MakeContent(5); // uploaded for a commit in progress, referenced by no version yet
        await client.UploadAsync(pending.Blobs);

        _server.Clock.Now += TimeSpan.FromMinutes(50);
        var early = await _server.Maintenance().CollectGarbageAsync(TimeSpan.FromMinutes(60), Ct);
        Assert.Equal(0, early.Deleted);
        Assert.All(pending.Blobs, b => Assert.True(_server.Chunks.Contains(b.Tag)));

        // the client asks which are missing (none): that restarts their grace period
        Assert.Empty(await client.MissingAsync(pending.Blobs.Select(b => b.Tag)));
        _server.Clock.Now += TimeSpan.FromMinutes(50);
        Assert.Equal(0, (await _server.Maintenance().CollectGarbageAsync(TimeSpan.FromMinutes(60), Ct)).Deleted);

        _server.Clock.Now += TimeSpan.FromMinutes(61);
        var late = await _server.Maintenance().CollectGarbageAsync(TimeSpan.FromMinutes(60), Ct);
        Assert.Equal(pending.Blobs.Count, late.Deleted);
        Assert.True((await _server.Maintenance().CheckAsync(Ct)).Clean);
    }

    [SkippableFact]
    public Task A_blob_uploaded_again_and_committed_while_gc_deletes_it_is_never_lost() => UploadAndCommitDuringGcAsync(_server);

    /// <summary>gc's race with an upload and commit of the blobs it is deleting, at its last step (see
    /// <see cref="Maintenance.BeforePurge"/>): the committed version must keep every blob.</summary>
    internal static async Task UploadAndCommitDuringGcAsync(ServerFixture server)
    {
        var (client, parcel, contents, versions) = await ParcelWithVersionsAsync(server, versions: 1, chunks: 4);
        using var _c = client;
        var orphan = parcel.MakeContent(4); // uploaded, never committed: garbage once its grace period is over
        await client.UploadAsync(orphan.Blobs);
        var doomed = orphan.Blobs.Select(b => b.Tag).Except(contents[0].Blobs.Select(b => b.Tag)).ToHashSet();
        Assert.InRange(doomed.Count, 1, 16); // one parallel round of gc: every doomed blob reaches the hook together
        var (token, _) = await client.LockAsync("vm1", "site-a");
        server.Clock.Now += TimeSpan.FromMinutes(61);

        // When gc has decided on every doomed blob and is about to delete, the client uploads the same content again
        // and commits a version referencing it; then gc goes on.
        int arrived = 0;
        var allArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        HttpStatusCode? commit = null;
        var gc = new Maintenance(server.Metadata, server.ChunkStore, server.Clock)
        {
            BeforePurge = async (tag, ct) =>
            {
                Assert.Contains(tag, doomed);
                if (Interlocked.Increment(ref arrived) == doomed.Count)
                {
                    await client.UploadAsync(orphan.Blobs);
                    using var committed = await client.PostJsonAsync("/api/v1/parcels/vm1/versions",
                        new { version = parcel.Record(orphan, 4, parentMac: versions[^1].Mac) }, token);
                    commit = committed.StatusCode;
                    allArrived.SetResult();
                }
                await allArrived.Task.WaitAsync(TimeSpan.FromMinutes(2), ct); // a hang guard only
            },
        };
        await gc.CollectGarbageAsync(TimeSpan.FromMinutes(60), Ct);

        Assert.Equal(HttpStatusCode.Created, commit);
        var fsck = await server.Maintenance().CheckAsync(Ct);
        Assert.True(fsck.Clean, string.Join("; ", fsck.Problems));
        Assert.Empty(await server.ChunkStore.MissingAsync(orphan.Blobs.Select(b => b.Tag).ToList(), Ct));
    }

    [SkippableFact]
    public async Task Fsck_finds_a_corrupted_blob_and_a_missing_one_with_parcel_and_version()
    {
        var (client, _, contents, _) = await ParcelWithVersionsAsync(versions: 2, chunks: 20);
        using var _c = client;
        Assert.True((await _server.Maintenance().CheckAsync(Ct)).Clean);
        var corrupt = contents[1].ChunkTags[0];
        var missing = contents[0].ChunkTags[1];
        var path = _server.Chunks.PathOf(corrupt);
        var bytes = File.ReadAllBytes(path);
        bytes[^1] ^= 0xFF;
        File.WriteAllBytes(path, bytes);
        File.Delete(_server.Chunks.PathOf(missing));

        var report = await _server.Maintenance().CheckAsync(Ct);
        Assert.False(report.Clean);
        Assert.Equal(2, report.Problems.Count);
        Assert.Contains(new FsckProblem("alice", "vm1", 2, corrupt.ToString(), "corrupt"), report.Problems);
        Assert.Contains(new FsckProblem("alice", "vm1", 1, missing.ToString(), "missing"), report.Problems);

        // gc refuses to run over a damaged page rather than guess which blobs are unreferenced
        File.Delete(_server.Chunks.PathOf(contents[0].DiskRoot));
        await Assert.ThrowsAsync<GcRefusedException>(() => _server.Maintenance().CollectGarbageAsync(TimeSpan.Zero, Ct));
    }

    [SkippableFact]
    public async Task A_multi_level_tree_is_checked_whole_and_a_later_commit_walks_only_new_pages()
    {
        const int chunks = 2200; // three leaves under an interior root
        var (client, parcel, contents, records) = await ParcelWithVersionsAsync(versions: 1, chunks);
        using var _c = client;
        Assert.True(contents[0].PageTags.Count >= 4);
        var stats = await _server.Maintenance().StatsAsync(Ct);
        Assert.Equal(contents[0].Blobs.Select(b => b.Tag).Distinct().Count(), stats.StoredBlobs);

        // change one chunk: one new leaf and a new root; the rest is known complete
        var keys = parcel.Keys;
        var codec = new ChunkCodec(client.Secrets!.DomainSecret);
        var (changed, blob) = codec.Encode(Encoding.UTF8.GetBytes("a changed chunk"));
        var update = await ChunkListTree.UpdateAsync(contents[0].DiskRoot, chunks, new Dictionary<long, ChunkRef> { [1500] = changed },
            (tag, _) => ValueTask.FromResult(contents[0].Blobs.First(b => b.Tag == tag).Blob), keys, Ct);
        var (token, _) = await client.LockAsync("vm1", "site-a");
        var content = contents[0] with { DiskRoot = update.Root };
        var record = parcel.Record(content, chunks, parentMac: records[0].Mac);
        using (var missing = await client.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = record }, token))
        {
            Assert.Equal(HttpStatusCode.Conflict, missing.StatusCode);
            Assert.Contains(update.Root.ToString(), (await missing.BodyAsync()).GetProperty("missing").EnumerateArray().Select(e => e.GetString()));
        }
        await client.UploadAsync(update.NewPages.Select(p => (p.Tag, p.Page)));
        using (var missing = await client.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = record }, token))
            Assert.Equal([changed.Tag.ToString()], (await missing.BodyAsync()).GetProperty("missing").EnumerateArray().Select(e => e.GetString()));
        await client.UploadAsync([(changed.Tag, blob)]);
        using (var ok = await client.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = record }, token))
            Assert.Equal(HttpStatusCode.Created, ok.StatusCode);
        Assert.True((await _server.Maintenance().CheckAsync(Ct)).Clean);
    }

    [SkippableFact]
    public async Task The_data_directory_never_holds_the_password_auth_secret_kek_or_domain_secret()
    {
        const string password = "correct horse battery staple 7731";
        var (client, _, _, _) = await ParcelWithVersionsAsync(versions: 2, chunks: 20, password);
        using var _c = client;
        var keys = client.User.Keys;
        var secrets = new Dictionary<string, byte[]>
        {
            ["password"] = Encoding.UTF8.GetBytes(password),
            ["password (utf-16)"] = Encoding.Unicode.GetBytes(password),
            ["auth secret"] = keys.AuthSecret,
            ["auth secret (base64)"] = Encoding.ASCII.GetBytes(Convert.ToBase64String(keys.AuthSecret)),
            ["key-encryption key"] = keys.KeyEncryptionKey,
            ["domain secret"] = client.Secrets!.DomainSecret,
            ["session token"] = Encoding.ASCII.GetBytes(client.Token!),
        };
        // include what the engine may still hold in its write-ahead log: read every file in the directory tree
        var files = Directory.EnumerateFiles(_server.Data.Path, "*", SearchOption.AllDirectories).ToList();
        var metadataFiles = await MetadataFilesAsync();
        Assert.NotEmpty(metadataFiles);
        files.AddRange(metadataFiles);
        Assert.Contains(files, f => f.Contains($"{Path.DirectorySeparatorChar}chunks{Path.DirectorySeparatorChar}"));
        foreach (var file in files)
        {
            byte[] content;
            using (var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
            {
                content = new byte[stream.Length];
                stream.ReadExactly(content);
            }
            foreach (var (what, bytes) in secrets)
                Assert.False(content.AsSpan().IndexOf(bytes) >= 0, $"{file} contains the {what}");
        }
    }
}

/// <summary>The same tests with the metadata in PostgreSQL.</summary>
[Collection(PostgresCollection.Name)]
public sealed class MaintenanceTestsOverPostgres(PostgresServer postgres) : MaintenanceTests(ServerFixture.OverPostgres(postgres))
{
    protected override Task<IReadOnlyList<string>> MetadataFilesAsync() => postgres.DatabaseFilesAsync(Server.MetadataConnection!);
}
