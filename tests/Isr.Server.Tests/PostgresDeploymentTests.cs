using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Isr.Format;
using Isr.Server.Admin;
using Isr.Server.Api;
using Isr.Storage.Metadata;

namespace Isr.Server.Tests;

/// <summary>A deployment whose metadata lives in PostgreSQL: several real isr-server processes over one database, and
/// the migration of an embedded deployment into one.</summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresDeploymentTests(PostgresServer postgres) : IDisposable
{
    private static readonly CancellationToken Ct = CancellationToken.None;
    private const int Chunks = 30;
    private readonly TempDir _dir = new();
    private readonly List<IDisposable> _owned = [];

    private T Own<T>(T item) where T : IDisposable
    {
        _owned.Add(item);
        return item;
    }

    private async Task<ApiClient> LoginAsync(ServerProcess server, string user, string password, string siteId)
    {
        var http = server.Client();
        using var prelogin = await http.PostAsJsonAsync("/api/v1/prelogin", new { user });
        var kdf = (await prelogin.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("kdf").Deserialize<KdfParameters>(ApiJson.Options)!;
        var client = Own(new ApiClient(http, new TestUser(user, password, kdf, [])));
        using var login = await client.LoginAsync(siteId);
        Assert.Equal(HttpStatusCode.OK, login.StatusCode);
        return client;
    }

    /// <summary>The session of <paramref name="client"/> used through another server (sessions live in the shared database).</summary>
    private ApiClient Through(ServerProcess server, ApiClient client)
    {
        var http = server.Client();
        http.DefaultRequestHeaders.Authorization = new("Bearer", client.Token);
        return Own(new ApiClient(http, client.User));
    }

    private static async Task<HttpResponseMessage> TryLockAsync(ApiClient client, string siteId) =>
        await client.PostJsonAsync("/api/v1/parcels/vm1/lock", new { siteId, siteName = $"{siteId} name" });

    [SkippableFact]
    public async Task Two_server_processes_over_one_database_share_accounts_parcels_and_locks()
    {
        var connection = await postgres.CreateDatabaseAsync();
        var data = Path.Combine(_dir.Path, "data");
        var init = await ServerProcess.RunToEndAsync("init", "--data", data, "--metadata", connection);
        Assert.True(init.Code == 0, init.Err);
        Assert.False(File.Exists(DataLayout.Database(data))); // no embedded database beside PostgreSQL
        var passwordFile = Path.Combine(_dir.Path, "pw");
        await File.WriteAllTextAsync(passwordFile, "pg pass\n");
        var add = await ServerProcess.RunToEndAsync("user", "add", "carol", "--password-file", passwordFile, "--data", data, "--metadata", connection);
        Assert.True(add.Code == 0, add.Err);

        using var one = await ServerProcess.StartAsync(data, extra: ["--metadata", connection]);
        using var two = await ServerProcess.StartAsync(data, extra: ["--metadata", connection]);
        var a1 = await LoginAsync(one, "carol", "pg pass", "site-a");
        var b2 = await LoginAsync(two, "carol", "pg pass", "site-b");
        var a2 = Through(two, a1);
        var b1 = Through(one, b2);

        // a parcel created through one server is there through the other
        var parcel = new TestParcel("vm1", a1.Secrets!);
        var content = parcel.MakeContent(Chunks);
        using (var upload = await a1.UploadAsync(content.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        VersionRecord first;
        using (var created = await a1.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(Chunks), first = parcel.Record(content, Chunks) }))
        {
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            first = (await created.BodyAsync()).Version();
        }
        Assert.Empty(await b2.MissingAsync(content.Blobs.Select(b => b.Tag)));

        // site A through one server and site B through the other race for the lock: one wins, the other is refused
        for (int round = 0; round < 4; round++)
        {
            var attempts = await Task.WhenAll(TryLockAsync(a1, "site-a"), TryLockAsync(b2, "site-b"));
            var granted = Assert.Single(attempts, r => r.StatusCode == HttpStatusCode.OK);
            var refused = Assert.Single(attempts, r => r.StatusCode != HttpStatusCode.OK);
            Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
            Assert.Equal("locked", await refused.ErrorCodeAsync());
            bool aWon = granted == attempts[0];
            var token = (await granted.BodyAsync()).GetProperty("token").GetString()!;
            // released through the server the winner did not lock through
            var release = new HttpRequestMessage(HttpMethod.Delete, "/api/v1/parcels/vm1/lock");
            release.Headers.Add("Isr-Lock-Token", token);
            using var released = await (aWon ? a2 : b1).Http.SendAsync(release);
            Assert.Equal(HttpStatusCode.NoContent, released.StatusCode);
            foreach (var r in attempts) r.Dispose();
        }

        // site A locks through one; site B is refused through the other; A commits through the other with its token
        var (lockToken, _) = await a1.LockAsync("vm1", "site-a");
        using (var refused = await TryLockAsync(b2, "site-b"))
        {
            Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
            Assert.Equal("site-a", (await refused.BodyAsync()).GetProperty("lock").GetProperty("siteId").GetString());
        }
        var next = parcel.MakeContent(Chunks);
        using (var upload = await a2.UploadAsync(next.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        using (var committed = await a2.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = parcel.Record(next, Chunks, first.Mac) }, lockToken))
        {
            Assert.Equal(HttpStatusCode.Created, committed.StatusCode);
            Assert.Equal(2, (await committed.BodyAsync()).Version().Number);
        }
        using (var listed = await b1.Http.GetAsync("/api/v1/parcels/vm1"))
            Assert.Equal(2, (await listed.BodyAsync()).GetProperty("head").GetInt64());

        var fsck = await ServerProcess.RunToEndAsync("fsck", "--json", "--data", data, "--metadata", connection);
        Assert.True(fsck.Code == 0, fsck.Out + fsck.Err);
        var stats = JsonDocument.Parse((await ServerProcess.RunToEndAsync("stats", "--json", "--data", data, "--metadata", connection)).Out).RootElement;
        Assert.Equal(2, stats.GetProperty("metadata").GetProperty("versions").GetInt32());
        Assert.Equal(1, stats.GetProperty("metadata").GetProperty("heldLocks").GetInt32());
    }

    [SkippableFact]
    public async Task Migrate_copies_an_embedded_deployment_whole_and_it_carries_on_over_postgres()
    {
        var connection = await postgres.CreateDatabaseAsync();
        using var source = new ServerFixture();
        var alice = await source.AddUserAsync("alice", "pw-alice");
        var bob = await source.AddUserAsync("bob", "pw-bob");
        var a = Own(await source.LoginAsync(alice, "site-a"));
        var b = Own(await source.LoginAsync(bob, "site-b"));
        var parcel = new TestParcel("vm1", a.Secrets!);
        var contents = new List<TestParcel.Content> { parcel.MakeContent(Chunks) };
        await a.UploadAsync(contents[0].Blobs);
        VersionRecord head;
        using (var created = await a.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(Chunks), first = parcel.Record(contents[0], Chunks) }))
            head = (await created.BodyAsync()).Version();
        var (lockToken, _) = await a.LockAsync("vm1", "site-a");
        for (int i = 0; i < 2; i++)
        {
            contents.Add(parcel.MakeContent(Chunks));
            await a.UploadAsync(contents[^1].Blobs);
            using var committed = await a.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = parcel.Record(contents[^1], Chunks, head.Mac) }, lockToken);
            Assert.Equal(HttpStatusCode.Created, committed.StatusCode);
            head = (await committed.BodyAsync()).Version();
        }
        var bobs = new TestParcel("bobvm", b.Secrets!, seed: 2);
        var bobContent = bobs.MakeContent(Chunks);
        await b.UploadAsync(bobContent.Blobs);
        using (var created = await b.PostJsonAsync("/api/v1/parcels", new { parcel = bobs.Info(Chunks), first = bobs.Record(bobContent, Chunks) }))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        await source.Metadata.DisableUserAsync("bob", Ct);

        using var target = new ServerFixture(connection); // not started: migrate fills its chunk directory
        var output = new StringWriter();
        int code = await AdminCli.RunAsync(["migrate", "--from-data", source.Data.Path, "--to-metadata", connection,
            "--to-chunks", DataLayout.Chunks(target.Data.Path), "--json"], output);
        Assert.True(code == 0, output.ToString());
        var report = JsonDocument.Parse(output.ToString()).RootElement;
        Assert.Equal((2, 2, 4), (report.GetProperty("users").GetInt32(), report.GetProperty("parcels").GetInt32(), report.GetProperty("versions").GetInt32()));
        long blobs = source.Chunks.ListAsync(Ct).ToBlockingEnumerable().LongCount();
        Assert.Equal(blobs, report.GetProperty("chunksCopied").GetInt64());
        Assert.Empty(report.GetProperty("check").GetProperty("problems").EnumerateArray());

        // every row equal, the same blobs stored; fsck of the target clean through the CLI
        Assert.Equal(MetadataStoreContract.Describe(await source.Metadata.ExportAsync(Ct)), MetadataStoreContract.Describe(await target.Metadata.ExportAsync(Ct)));
        Assert.Equal(source.Chunks.ListAsync(Ct).ToBlockingEnumerable().Select(t => t.ToString()).Order(),
            target.Chunks.ListAsync(Ct).ToBlockingEnumerable().Select(t => t.ToString()).Order());
        Assert.Equal(0, await AdminCli.RunAsync(["fsck", "--data", target.Data.Path, "--metadata", connection], new StringWriter()));

        // the migrated deployment carries on: the same password logs in, the lock still holds, its holder commits
        var a2 = Own(await target.LoginAsync(alice, "site-a"));
        var other = Own(await target.LoginAsync(alice, "site-c"));
        using (var refused = await TryLockAsync(other, "site-c")) Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        var blobsOfHead = await a2.DownloadAsync(contents[^1].Blobs.Select(x => x.Tag));
        Assert.All(blobsOfHead, x => Assert.NotNull(x.Blob));
        var last = parcel.MakeContent(Chunks);
        await a2.UploadAsync(last.Blobs);
        using (var committed = await a2.PostJsonAsync("/api/v1/parcels/vm1/versions", new { version = parcel.Record(last, Chunks, head.Mac) }, lockToken))
        {
            Assert.Equal(HttpStatusCode.Created, committed.StatusCode);
            Assert.Equal(4, (await committed.BodyAsync()).Version().Number);
        }
        using (var login = await new ApiClient(target.CreateClient(), bob).LoginAsync("site-b"))
            Assert.NotEqual(HttpStatusCode.OK, login.StatusCode); // still disabled

        // a second migration into the now non-empty database is refused (exit 4) and changes nothing
        var again = await AdminCli.RunAsync(["migrate", "--from-data", source.Data.Path, "--to-metadata", connection, "--no-fsck"], new StringWriter());
        Assert.Equal(4, again);
        Assert.Equal(5, (await target.Metadata.GetStatsAsync(Ct)).Versions);
    }

    public void Dispose()
    {
        foreach (var item in _owned) item.Dispose();
        _dir.Dispose();
    }
}
