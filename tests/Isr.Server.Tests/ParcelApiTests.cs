using System.Net;
using System.Net.Http.Json;
using System.Text;
using Isr.Format;
using Isr.Server.Blobs;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Isr.Server.Tests;

/// <summary>Parcels, versions, locks and chunks through the HTTP API, with real Isr.Format content.</summary>
public class ParcelApiTests : IAsyncLifetime, IDisposable
{
    private const int Chunks = 40;
    private readonly ServerFixture _server;

    public ParcelApiTests() : this(new ServerFixture()) { }
    protected ParcelApiTests(ServerFixture server) => _server = server;
    private ApiClient _client = null!;
    private TestParcel _parcel = null!;
    private TestParcel.Content _content = null!;
    private VersionRecord _first = null!;

    public async Task InitializeAsync()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        _client = await _server.LoginAsync(alice);
        _parcel = new TestParcel("vm1", _client.Secrets!);
        _content = _parcel.MakeContent(Chunks);
        _first = await CreateAsync(_parcel, _content);
    }

    public Task DisposeAsync() => Task.CompletedTask;
    public void Dispose() { _client?.Dispose(); _server.Dispose(); }

    private async Task<VersionRecord> CreateAsync(TestParcel parcel, TestParcel.Content content)
    {
        using (var upload = await _client.UploadAsync(content.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        using var created = await _client.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(Chunks), first = parcel.Record(content, Chunks) });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var version = (await created.BodyAsync()).Version();
        version.Verify(parcel.Keys, parcel.Id); // the signed fields came back unchanged
        return version;
    }

    private async Task<(HttpResponseMessage Response, VersionRecord? Version)> CommitAsync(VersionRecord record, string token, string path = "versions")
    {
        var response = await _client.PostJsonAsync($"/api/v1/parcels/vm1/{path}", new { commitId = record.CommitId, version = record }, token);
        VersionRecord? version = response.IsSuccessStatusCode ? (await response.BodyAsync()).Version() : null;
        return (response, version);
    }

    [SkippableFact]
    public async Task Created_parcel_is_listed_with_its_head_and_first_version()
    {
        Assert.Equal(1, _first.Number);
        Assert.Null(_first.Parent);
        var list = await (await _client.Http.GetAsync("/api/v1/parcels")).BodyAsync();
        var entry = Assert.Single(list.EnumerateArray());
        Assert.Equal("vm1", entry.GetProperty("parcel").GetProperty("name").GetString());
        Assert.Equal(_parcel.Id, entry.GetProperty("parcel").GetProperty("id").GetString());
        Assert.Equal(1, entry.GetProperty("head").GetInt64());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, entry.GetProperty("lock").ValueKind);
        var wrapped = entry.GetProperty("parcel").GetProperty("wrappedKey").GetBytesFromBase64();
        Assert.Equal(_parcel.Keys.Master, _client.Secrets!.UnwrapParcelKey(wrapped, _parcel.Id).Master);

        var one = await (await _client.Http.GetAsync("/api/v1/parcels/vm1")).BodyAsync();
        Assert.Equal(1, one.GetProperty("head").GetInt64());
        var versions = await (await _client.Http.GetAsync("/api/v1/parcels/vm1/versions")).BodyAsync();
        Assert.Equal(1, versions.GetArrayLength());
        using var nothing = await _client.Http.GetAsync("/api/v1/parcels/nope");
        Assert.Equal("not_found", await nothing.ErrorCodeAsync());
    }

    [SkippableFact]
    public async Task Creating_an_existing_name_is_409_conflict()
    {
        var other = new TestParcel("vm1", _client.Secrets!, seed: 2);
        var content = other.MakeContent(Chunks);
        await _client.UploadAsync(content.Blobs);
        using var again = await _client.PostJsonAsync("/api/v1/parcels", new { parcel = other.Info(Chunks), first = other.Record(content, Chunks) });
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        Assert.Equal("conflict", await again.ErrorCodeAsync());
    }

    [SkippableFact]
    public async Task Missing_and_download_round_trip()
    {
        var tags = _content.Blobs.Select(b => b.Tag).ToList();
        Assert.Empty(await _client.MissingAsync(tags));
        var unknown = new ChunkTag(Hash32.Sha256("never uploaded"u8));
        Assert.Equal([unknown], await _client.MissingAsync([tags[0], unknown, tags[1]]));

        var frames = await _client.DownloadAsync([tags[2], unknown, tags[0]]);
        Assert.Equal([tags[2], unknown, tags[0]], frames.Select(f => f.Tag));
        Assert.Equal(_content.Blobs[2].Blob, frames[0].Blob);
        Assert.Null(frames[1].Blob);
        Assert.Equal(_content.Blobs[0].Blob, frames[2].Blob);

        using var single = await _client.Http.GetAsync($"/api/v1/chunks/{tags[3]}");
        Assert.Equal(_content.Blobs[3].Blob, await single.Content.ReadAsByteArrayAsync());
        using var absent = await _client.Http.GetAsync($"/api/v1/chunks/{unknown}");
        Assert.Equal("not_found", await absent.ErrorCodeAsync());
        using var bad = await _client.Http.GetAsync("/api/v1/chunks/XYZ");
        Assert.Equal("bad_request", await bad.ErrorCodeAsync());
        using var ragged = await _client.Http.PostAsync("/api/v1/chunks/missing", ApiClient.Binary(new byte[33]));
        Assert.Equal("bad_request", await ragged.ErrorCodeAsync());
    }

    [SkippableFact]
    public async Task Another_user_cannot_see_or_fetch_blobs_it_did_not_upload()
    {
        var bob = await _server.AddUserAsync("bob", "pw-bob");
        using var client = await _server.LoginAsync(bob);
        var tag = _content.Blobs[0].Tag;
        Assert.Equal([tag], await client.MissingAsync([tag]));
        Assert.Null((await client.DownloadAsync([tag]))[0].Blob);
        using var upload = await client.UploadAsync([_content.Blobs[0]]);
        Assert.Equal(0, (await upload.BodyAsync()).GetProperty("stored").GetInt32());
        Assert.Equal(1, (await upload.BodyAsync()).GetProperty("existing").GetInt32());
        Assert.Empty(await client.MissingAsync([tag]));
        Assert.Equal(_content.Blobs[0].Blob, (await client.DownloadAsync([tag]))[0].Blob);
        using var list = await client.Http.GetAsync("/api/v1/parcels/vm1");
        Assert.Equal(HttpStatusCode.NotFound, list.StatusCode);
    }

    [SkippableFact]
    public async Task Upload_of_a_blob_that_does_not_match_its_tag_is_400_and_stores_nothing_of_it()
    {
        var good = _parcel.MakeContent(3).Blobs[0];
        var badBlob = Encoding.UTF8.GetBytes("not what the tag says");
        var claimed = new ChunkTag(Hash32.Sha256("something else"u8));
        using var response = await _client.UploadAsync([good, (claimed, badBlob)]);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("bad_request", await response.ErrorCodeAsync());
        Assert.False(_server.Chunks.Contains(claimed));
        Assert.False(_server.Chunks.Contains(ChunkTag.Of(badBlob)));
        Assert.True(_server.Chunks.Contains(good.Tag)); // the earlier good frame stays
        Assert.Equal([claimed], await _client.MissingAsync([claimed, good.Tag]));

        using var truncated = await _client.Http.PostAsync("/api/v1/chunks/upload", ApiClient.Binary(ApiClient.Frames([good])[..40]));
        Assert.Equal("bad_request", await truncated.ErrorCodeAsync());
    }

    [SkippableFact]
    public async Task Commit_with_a_missing_blob_is_409_with_the_missing_list()
    {
        var (token, _) = await _client.LockAsync("vm1", "site-a");
        var next = _parcel.MakeContent(Chunks);
        var withheldChunk = next.ChunkTags[3];
        await _client.UploadAsync(next.Blobs.Where(b => b.Tag != withheldChunk));
        var record = _parcel.Record(next, Chunks, parentMac: _first.Mac);
        var (response, _) = await CommitAsync(record, token);
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        var body = await response.BodyAsync();
        Assert.Equal("conflict", body.GetProperty("code").GetString());
        Assert.Equal([withheldChunk.ToString()], body.GetProperty("missing").EnumerateArray().Select(e => e.GetString()));

        await _client.UploadAsync(next.Blobs.Where(b => b.Tag == withheldChunk));
        var (ok, version) = await CommitAsync(record, token);
        Assert.Equal(HttpStatusCode.Created, ok.StatusCode);
        Assert.Equal((2L, 1L, false), (version!.Number, version.Parent!.Value, version.Side));

        // a missing page (not just a chunk) is reported too
        var third = _parcel.MakeContent(Chunks);
        await _client.UploadAsync(third.Blobs.Where(b => b.Tag != third.DiskRoot));
        var (noRoot, _) = await CommitAsync(_parcel.Record(third, Chunks, parentMac: version.Mac), token);
        Assert.Equal([third.DiskRoot.ToString()], (await noRoot.BodyAsync()).GetProperty("missing").EnumerateArray().Select(e => e.GetString()));
    }

    /// <summary>Rule 2 walks a tree with an interior page level by level: a leaf page missing under the root and a chunk
    /// missing under another leaf are both reported, and once they are there the version commits.</summary>
    [SkippableFact]
    public async Task Commit_of_a_tree_with_interior_pages_reports_what_is_missing_below_them()
    {
        const int chunks = 2 * ChunkListTree.LeafCapacity + 100; // three leaves under one interior root
        var (token, _) = await _client.LockAsync("vm1", "site-a");
        var next = _parcel.MakeContent(chunks);
        var firstLeaf = next.PageTags[0];
        var chunkInLastLeaf = next.ChunkTags[^1];
        Assert.NotEqual(firstLeaf, next.DiskRoot);
        await _client.UploadAsync(next.Blobs.Where(b => b.Tag != firstLeaf && b.Tag != chunkInLastLeaf));
        var record = _parcel.Record(next, chunks, parentMac: _first.Mac);
        var (response, _) = await CommitAsync(record, token);
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        var missing = (await response.BodyAsync()).GetProperty("missing").EnumerateArray().Select(e => e.GetString()!).Order();
        Assert.Equal(new[] { firstLeaf.ToString(), chunkInLastLeaf.ToString() }.Order(), missing);

        await _client.UploadAsync(next.Blobs.Where(b => b.Tag == firstLeaf || b.Tag == chunkInLastLeaf));
        var (ok, version) = await CommitAsync(record, token);
        Assert.Equal(HttpStatusCode.Created, ok.StatusCode);
        Assert.Equal(2L, version!.Number);
    }

    /// <summary>A server started over existing data checks each parcel's head in the background, so the first commit
    /// after a start walks only its new pages, not the whole tree. That check only reads: every row stays as it was (a
    /// migrated server must hold exactly the rows it was given).</summary>
    [SkippableFact]
    public async Task A_restarted_server_has_checked_the_heads_trees_before_the_first_commit()
    {
        var rows = MetadataStoreContract.Describe(await _server.Metadata.ExportAsync(CancellationToken.None));
        using var restarted = new ServerFixture(_server.MetadataConnection, dataDirectory: _server.Data.Path);
        restarted.Clock.Now += TimeSpan.FromHours(1); // a check that refreshed last-seen times would write this hour
        _ = restarted.Server;
        var warmer = restarted.Services.GetServices<IHostedService>().OfType<CommitCheckWarmer>().Single();
        await warmer.ExecuteTask!.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(rows, MetadataStoreContract.Describe(await restarted.Metadata.ExportAsync(CancellationToken.None)));
        var checker = restarted.Services.GetRequiredService<CommitChecker>();
        var alice = (await restarted.Metadata.GetUserAsync("alice", CancellationToken.None))!;
        Assert.True(checker.RemembersComplete(alice.Id, _content.DiskRoot));
        Assert.False(checker.RemembersComplete(alice.Id, _parcel.MakeContent(Chunks).DiskRoot)); // only what it checked
    }

    [SkippableFact]
    public async Task Commit_is_idempotent_by_commit_id()
    {
        var (token, _) = await _client.LockAsync("vm1", "site-a");
        var next = _parcel.MakeContent(Chunks);
        await _client.UploadAsync(next.Blobs);
        var record = _parcel.Record(next, Chunks, parentMac: _first.Mac);
        var (first, v1) = await CommitAsync(record, token);
        var (second, v2) = await CommitAsync(record, token);
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal(v1!.Number, v2!.Number);
        Assert.Equal(2, (await (await _client.Http.GetAsync("/api/v1/parcels/vm1/versions")).BodyAsync()).GetArrayLength());
    }

    [SkippableFact]
    public async Task Locks_conflict_names_the_holder_and_a_broken_holders_commit_becomes_a_side_version()
    {
        var (tokenA, lockA) = await _client.LockAsync("vm1", "site-a");
        var (again, _) = await _client.LockAsync("vm1", "site-a");
        Assert.Equal(tokenA, again);
        Assert.Equal("site-a", lockA.GetProperty("lock").GetProperty("siteId").GetString());

        using var conflict = await _client.PostJsonAsync("/api/v1/parcels/vm1/lock", new { siteId = "site-b", siteName = "laptop" });
        Assert.Equal(HttpStatusCode.Conflict, conflict.StatusCode);
        var body = await conflict.BodyAsync();
        Assert.Equal("locked", body.GetProperty("code").GetString());
        Assert.Equal("site-a", body.GetProperty("lock").GetProperty("siteId").GetString());
        Assert.Equal("site-a name", body.GetProperty("lock").GetProperty("siteName").GetString());
        Assert.Equal("alice", body.GetProperty("lock").GetProperty("user").GetString());
        Assert.False(body.GetProperty("lock").TryGetProperty("token", out _));

        using var current = await _client.Http.GetAsync("/api/v1/parcels/vm1/lock");
        Assert.Equal("site-a", (await current.BodyAsync()).GetProperty("siteId").GetString());

        using var broken = await _client.Http.PostAsync("/api/v1/parcels/vm1/lock/break", null);
        Assert.Equal(HttpStatusCode.NoContent, broken.StatusCode);
        using var unlocked = await _client.Http.GetAsync("/api/v1/parcels/vm1/lock");
        Assert.Equal(HttpStatusCode.NoContent, unlocked.StatusCode);
        var (tokenB, _) = await _client.LockAsync("vm1", "site-b");

        var work = _parcel.MakeContent(Chunks);
        await _client.UploadAsync(work.Blobs);
        var (late, lateVersion) = await CommitAsync(_parcel.Record(work, Chunks, parentMac: _first.Mac), tokenA);
        Assert.Equal(HttpStatusCode.Created, late.StatusCode);
        var lateBody = await late.BodyAsync();
        Assert.True(lateBody.GetProperty("side").GetBoolean());
        Assert.Contains("broken", lateBody.GetProperty("reason").GetString());
        Assert.True(lateVersion!.Side);

        var (head, headVersion) = await CommitAsync(_parcel.Record(work, Chunks, parentMac: _first.Mac), tokenB);
        Assert.Equal(HttpStatusCode.Created, head.StatusCode);
        Assert.False((await head.BodyAsync()).GetProperty("side").GetBoolean());
        Assert.Equal(3, headVersion!.Number);

        var (stale, staleVersion) = await CommitAsync(_parcel.Record(work, Chunks, parentMac: _first.Mac), tokenB);
        Assert.True(staleVersion!.Side);
        Assert.Contains("parent", (await stale.BodyAsync()).GetProperty("reason").GetString());

        var (forbidden, _) = await CommitAsync(_parcel.Record(work, Chunks, parentMac: headVersion.Mac), "never-a-token");
        Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
        Assert.Equal("forbidden", await forbidden.ErrorCodeAsync());

        var release = new HttpRequestMessage(HttpMethod.Delete, "/api/v1/parcels/vm1/lock");
        release.Headers.Add("Isr-Lock-Token", tokenB);
        using var released = await _client.Http.SendAsync(release);
        Assert.Equal(HttpStatusCode.NoContent, released.StatusCode);
        var versions = await (await _client.Http.GetAsync("/api/v1/parcels/vm1/versions")).BodyAsync();
        Assert.Equal([false, true, false, true], versions.EnumerateArray().Select(v => v.GetProperty("side").GetBoolean()));
    }

    [SkippableFact]
    public async Task Rollback_makes_a_new_head_from_old_roots()
    {
        var (token, _) = await _client.LockAsync("vm1", "site-a");
        var next = _parcel.MakeContent(Chunks);
        await _client.UploadAsync(next.Blobs);
        var (_, v2) = await CommitAsync(_parcel.Record(next, Chunks, parentMac: _first.Mac), token);
        var back = _parcel.Record(_content, Chunks, parentMac: v2!.Mac);
        using var blocked = await _client.PostJsonAsync("/api/v1/parcels/vm1/rollback", new { version = back });
        Assert.Equal("locked", await blocked.ErrorCodeAsync());
        var (ok, v3) = await CommitAsync(back, token, path: "rollback");
        Assert.Equal(HttpStatusCode.Created, ok.StatusCode);
        Assert.Equal((3L, 2L, false), (v3!.Number, v3.Parent!.Value, v3.Side));
        Assert.Equal(_first.DiskRoot, v3.DiskRoot);
    }

    [SkippableFact]
    public async Task Bad_records_and_bodies_are_clean_400s()
    {
        var (token, _) = await _client.LockAsync("vm1", "site-a");
        var record = _parcel.Record(_content, Chunks, parentMac: _first.Mac);
        foreach (var bad in new[] { record with { DiskRoot = "zz" }, record with { DescriptorTag = new string('A', 64) }, record with { ParcelId = "other" } })
        {
            var (response, _) = await CommitAsync(bad, token);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("bad_request", await response.ErrorCodeAsync());
        }
        foreach (var json in new[] { "{", "{\"version\": 5}", "{\"version\": {\"parcelId\": \"x\"}}", "\"str\"" })
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/parcels/vm1/versions") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
            request.Headers.Add("Isr-Lock-Token", token);
            using var response = await _client.Http.SendAsync(request);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("bad_request", await response.ErrorCodeAsync());
        }
        // a root that is a chunk, not a keyring page
        var notAPage = record with { DiskRoot = _content.ChunkTags[0].ToString(), CommitId = "x1" };
        var (page, _) = await CommitAsync(notAPage, token);
        Assert.Equal("bad_request", await page.ErrorCodeAsync());
        using var badName = await _client.PostJsonAsync("/api/v1/parcels", new { parcel = new TestParcel("../evil", _client.Secrets!).Info(1), first = record });
        Assert.Equal("bad_request", await badName.ErrorCodeAsync());
    }

    [SkippableFact]
    public async Task Lock_token_header_refreshes_last_contact()
    {
        var (token, body) = await _client.LockAsync("vm1", "site-a");
        var acquired = body.GetProperty("lock").GetProperty("lastContact").GetDateTimeOffset();
        _server.Clock.Now += TimeSpan.FromHours(2);
        var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/parcels/vm1/versions");
        request.Headers.Add("Isr-Lock-Token", token);
        using (await _client.Http.SendAsync(request)) { }
        var after = await (await _client.Http.GetAsync("/api/v1/parcels/vm1/lock")).BodyAsync();
        Assert.True(after.GetProperty("lastContact").GetDateTimeOffset() >= acquired + TimeSpan.FromHours(2));
    }

    [SkippableFact]
    public async Task Checkin_progress_needs_the_current_lock_token_and_shows_in_the_lock()
    {
        async Task<HttpResponseMessage> Report(object body, string? token)
        {
            var request = new HttpRequestMessage(HttpMethod.Put, "/api/v1/parcels/vm1/lock/checkin") { Content = JsonContent.Create(body) };
            if (token is not null) request.Headers.Add("Isr-Lock-Token", token);
            return await _client.Http.SendAsync(request);
        }
        var (token, body) = await _client.LockAsync("vm1", "site-a");
        Assert.False(body.GetProperty("lock").TryGetProperty("checkin", out _)); // absent, not null: old clients see what they knew
        using (var noHeader = await Report(new { sent = 1 }, null)) Assert.Equal(HttpStatusCode.BadRequest, noHeader.StatusCode);
        using (var negative = await Report(new { sent = -1 }, token)) Assert.Equal(HttpStatusCode.BadRequest, negative.StatusCode);
        using (var stranger = await Report(new { sent = 1 }, "not-a-lock")) Assert.Equal("forbidden", await stranger.ErrorCodeAsync());
        using (var ok = await Report(new { sent = 40, total = 120 }, token)) Assert.Equal(HttpStatusCode.NoContent, ok.StatusCode);

        var held = await (await _client.Http.GetAsync("/api/v1/parcels/vm1/lock")).BodyAsync();
        var checkin = held.GetProperty("checkin");
        Assert.Equal((40, 120), (checkin.GetProperty("sent").GetInt64(), checkin.GetProperty("total").GetInt64()));
        Assert.Equal(_server.Clock.Now.ToUnixTimeMilliseconds(), checkin.GetProperty("updated").GetDateTimeOffset().ToUnixTimeMilliseconds());
        using var refused = await _client.PostJsonAsync("/api/v1/parcels/vm1/lock", new { siteId = "site-b", siteName = "laptop" });
        Assert.Equal(40, (await refused.BodyAsync()).GetProperty("lock").GetProperty("checkin").GetProperty("sent").GetInt64());
    }
}

/// <summary>The same tests with the metadata in PostgreSQL.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ParcelApiTestsOverPostgres(PostgresServer postgres) : ParcelApiTests(ServerFixture.OverPostgres(postgres));
