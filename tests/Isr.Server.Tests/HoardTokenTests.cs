using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;

namespace Isr.Server.Tests;

/// <summary>The real <c>isr-server</c>: a site's hoard-only token (handed out at login) lists the site's hoard requests,
/// reads the requested parcel's versions and downloads its blobs, and is refused with 403 <c>hoard_only</c> for
/// everything else (commit, lock, account and keys, uploads); revoking the site or logging out there ends it.</summary>
public sealed class HoardTokenTests : IDisposable
{
    private const int Chunks = 6;
    private readonly TempDir _dir = new();
    private readonly List<IDisposable> _owned = [];

    private T Own<T>(T d) where T : IDisposable { _owned.Add(d); return d; }

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task A_hoard_only_token_reads_what_hoarding_needs_and_nothing_else_until_revoked()
    {
        var data = Path.Combine(_dir.Path, "data");
        await ServerProcess.InitWithUserAsync(data, "erin", "pw");
        var server = Own(await ServerProcess.StartAsync(data));
        var a = Own(await server.LoginAsync("erin", "pw", "site-a"));
        var b = Own(await server.LoginAsync("erin", "pw", "site-b"));
        Assert.NotNull(b.HoardToken);
        var hoard = Own(server.Client());
        hoard.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", b.HoardToken);

        var parcel = new TestParcel("vm1", a.Secrets!);
        var content = parcel.MakeContent(Chunks);
        using (var upload = await a.UploadAsync(content.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        using (var created = await a.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(Chunks), first = parcel.Record(content, Chunks) }))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);

        // before any request: nothing to read
        Assert.Empty((await Json(await hoard.GetAsync("/api/v1/hoard/requests"))).EnumerateArray());
        await AssertHoardOnlyAsync(await hoard.GetAsync("/api/v1/parcels/vm1/versions"));

        // site A requests a hoard for site B, by B's name; again: the same open request
        var request = await Json(await a.PostJsonAsync("/api/v1/hoard/requests", new { parcel = "vm1", site = "site-b name" }), HttpStatusCode.Created);
        long id = request.GetProperty("request").GetProperty("id").GetInt64();
        var repeat = await Json(await a.PostJsonAsync("/api/v1/hoard/requests", new { parcel = "vm1", site = "site-b" }), HttpStatusCode.OK);
        Assert.Equal(id, repeat.GetProperty("request").GetProperty("id").GetInt64());
        var unknown = await Json(await a.PostJsonAsync("/api/v1/hoard/requests", new { parcel = "vm1", site = "nowhere" }), HttpStatusCode.NotFound);
        Assert.Contains("site-b name", unknown.GetProperty("error").GetString());

        // what hoarding needs: the site's requests, the parcel's versions, its blobs
        var pending = Assert.Single((await Json(await hoard.GetAsync("/api/v1/hoard/requests"))).EnumerateArray());
        Assert.Equal(("vm1", "pending"), (pending.GetProperty("parcel").GetString(), pending.GetProperty("state").GetString()));
        Assert.Single((await Json(await hoard.GetAsync("/api/v1/parcels/vm1/versions"))).EnumerateArray());
        using (var one = await hoard.GetAsync($"/api/v1/chunks/{content.DiskRoot}")) Assert.Equal(HttpStatusCode.OK, one.StatusCode);
        using (var many = await hoard.PostAsync("/api/v1/chunks/download", ApiClient.Binary(ApiClient.Tags(content.ChunkTags))))
            Assert.Equal(content.ChunkTags.Count * 36 + content.ChunkTags.Sum(t => content.Blobs.First(x => x.Tag == t).Blob.Length),
                (await many.Content.ReadAsByteArrayAsync()).Length);

        // nothing else: commit, lock, rollback, account and keys, uploads, other parcels, new requests, sites, logout
        var record = parcel.Record(content, Chunks, parentMac: "x");
        var refused = new (HttpMethod Method, string Path, HttpContent? Body)[]
        {
            (HttpMethod.Post, "/api/v1/parcels/vm1/versions", JsonContent.Create(new { version = record })),
            (HttpMethod.Post, "/api/v1/parcels/vm1/lock", JsonContent.Create(new { siteId = "site-b" })),
            (HttpMethod.Post, "/api/v1/parcels/vm1/lock/break", null),
            (HttpMethod.Post, "/api/v1/parcels/vm1/rollback", JsonContent.Create(new { version = record })),
            (HttpMethod.Put, "/api/v1/account/password", JsonContent.Create(new { })),
            (HttpMethod.Get, "/api/v1/account/recovery", null),
            (HttpMethod.Post, "/api/v1/chunks/upload", ApiClient.Binary(ApiClient.Frames(content.Blobs.Take(1)))),
            (HttpMethod.Post, "/api/v1/chunks/missing", ApiClient.Binary(ApiClient.Tags(content.ChunkTags))),
            (HttpMethod.Get, "/api/v1/parcels", null),
            (HttpMethod.Post, "/api/v1/parcels", JsonContent.Create(new { })),
            (HttpMethod.Post, "/api/v1/hoard/requests", JsonContent.Create(new { parcel = "vm1", site = "site-b" })),
            (HttpMethod.Get, "/api/v1/sites", null),
            (HttpMethod.Delete, "/api/v1/sites/site-b", null),
            (HttpMethod.Post, "/api/v1/logout", null),
        };
        foreach (var (method, path, body) in refused)
            await AssertHoardOnlyAsync(await hoard.SendAsync(new HttpRequestMessage(method, path) { Content = body }));
        Assert.Equal(1, (await Json(await a.Http.GetAsync("/api/v1/parcels/vm1"))).GetProperty("head").GetInt64()); // nothing changed

