using System.Net;
using System.Text.Json;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Isr.Format;
using Isr.Storage;
using Isr.Storage.S3;
using Isr.Storage.Tests.Services;

namespace Isr.Server.Tests;

/// <summary>The server with its chunks in a real Ceph radosgw (<c>Isr:Chunks = s3://…</c>): uploads, downloads and
/// commits through the API; then the <c>isr-server</c> CLI (a separate process, credentials from the environment)
/// collects garbage and checks integrity against the bucket, without keys.</summary>
[Collection(DistributedEnginesCollection.Name)]
public sealed class S3ServerTests(CephCluster ceph) : IDisposable
{
    private const string Bucket = "isr-server-tests";
    private static readonly CancellationToken Ct = CancellationToken.None;
    private readonly string _prefix = $"t{Guid.NewGuid():N}";
    private ServerFixture? _server;

    public void Dispose() => _server?.Dispose();

    /// <summary>The URL the CLI gets: no credentials in it (they come from the environment).</summary>
    private string ChunksUrl => $"s3://{Bucket}/{_prefix}?endpoint={Uri.EscapeDataString(ceph.Endpoint.ToString())}";

    private Dictionary<string, string> Credentials => new() { ["AWS_ACCESS_KEY_ID"] = ceph.AccessKey, ["AWS_SECRET_ACCESS_KEY"] = ceph.SecretKey };

    private Task<(int Code, string Out, string Err)> CliAsync(params string[] args) =>
        ServerProcess.RunToEndAsync(Credentials, [.. args, "--data", _server!.Data.Path, "--chunks", ChunksUrl]);

    [SkippableFact]
    public async Task A_blob_uploaded_again_and_committed_while_gc_deletes_it_is_never_lost()
    {
        ceph.SkipIfUnavailable();
        _server = new ServerFixture(chunks: $"{ChunksUrl}&access_key={ceph.AccessKey}&secret_key={ceph.SecretKey}");
        await MaintenanceTests.UploadAndCommitDuringGcAsync(_server);
    }

