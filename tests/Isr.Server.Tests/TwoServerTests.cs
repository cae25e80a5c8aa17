using System.Net;
using System.Net.Http.Headers;
using Isr.Format;
using Isr.Storage.Tests.Services;

namespace Isr.Server.Tests;

/// <summary>Two isr-server instances (each its own host, database pool and S3 client) over one PostgreSQL database and
/// one RGW bucket: what one instance stored and committed, the other serves; a site's session and lock work on both.</summary>
[Collection(DistributedEnginesCollection.Name)]
public sealed class TwoServerTests(PostgresServer postgres, CephCluster ceph) : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var d in Enumerable.Reverse(_owned)) d.Dispose();
    }

    private T Own<T>(T d) where T : IDisposable { _owned.Add(d); return d; }

    [SkippableFact]
    public async Task A_site_resumes_through_one_server_and_checks_in_through_the_other()
    {
        ceph.SkipIfUnavailable();
        var database = await postgres.CreateDatabaseAsync();
        var chunks = $"s3://isr-two-servers/{Guid.NewGuid():N}?endpoint={Uri.EscapeDataString(ceph.Endpoint.ToString())}" +
                     $"&access_key={ceph.AccessKey}&secret_key={ceph.SecretKey}";
        var first = Own(new ServerFixture(database, chunks));
        var second = Own(new ServerFixture(database, chunks));
        var alice = await first.AddUserAsync("alice", "pw-alice");
        _ = second.Server;

        // site A works through the first server: creates the parcel, takes the lock
        var viaFirst = Own(await first.LoginAsync(alice, "site-a"));
        var parcel = new TestParcel("vm1", viaFirst.Secrets!);
        var v1Content = parcel.MakeContent(30);
        using (var upload = await viaFirst.UploadAsync(v1Content.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        VersionRecord v1;
        using (var created = await viaFirst.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(30), first = parcel.Record(v1Content, 30) }))
        {
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            v1 = (await created.BodyAsync()).Version();
        }
        var (token, _) = await viaFirst.LockAsync("vm1", "site-a");

        // the same site, same session token, now talks to the second server (a balancer moved it)
        var viaSecond = Own(new ApiClient(second.CreateClient(), alice));
        viaSecond.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", viaFirst.Token);
        var resumed = await viaSecond.DownloadAsync(v1Content.Blobs.Select(b => b.Tag));
        Assert.Equal(v1Content.Blobs.Select(b => b.Blob), resumed.Select(f => f.Blob));
        Assert.Empty(await viaSecond.MissingAsync(v1Content.Blobs.Select(b => b.Tag)));

        var v2Content = parcel.MakeContent(30);
        Assert.Equal(v2Content.Blobs.Count, (await viaSecond.MissingAsync(v2Content.Blobs.Select(b => b.Tag))).Count);
        using (var upload = await viaSecond.UploadAsync(v2Content.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        using (var committed = await viaSecond.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = parcel.Record(v2Content, 30, parentMac: v1.Mac) }, token))
            Assert.Equal(HttpStatusCode.Created, committed.StatusCode);

        // the first server sees the new head and serves its blobs; the lock is still site A's on both
        using (var versions = await viaFirst.Http.GetAsync("/api/v1/parcels/vm1/versions"))
            Assert.Equal(2, (await versions.BodyAsync()).GetArrayLength());
        var fetched = await viaFirst.DownloadAsync(v2Content.Blobs.Select(b => b.Tag));
        Assert.Equal(v2Content.Blobs.Select(b => b.Blob), fetched.Select(f => f.Blob));
        using (var stolen = await Own(await second.LoginAsync(alice, "site-b")).PostJsonAsync("/api/v1/parcels/vm1/lock", new { siteId = "site-b", siteName = "b" }))
            Assert.Equal(HttpStatusCode.Conflict, stolen.StatusCode);

        Assert.True((await second.Maintenance().CheckAsync(CancellationToken.None)).Clean);
    }
}