        // the site reports progress, which the user sees; an ended request takes no more reports and opens nothing
        var report = new { state = "running", version = 1, blobsDone = 2, blobsTotal = 8, bytesDone = 2000 };
        await Json(await hoard.PutAsJsonAsync($"/api/v1/hoard/requests/{id}", report));
        var seen = Assert.Single((await Json(await a.Http.GetAsync("/api/v1/hoard/requests"))).EnumerateArray());
        Assert.Equal(("running", 2, 8), (seen.GetProperty("state").GetString(), seen.GetProperty("blobsDone").GetInt32(), seen.GetProperty("blobsTotal").GetInt32()));
        using (var bad = await hoard.PutAsJsonAsync($"/api/v1/hoard/requests/{id}", report with { state = "pending" }))
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        await Json(await hoard.PutAsJsonAsync($"/api/v1/hoard/requests/{id}", report with { state = "done", blobsDone = 8 }));
        await Json(await hoard.PutAsJsonAsync($"/api/v1/hoard/requests/{id}", report), HttpStatusCode.NotFound);
        await AssertHoardOnlyAsync(await hoard.GetAsync("/api/v1/parcels/vm1/versions"));

        // revoking the site (by name, from site A) ends its token and its open requests
        var sites = await Json(await a.Http.GetAsync("/api/v1/sites"));
        Assert.Equal(["site-a name", "site-b name"], sites.EnumerateArray().Select(s => s.GetProperty("siteName").GetString()));
        long second = (await Json(await a.PostJsonAsync("/api/v1/hoard/requests", new { parcel = "vm1", site = "site-b" }), HttpStatusCode.Created))
            .GetProperty("request").GetProperty("id").GetInt64();
        using (var revoke = await a.Http.DeleteAsync("/api/v1/sites/site-b%20name")) Assert.Equal(HttpStatusCode.NoContent, revoke.StatusCode);
        using (var gone = await hoard.GetAsync("/api/v1/hoard/requests")) Assert.Equal(HttpStatusCode.Unauthorized, gone.StatusCode);
        var states = (await Json(await a.Http.GetAsync("/api/v1/hoard/requests"))).EnumerateArray()
            .Select(r => (r.GetProperty("id").GetInt64(), r.GetProperty("state").GetString())).ToList();
        Assert.Equal([(second, "revoked"), (id, "done")], states);
        using (var none = await a.PostJsonAsync("/api/v1/hoard/requests", new { parcel = "vm1", site = "site-b" }))
            Assert.Equal(HttpStatusCode.NotFound, none.StatusCode); // a revoked site takes no requests until it logs in again

        // logging out at a site revokes its hoard-only token too
        var c = Own(await server.LoginAsync("erin", "pw", "site-c"));
        var cHoard = Own(server.Client());
        cHoard.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", c.HoardToken);
        await Json(await cHoard.GetAsync("/api/v1/hoard/requests"));
        using (var logout = await c.Http.PostAsync("/api/v1/logout", null)) Assert.Equal(HttpStatusCode.NoContent, logout.StatusCode);
        using (var after = await cHoard.GetAsync("/api/v1/hoard/requests")) Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
    }

    private static async Task AssertHoardOnlyAsync(HttpResponseMessage response)
    {
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{response.RequestMessage?.Method} {response.RequestMessage?.RequestUri}: {(int)response.StatusCode} {text}");
            var body = JsonDocument.Parse(text).RootElement;
            Assert.Equal("hoard_only", body.GetProperty("code").GetString());
            Assert.Contains("hoard-only token", body.GetProperty("error").GetString());
        }
    }

    private static async Task<JsonElement> Json(HttpResponseMessage response, HttpStatusCode expected = HttpStatusCode.OK)
    {
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == expected, $"{(int)response.StatusCode} {text}");
            return JsonDocument.Parse(text).RootElement.Clone();
        }
    }
}