    [SkippableFact]
    public async Task Upload_download_commit_gc_and_fsck_against_radosgw()
    {
        ceph.SkipIfUnavailable();
        // The server itself gets its credentials in the URL (the other documented way).
        _server = new ServerFixture(chunks: $"{ChunksUrl}&access_key={ceph.AccessKey}&secret_key={ceph.SecretKey}");
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var client = await _server.LoginAsync(alice);
        var store = Assert.IsType<S3ChunkStore>(_server.ChunkStore);
        Assert.Equal($"{_prefix}/", store.Options.Prefix);

        // version 1 and 2 through the API
        var parcel = new TestParcel("vm1", client.Secrets!);
        var first = parcel.MakeContent(40);
        using (var upload = await client.UploadAsync(first.Blobs))
            Assert.Equal(first.Blobs.Count, (await upload.BodyAsync()).GetProperty("stored").GetInt32());
        VersionRecord v1;
        using (var created = await client.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(40), first = parcel.Record(first, 40) }))
        {
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            v1 = (await created.BodyAsync()).Version();
        }
        var (token, _) = await client.LockAsync("vm1", "site-a");
        var second = parcel.MakeContent(40);
        using (var upload = await client.UploadAsync(second.Blobs.Concat(first.Blobs.Take(3))))
        {
            var body = await upload.BodyAsync();
            Assert.Equal((second.Blobs.Count, 3), (body.GetProperty("stored").GetInt32(), body.GetProperty("existing").GetInt32()));
        }
        using (var committed = await client.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = parcel.Record(second, 40, parentMac: v1.Mac) }, token))
            Assert.Equal(HttpStatusCode.Created, committed.StatusCode);

        // every blob downloads whole, from the bucket, none from the data directory
        var frames = await client.DownloadAsync(second.Blobs.Select(b => b.Tag));
        Assert.Equal(second.Blobs.Select(b => b.Blob), frames.Select(f => f.Blob));
        Assert.False(Directory.Exists(Path.Combine(_server.Data.Path, "chunks")), "chunks were written to the data directory");
        Assert.Empty(await store.MissingAsync(first.Blobs.Concat(second.Blobs).Select(b => b.Tag).ToList(), Ct));

        // a commit in progress: its blobs are uploaded, no version references them yet
        var pending = parcel.MakeContent(10);
        await client.UploadAsync(pending.Blobs);
        Assert.Equal([1L], Assert.Single(await _server.Maintenance().PruneAsync(keep: 1, parcel: null, owner: null, Ct)).Removed);

        var spare = await CliAsync("gc", "--grace-minutes", "60", "--json");
        Assert.True(spare.Code == 0, spare.Err);
        Assert.Equal(0, JsonDocument.Parse(spare.Out).RootElement.GetProperty("deleted").GetInt32());
        Assert.Empty(await store.MissingAsync(pending.Blobs.Select(b => b.Tag).ToList(), Ct));

        var collect = await CliAsync("gc", "--grace-minutes", "0", "--json");
        Assert.True(collect.Code == 0, collect.Err);
        var report = JsonDocument.Parse(collect.Out).RootElement;
        var gone = first.Blobs.Concat(pending.Blobs).Select(b => b.Tag).Except(second.Blobs.Select(b => b.Tag)).ToList();
        Assert.Equal(gone.Count, report.GetProperty("deleted").GetInt32());
        Assert.Equal(gone.Sum(t => (long)first.Blobs.Concat(pending.Blobs).First(b => b.Tag == t).Blob.Length), report.GetProperty("deletedBytes").GetInt64());
        Assert.Equal(gone, await store.MissingAsync(gone, Ct));
        Assert.Empty(await store.MissingAsync(second.Blobs.Select(b => b.Tag).ToList(), Ct));

        var clean = await CliAsync("fsck");
        Assert.True(clean.Code == 0, clean.Out + clean.Err);
        var stats = await CliAsync("stats", "--json");
        Assert.True(stats.Code == 0, stats.Err);
        var statsJson = JsonDocument.Parse(stats.Out).RootElement;
        Assert.Equal(second.Blobs.Count, statsJson.GetProperty("storedBlobs").GetInt64());
        Assert.Equal(second.Blobs.Sum(b => (long)b.Blob.Length), statsJson.GetProperty("storedBytes").GetInt64());

        // one object altered in the bucket behind the server's back, one deleted: fsck names both
        var corrupt = second.ChunkTags[0];
        var missing = second.ChunkTags[1];
        var altered = second.Blobs.Single(b => b.Tag == corrupt).Blob.ToArray();
        altered[^1] ^= 0xFF;
        using (var raw = RawClient())
        {
            await raw.PutObjectAsync(new PutObjectRequest { BucketName = Bucket, Key = store.KeyOf(corrupt), InputStream = new MemoryStream(altered), UseChunkEncoding = false });
            await raw.DeleteObjectAsync(Bucket, store.KeyOf(missing));
        }
        var dirty = await CliAsync("fsck");
        Assert.Equal(1, dirty.Code);
        Assert.Contains($"corrupt\talice/vm1\tversion 2\t{corrupt}", dirty.Out);
        Assert.Contains($"missing\talice/vm1\tversion 2\t{missing}", dirty.Out);
        Assert.Contains("2 problems", dirty.Out);
        Assert.DoesNotContain(ceph.SecretKey, dirty.Out + dirty.Err + collect.Out + collect.Err);
    }

    [SkippableFact]
    public async Task Without_credentials_the_cli_refuses_with_a_usage_error()
    {
        ceph.SkipIfUnavailable();
        _server = new ServerFixture();
        _ = _server.Server; // creates the data directory's database
        var (code, _, err) = await ServerProcess.RunToEndAsync(new Dictionary<string, string> { ["AWS_ACCESS_KEY_ID"] = "", ["AWS_SECRET_ACCESS_KEY"] = "" },
            "fsck", "--data", _server.Data.Path, "--chunks", ChunksUrl);
        Assert.Equal(2, code);
        Assert.Contains("no S3 credentials", err);
        var wrong = await ServerProcess.RunToEndAsync(new Dictionary<string, string> { ["AWS_ACCESS_KEY_ID"] = ceph.AccessKey, ["AWS_SECRET_ACCESS_KEY"] = "not-the-secret" },
            "fsck", "--data", _server.Data.Path, "--chunks", ChunksUrl);
        Assert.Equal(5, wrong.Code);
        Assert.DoesNotContain("not-the-secret", wrong.Err);
    }

    private AmazonS3Client RawClient() => new(new BasicAWSCredentials(ceph.AccessKey, ceph.SecretKey), new AmazonS3Config
    {
        ServiceURL = ceph.Endpoint.ToString(), ForcePathStyle = true, AuthenticationRegion = "us-east-1",
        RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED, ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
    });
}
