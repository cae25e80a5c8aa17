using System.Net;
using System.Text.Json;

namespace Isr.Server.Tests;

/// <summary>The real <c>isr-server</c> SIGKILLs itself (ISR_KILL_AT) at each step of a commit; after a restart the head
/// is the old or the new version as that step implies, a retry with the same commit id yields exactly one new
/// version, and fsck is clean.</summary>
public sealed class ServerKillPointTests : IDisposable
{
    private const int Chunks = 12;
    private readonly TempDir _dir = new();
    private readonly List<IDisposable> _owned = [];

    [Theory]
    [InlineData("server.commit.after-blob-check", false)]
    [InlineData("server.commit.before-db-commit", false)]
    [InlineData("server.commit.after-db-commit", true)]
    public async Task Killed_mid_commit_the_head_is_old_or_new_and_a_retry_makes_one_version(string killAt, bool committed)
    {
        var data = Path.Combine(_dir.Path, "data");
        await ServerProcess.InitWithUserAsync(data, "dave", "pw");

        // a parcel with version 1 (parcel creation passes no commit kill point), locked, version 2 uploaded
        var server = Own(await ServerProcess.StartAsync(data, killAt));
        var client = Own(await server.LoginAsync("dave", "pw"));
        var parcel = new TestParcel("vm1", client.Secrets!);
        var first = parcel.MakeContent(Chunks);
        using (var upload = await client.UploadAsync(first.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        using (var created = await client.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(Chunks), first = parcel.Record(first, Chunks) }))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var v1 = Assert.Single(await VersionsAsync(client));
        var (token, _) = await client.LockAsync("vm1", "s1");
        var next = parcel.MakeContent(Chunks);
        using (var upload = await client.UploadAsync(next.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        var record = parcel.Record(next, Chunks, parentMac: v1.Mac);

        // the commit never gets a reply: the server is gone
        await Assert.ThrowsAsync<HttpRequestException>(() => client.PostJsonAsync("/api/v1/parcels/vm1/versions", new { commitId = record.CommitId, version = record }, token));
        Assert.True(await server.WaitForExitAsync(), "isr-server did not die at the kill point");
        Assert.Contains($"killed at {killAt}", server.Stderr);

        var restarted = Own(await ServerProcess.StartAsync(data, port: server.Port));
        var again = Own(await restarted.LoginAsync("dave", "pw"));
        var after = await VersionsAsync(again);
        Assert.Equal(committed ? [1, 2] : [1], after.Select(v => v.Number));
        if (committed) Assert.Equal(record.CommitId, after[^1].CommitId);

        // the site retries with the same commit id (its pending commit): one version 2, answered as existing if it was there
        using (var retry = await again.PostJsonAsync("/api/v1/parcels/vm1/versions", new { commitId = record.CommitId, version = record }, token))
        {
            Assert.Equal(committed ? HttpStatusCode.OK : HttpStatusCode.Created, retry.StatusCode);
            Assert.Equal(2, (await retry.BodyAsync()).Version().Number);
        }
        using (var retry = await again.PostJsonAsync("/api/v1/parcels/vm1/versions", new { commitId = record.CommitId, version = record }, token))
            Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        var final = await VersionsAsync(again);
        Assert.Equal([1, 2], final.Select(v => v.Number));
        Assert.Equal(record.CommitId, final[1].CommitId);
        Assert.False(final[1].Side);
        using (var entry = await again.Http.GetAsync("/api/v1/parcels/vm1"))
            Assert.Equal(2, (await entry.BodyAsync()).GetProperty("head").GetInt64());

        restarted.Dispose();
        var fsck = await ServerProcess.RunToEndAsync("fsck", "--data", data);
        Assert.True(fsck.Code == 0, fsck.Out + fsck.Err);
    }

    private static async Task<List<Isr.Format.VersionRecord>> VersionsAsync(ApiClient client)
    {
        using var response = await client.Http.GetAsync("/api/v1/parcels/vm1/versions");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (await response.BodyAsync()).EnumerateArray()
            .Select(v => Isr.Format.VersionRecord.FromJson(System.Text.Encoding.UTF8.GetBytes(v.GetRawText()))).ToList();
    }

    private T Own<T>(T disposable) where T : IDisposable { _owned.Add(disposable); return disposable; }

    public void Dispose()
    {
        foreach (var d in Enumerable.Reverse(_owned)) d.Dispose();
        _dir.Dispose();
    }
}
