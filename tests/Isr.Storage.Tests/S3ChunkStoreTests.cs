using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Isr.Format;
using Isr.Storage.S3;
using Isr.Storage.Tests.Services;

namespace Isr.Storage.Tests;

/// <summary>The chunk-store contract on a real Ceph radosgw, plus what is particular to S3: keys, foreign objects,
/// both existence strategies, refused credentials.</summary>
[Collection(CephCollection.Name)]
public sealed class S3ChunkStoreTests(CephCluster ceph) : ChunkStoreContract, IDisposable
{
    private readonly string _prefix = $"test-{Guid.NewGuid():N}/";
    private S3ChunkStore? _store;

    protected override IChunkStore Store => Open();

    private S3ChunkStore Open()
    {
        ceph.SkipIfUnavailable();
        return _store ??= new S3ChunkStore(ceph.Options(CephCluster.Bucket, _prefix));
    }

    public void Dispose() => _store?.Dispose();

    private AmazonS3Client RawClient() => new(new BasicAWSCredentials(ceph.AccessKey, ceph.SecretKey), new AmazonS3Config
    {
        ServiceURL = ceph.Endpoint.ToString(), ForcePathStyle = true, AuthenticationRegion = "us-east-1",
        RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED, ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
    });

    [SkippableFact]
    public async Task Objects_are_keyed_prefix_fanout_tag()
    {
        var store = Open();
        var tag = await PutAsync(Blob(1));
        var hex = tag.ToString();
        Assert.Equal($"{_prefix}{hex[..2]}/{hex}", store.KeyOf(tag));
        using var raw = RawClient();
        using var got = await raw.GetObjectAsync(CephCluster.Bucket, store.KeyOf(tag));
        Assert.Equal(1000, got.ContentLength);
    }

    [SkippableFact]
    public async Task Foreign_objects_in_the_bucket_are_not_blobs()
    {
        var store = Open();
        var tag = await PutAsync(Blob(2));
        using var raw = RawClient();
        await raw.PutObjectAsync(new PutObjectRequest { BucketName = CephCluster.Bucket, Key = $"{_prefix}ab/notes.txt", ContentBody = "x", UseChunkEncoding = false });
        await raw.PutObjectAsync(new PutObjectRequest { BucketName = CephCluster.Bucket, Key = $"{_prefix}README", ContentBody = "x", UseChunkEncoding = false });
        Assert.Equal([tag], await ListAll(store));
    }

    [SkippableFact]
    public async Task Head_list_and_paged_list_strategies_agree()
    {
        // Tags crowded into few fan-out prefixes (first hex digit pair), so that listing answers several per request.
        var stored = new List<ChunkTag>();
        for (int i = 0; stored.Count < 60 && i < 100_000; i++)
            if (ChunkTag.Of(Blob(i, 32)).ToString()[0] == 'a') stored.Add(await PutAsync(Blob(i, 32)));
        var absent = Enumerable.Range(200_000, 100_000).Select(i => ChunkTag.Of(Blob(i, 32))).Where(t => t.ToString()[0] == 'a').Take(60).ToList();
        var query = stored.Where((_, i) => i % 2 == 0).Concat(absent).Concat([ChunkTag.Of(Blob(-1, 32))]).ToList();
        var expected = query.Where(t => !stored.Contains(t)).ToList();
        var options = ceph.Options(CephCluster.Bucket, _prefix);
        foreach (var variant in new[]
        {
            options with { ListMinTags = int.MaxValue }, // HEAD each
            options with { ListMinTags = 1 },            // list every prefix, one page each
            options with { ListMinTags = 1, ListPageSize = 2 }, // many pages: the page budget runs out, HEADs finish
        })
        {
            using var store = new S3ChunkStore(variant);
            Assert.Equal(expected, await store.MissingAsync(query, default));
        }
    }

    [SkippableFact]
    public async Task Get_returns_a_corrupted_object_as_is_for_the_caller_to_reject()
    {
        var store = Open();
        var blob = Blob(3);
        var tag = await PutAsync(blob);
        blob[0] ^= 1;
        using var raw = RawClient();
        await raw.PutObjectAsync(new PutObjectRequest { BucketName = CephCluster.Bucket, Key = store.KeyOf(tag), InputStream = new MemoryStream(blob), UseChunkEncoding = false });
        var got = await store.GetAsync(tag, default);
        Assert.NotNull(got);
        Assert.False(tag.Matches(got));
    }

    [SkippableFact]
    public async Task Wrong_credentials_are_refused_with_an_error_not_an_absent_blob()
    {
        Open();
        using var store = new S3ChunkStore(ceph.Options(CephCluster.Bucket, _prefix) with { SecretKey = "wrong" });
        var e = await Assert.ThrowsAsync<AmazonS3Exception>(async () => await store.GetAsync(ChunkTag.Of(Blob(4)), default));
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, e.StatusCode);
        Assert.DoesNotContain("wrong", store.ToString());
    }
}
