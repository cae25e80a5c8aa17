using System.Security.Cryptography;
using System.Text.Json;
using Isr.Format;
using Isr.Storage.Metadata;

namespace Isr.Server.Tests;

/// <summary>The rules of PROTOCOL.md "Versions" and "Locks" that every metadata engine must keep, run against each
/// engine by a subclass: rule by rule, then races between several store instances over one database (several
/// servers), then whole-deployment export and import.</summary>
public abstract class MetadataStoreContract : IAsyncLifetime, IDisposable
{
    protected static readonly CancellationToken Ct = CancellationToken.None;
    /// <summary>Migrations every engine runs (1: initial schema, 2: hoard).</summary>
    private const int CurrentSchema = 3;
    private readonly List<IMetadataStore> _opened = [];
    private IMetadataStore _store = null!;
    private readonly DateTimeOffset _now = DateTimeOffset.UtcNow;
    private long _user;
    private long _parcel;
    private VersionRecord _first = null!;

    /// <summary>A new, empty database of the engine (not yet initialised); returns its location.</summary>
    protected abstract Task<string> NewDatabaseAsync();
    /// <summary>A store instance over <paramref name="database"/> — each its own connections, as another server has.</summary>
    protected abstract IMetadataStore Open(string database);
    protected abstract Task<int> SchemaVersionAsync(IMetadataStore store);
    /// <summary>Runs <paramref name="sql"/> on <paramref name="database"/> directly (to shape a database as an older server left it).</summary>
    protected abstract Task ExecuteSqlAsync(string database, string sql);

    protected string Database { get; private set; } = "";

    protected IMetadataStore OpenTracked(string database)
    {
        var store = Open(database);
        _opened.Add(store);
        return store;
    }

    public async Task InitializeAsync()
    {
        Database = await NewDatabaseAsync();
        _store = OpenTracked(Database);
        await _store.InitializeAsync(Ct);
        var user = await _store.AddUserAsync(new NewUser("alice", new byte[32], new KdfParameters(new byte[16], 1024, 1, 1), [1], [2]), _now, Ct);
        _user = user.Id;
        _first = Record("first", parentMac: "");
        var created = await _store.CreateParcelAsync(_user, new NewParcel("p", "pid", 4096, 1 << 20, [9], _now), _first, _now, Ct);
        Assert.Equal(CommitStatus.Head, created.Status);
        _first = created.Version!;
        _parcel = (await _store.GetParcelAsync(_user, "p", Ct))!.Key;
    }

    public Task DisposeAsync() => Task.CompletedTask;

    public virtual void Dispose()
    {
        foreach (var s in _opened) s.Dispose();
    }

    private static VersionRecord Record(string commitId, string parentMac) => new()
    {
        ParcelId = "pid",
        CommitId = commitId,
        ParentMac = parentMac,
        Created = DateTimeOffset.UtcNow,
        ChunkSize = 4096,
        DiskSize = 1 << 20,
        DiskRoot = new string('a', 64),
        DescriptorTag = new string('b', 64),
        Mac = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)),
    };

    private async Task<string> LockAsync(string site)
    {
        var grant = await _store.AcquireLockAsync(_parcel, _user, site, site + " name", _now, Ct);
        Assert.True(grant.Granted);
        return grant.Token!;
    }

    [SkippableFact]
    public async Task Schema_has_a_version_and_initialising_again_changes_nothing()
    {
        Assert.Equal(CurrentSchema, await SchemaVersionAsync(_store));
        await _store.InitializeAsync(Ct);
        Assert.Equal(CurrentSchema, await SchemaVersionAsync(_store));
        Assert.Single(await _store.ListVersionsAsync(_parcel, Ct));
    }

    [SkippableFact]
    public async Task Commits_are_numbered_in_order_with_parent_numbers()
    {
        var token = await LockAsync("s1");
        var v2 = await _store.CommitAsync(_parcel, Record("c2", _first.Mac), token, _now, Ct);
        var v3 = await _store.CommitAsync(_parcel, Record("c3", v2.Version!.Mac), token, _now, Ct);
        Assert.Equal((CommitStatus.Head, 2L, 1L), (v2.Status, v2.Version.Number, v2.Version.Parent!.Value));
        Assert.Equal((CommitStatus.Head, 3L, 2L), (v3.Status, v3.Version!.Number, v3.Version.Parent!.Value));
        var listed = await _store.ListVersionsAsync(_parcel, Ct);
        Assert.Equal([1L, 2L, 3L], listed.Select(v => v.Number));
        Assert.Null(listed[0].Parent);
        Assert.All(listed, v => Assert.False(v.Side));
        Assert.Equal(v3.Version.Mac, listed[2].Mac); // the signed fields come back unchanged
        Assert.Equal(3, (await _store.GetParcelSummaryAsync(_parcel, Ct))!.Head);
    }

    [SkippableFact]
    public async Task A_repeated_commit_id_returns_the_version_it_made()
    {
        var token = await LockAsync("s1");
        var record = Record("same", _first.Mac);
        var first = await _store.CommitAsync(_parcel, record, token, _now, Ct);
        var again = await _store.CommitAsync(_parcel, record, token, _now, Ct);
        Assert.Equal(CommitStatus.Head, first.Status);
        Assert.Equal(CommitStatus.Existing, again.Status);
        Assert.Equal(first.Version!.Number, again.Version!.Number);
        Assert.Equal(2, (await _store.ListVersionsAsync(_parcel, Ct)).Count);
        Assert.Equal(2, (await _store.FindByCommitIdAsync(_parcel, "same", Ct))!.Number);
    }

    [SkippableFact]
    public async Task A_stale_parent_makes_a_side_version()
    {
        var token = await LockAsync("s1");
        await _store.CommitAsync(_parcel, Record("c2", _first.Mac), token, _now, Ct);
        var stale = await _store.CommitAsync(_parcel, Record("c3", _first.Mac), token, _now, Ct);
        Assert.Equal(CommitStatus.Side, stale.Status);
        Assert.True(stale.Version!.Side);
        Assert.Equal(1, stale.Version.Parent);
        Assert.Contains("parent", stale.Reason);
        Assert.Equal(2, (await _store.GetParcelSummaryAsync(_parcel, Ct))!.Head);
    }

    [SkippableFact]
    public async Task A_broken_holders_commit_is_kept_as_a_side_version()
    {
        var old = await LockAsync("s1");
        Assert.True(await _store.BreakLockAsync(_parcel, Ct));
        Assert.Null(await _store.GetLockAsync(_parcel, Ct));
        var fresh = await LockAsync("s2");
        Assert.NotEqual(old, fresh);
        var late = await _store.CommitAsync(_parcel, Record("late", _first.Mac), old, _now, Ct);
        Assert.Equal(CommitStatus.Side, late.Status);
        Assert.Contains("broken", late.Reason);
        var head = await _store.CommitAsync(_parcel, Record("new", _first.Mac), fresh, _now, Ct);
        Assert.Equal(CommitStatus.Head, head.Status);
        Assert.Equal(3, head.Version!.Number);
    }

    [SkippableFact]
    public async Task A_token_that_never_locked_this_parcel_is_forbidden()
    {
        var result = await _store.CommitAsync(_parcel, Record("x", _first.Mac), "not-a-token", _now, Ct);
        Assert.Equal(CommitStatus.Forbidden, result.Status);
        Assert.Equal(CommitStatus.Forbidden, (await _store.CommitAsync(_parcel, Record("y", _first.Mac), null, _now, Ct)).Status);
        Assert.Single(await _store.ListVersionsAsync(_parcel, Ct));
    }

    [SkippableFact]
    public async Task Locks_acquire_reacquire_conflict_release()
    {
        var token = await LockAsync("s1");
        var again = await _store.AcquireLockAsync(_parcel, _user, "s1", "s1 renamed", _now.AddMinutes(1), Ct);
        Assert.True(again.Granted);
        Assert.Equal(token, again.Token);
        var other = await _store.AcquireLockAsync(_parcel, _user, "s2", "s2 name", _now, Ct);
        Assert.False(other.Granted);
        Assert.Null(other.Token);
        Assert.Equal("s1", other.Lock.SiteId);
        Assert.Equal("alice", other.Lock.User);

        Assert.Equal(LockRelease.UnknownToken, await _store.ReleaseLockAsync(_parcel, "bogus", Ct));
        Assert.Equal(LockRelease.Released, await _store.ReleaseLockAsync(_parcel, token, Ct));
        Assert.Equal(LockRelease.AlreadyReleased, await _store.ReleaseLockAsync(_parcel, token, Ct));
        Assert.Null(await _store.GetLockAsync(_parcel, Ct));
        Assert.False(await _store.BreakLockAsync(_parcel, Ct));
        var next = await LockAsync("s2");
        Assert.NotEqual(token, next);
        var released = await _store.CommitAsync(_parcel, Record("after-release", _first.Mac), token, _now, Ct);
        Assert.Equal(CommitStatus.Side, released.Status);
    }

    [SkippableFact]
    public async Task Touch_refreshes_last_contact_of_the_current_lock_only()
    {
        var token = await LockAsync("s1");
        var later = _now.AddHours(3);
        await _store.TouchLockAsync(_parcel, "other", later, Ct);
        Assert.Equal(_now.ToUnixTimeMilliseconds(), (await _store.GetLockAsync(_parcel, Ct))!.LastContact.ToUnixTimeMilliseconds());
        await _store.TouchLockAsync(_parcel, token, later, Ct);
        Assert.Equal(later.ToUnixTimeMilliseconds(), (await _store.GetLockAsync(_parcel, Ct))!.LastContact.ToUnixTimeMilliseconds());
    }

    [SkippableFact]
    public async Task Checkin_progress_comes_from_the_holder_only_and_ends_when_it_takes_the_lock_again_or_lets_go()
    {
        var token = await LockAsync("s1");
        Assert.Null((await _store.GetLockAsync(_parcel, Ct))!.Checkin);
        Assert.False(await _store.ReportCheckinAsync(_parcel, "other", 1, 2, _now, Ct));
        Assert.Null((await _store.GetLockAsync(_parcel, Ct))!.Checkin);

        var (start, later) = (_now.AddSeconds(5), _now.AddSeconds(9));
        Assert.True(await _store.ReportCheckinAsync(_parcel, token, 0, null, start, Ct));
        var first = (await _store.GetLockAsync(_parcel, Ct))!.Checkin!;
        Assert.Equal((0L, (long?)null), (first.Sent, first.Total));
        Assert.True(await _store.ReportCheckinAsync(_parcel, token, 40, 120, later, Ct));
        var held = (await _store.GetLockAsync(_parcel, Ct))!;
        Assert.Equal((40L, (long?)120L), (held.Checkin!.Sent, held.Checkin.Total));
        Assert.Equal(start.ToUnixTimeMilliseconds(), held.Checkin.Started.ToUnixTimeMilliseconds()); // the first report's time
        Assert.Equal(later.ToUnixTimeMilliseconds(), held.Checkin.Updated.ToUnixTimeMilliseconds());
        Assert.Equal(later.ToUnixTimeMilliseconds(), held.LastContact.ToUnixTimeMilliseconds());
        Assert.Equal(40, (await _store.GetParcelSummaryAsync(_parcel, Ct))!.Lock!.Checkin!.Sent); // listings show it too
        var refused = await _store.AcquireLockAsync(_parcel, _user, "s2", "s2 name", later, Ct);
        Assert.Equal(40, refused.Lock.Checkin!.Sent); // the site refused is told how far the check-in is

        // the holder takes it again (a resume there): no longer checking in
        var again = await _store.AcquireLockAsync(_parcel, _user, "s1", "s1 name", later, Ct);
        Assert.Null(again.Lock.Checkin);
        Assert.Null((await _store.GetLockAsync(_parcel, Ct))!.Checkin);

        // once released, its reports are refused
        Assert.True(await _store.ReportCheckinAsync(_parcel, token, 1, 2, later, Ct));
        Assert.Equal(LockRelease.Released, await _store.ReleaseLockAsync(_parcel, token, Ct));
        Assert.False(await _store.ReportCheckinAsync(_parcel, token, 2, 2, later, Ct));
        Assert.Null(await _store.GetLockAsync(_parcel, Ct));
    }

    [SkippableFact]
    public async Task Migration_3_adds_checkin_progress_to_a_database_with_a_lock_held_at_schema_2()
    {
        var token = await LockAsync("s1");
        await ExecuteSqlAsync(Database, """
            ALTER TABLE locks DROP COLUMN checkin_sent;
            ALTER TABLE locks DROP COLUMN checkin_total;
            ALTER TABLE locks DROP COLUMN checkin_started;
            ALTER TABLE locks DROP COLUMN checkin_updated;
            DELETE FROM schema_version WHERE version = 3;
            """);
        Assert.Equal(2, await SchemaVersionAsync(_store));
        var upgraded = OpenTracked(Database);
        await upgraded.InitializeAsync(Ct);
        Assert.Equal(3, await SchemaVersionAsync(upgraded));
        var held = (await upgraded.GetLockAsync(_parcel, Ct))!;
        Assert.Equal(("s1", (LockCheckin?)null), (held.SiteId, held.Checkin));
        Assert.True(await upgraded.ReportCheckinAsync(_parcel, token, 1, 2, _now, Ct));
        Assert.Equal(1, (await upgraded.GetLockAsync(_parcel, Ct))!.Checkin!.Sent);
    }

    [SkippableFact]
    public async Task Rollback_needs_the_head_as_parent_and_no_other_holder()
    {
        var token = await LockAsync("s1");
        var v2 = (await _store.CommitAsync(_parcel, Record("c2", _first.Mac), token, _now, Ct)).Version!;
        var blocked = await _store.RollbackAsync(_parcel, Record("rb", v2.Mac), null, _now, Ct);
        Assert.Equal(CommitStatus.Locked, blocked.Status);
        Assert.Equal("s1", blocked.Lock!.SiteId);
        var wrongParent = await _store.RollbackAsync(_parcel, Record("rb", _first.Mac), token, _now, Ct);
        Assert.Equal(CommitStatus.Conflict, wrongParent.Status);
        var ok = await _store.RollbackAsync(_parcel, Record("rb", v2.Mac), token, _now, Ct);
        Assert.Equal((CommitStatus.Head, 3L), (ok.Status, ok.Version!.Number));
        await _store.ReleaseLockAsync(_parcel, token, Ct);
        var unlocked = await _store.RollbackAsync(_parcel, Record("rb2", ok.Version.Mac), null, _now, Ct);
        Assert.Equal(CommitStatus.Head, unlocked.Status);
    }

    [SkippableFact]
    public async Task Creating_an_existing_parcel_conflicts_unless_it_is_the_same_first_commit()
    {
        var again = await _store.CreateParcelAsync(_user, new NewParcel("p", "pid", 4096, 1 << 20, [9], _now), _first, _now, Ct);
        Assert.Equal(CommitStatus.Existing, again.Status);
        var other = await _store.CreateParcelAsync(_user, new NewParcel("p", "pid2", 4096, 1 << 20, [9], _now), Record("other", ""), _now, Ct);
        Assert.Equal(CommitStatus.Conflict, other.Status);
    }

    [SkippableFact]
    public async Task Prune_keeps_the_newest_heads_and_newer_side_versions()
    {
        var token = await LockAsync("s1");
        var head = _first;
        for (int i = 2; i <= 5; i++) head = (await _store.CommitAsync(_parcel, Record($"c{i}", head.Mac), token, _now, Ct)).Version!;
        var oldSide = await _store.CommitAsync(_parcel, Record("side-old", _first.Mac), token, _now, Ct); // 6, side
        head = (await _store.CommitAsync(_parcel, Record("c7", head.Mac), token, _now, Ct)).Version!;      // 7
        Assert.Equal(CommitStatus.Side, oldSide.Status);
        var removed = await _store.PruneAsync(_parcel, 2, Ct);
        // heads: 1,2,3,4,5,7 → keep 5 and 7; side 6 is newer than 5 and stays
        Assert.Equal([1L, 2L, 3L, 4L], removed.Select(v => v.Number));
        Assert.Equal([5L, 6L, 7L], (await _store.ListVersionsAsync(_parcel, Ct)).Select(v => v.Number));
        Assert.Empty(await _store.PruneAsync(_parcel, 2, Ct));
        var next = await _store.CommitAsync(_parcel, Record("c8", head.Mac), token, _now, Ct);
        Assert.Equal((CommitStatus.Head, 8L), (next.Status, next.Version!.Number));
    }

    [SkippableFact]
    public async Task Sessions_resolve_until_revoked_or_expired_and_disabling_revokes()
    {
        var hash = SHA256.HashData("tok"u8);
        await _store.CreateSessionAsync(hash, _user, "s", "site", _now, _now.AddHours(1), Ct);
        Assert.Equal("alice", (await _store.ResolveSessionAsync(hash, _now, Ct))!.UserName);
        Assert.Null(await _store.ResolveSessionAsync(hash, _now.AddHours(2), Ct));
        await _store.RevokeSessionAsync(hash, Ct);
        Assert.Null(await _store.ResolveSessionAsync(hash, _now, Ct));
        var other = SHA256.HashData("tok2"u8);
        await _store.CreateSessionAsync(other, _user, "s", "site", _now, _now.AddHours(1), Ct);
        Assert.True(await _store.DisableUserAsync("alice", Ct));
        Assert.Null(await _store.ResolveSessionAsync(other, _now, Ct));
        Assert.True((await _store.GetUserAsync("alice", Ct))!.Disabled);
        Assert.False(await _store.DisableUserAsync("nobody", Ct));
        await Assert.ThrowsAsync<MetadataConflictException>(() =>
            _store.AddUserAsync(new NewUser("alice", new byte[32], new KdfParameters(new byte[16], 1024, 1, 1), [1], [2]), _now, Ct));
    }

    [SkippableFact]
    public async Task Hoard_only_site_tokens_and_hoard_requests_open_report_and_revoke()
    {
        var first = SHA256.HashData("hoard1"u8);
        await _store.CreateSiteTokenAsync(first, _user, "site-b", "b", _now, Ct);
        var resolved = (await _store.ResolveSiteTokenAsync(first, Ct))!;
        Assert.Equal(("alice", "site-b", "b", true), (resolved.UserName, resolved.SiteId, resolved.SiteName, resolved.HoardOnly));
        Assert.Null(await _store.ResolveSessionAsync(first, _now, Ct)); // never a login session
        var second = SHA256.HashData("hoard2"u8);
        await _store.CreateSiteTokenAsync(second, _user, "site-b", "b", _now, Ct); // a new login of the site replaces its token
        Assert.Null(await _store.ResolveSiteTokenAsync(first, Ct));
        Assert.NotNull(await _store.ResolveSiteTokenAsync(second, Ct));
        var site = Assert.Single(await _store.ListSitesAsync(_user, Ct));
        Assert.Equal(("site-b", "b"), (site.SiteId, site.SiteName));

        // one open request per parcel, site and version, even when several servers add it at once
        var adds = await Task.WhenAll(Enumerable.Range(0, 6).Select(i =>
            OpenTracked(Database).AddHoardRequestAsync(_user, _parcel, site, null, _now, Ct)));
        Assert.Single(adds, a => a.Created);
        var request = Assert.Single(adds.Select(a => a.Request.Id).Distinct());
        var listed = Assert.Single(await _store.ListHoardRequestsAsync(_user, "site-b", Ct));
        Assert.Equal((request, "p", HoardStates.Pending, (long?)null), (listed.Id, listed.Parcel, listed.State, listed.Version));
        Assert.Empty(await _store.ListHoardRequestsAsync(_user, "other", Ct));
        Assert.True(await _store.HasOpenHoardRequestAsync(_user, "site-b", _parcel, Ct));
        Assert.False(await _store.HasOpenHoardRequestAsync(_user, "other", _parcel, Ct));

        // the site reports; another site cannot; an ended request takes no more reports
        Assert.Null(await _store.UpdateHoardRequestAsync(_user, "other", request, new HoardUpdate(HoardStates.Running, 1, 1, 9, 100, null), _now, Ct));
        var running = (await _store.UpdateHoardRequestAsync(_user, "site-b", request, new HoardUpdate(HoardStates.Running, 1, 3, 9, 300, null), _now, Ct))!;
        Assert.Equal((HoardStates.Running, (long?)1, 3L, 9L, 300L), (running.State, running.Version, running.BlobsDone, running.BlobsTotal, running.BytesDone));
        var done = (await _store.UpdateHoardRequestAsync(_user, "site-b", request, new HoardUpdate(HoardStates.Done, null, 9, 9, 900, null), _now, Ct))!;
        Assert.Equal((HoardStates.Done, (long?)1), (done.State, done.Version)); // the version reported earlier stays
        Assert.Null(await _store.UpdateHoardRequestAsync(_user, "site-b", request, new HoardUpdate(HoardStates.Running, 1, 0, 9, 0, null), _now, Ct));
        Assert.False(await _store.HasOpenHoardRequestAsync(_user, "site-b", _parcel, Ct));

        // revoking the site ends its token and its open requests
        var (again, created) = await _store.AddHoardRequestAsync(_user, _parcel, site, 1, _now, Ct);
        Assert.True(created);
        Assert.True(await _store.RevokeSiteAsync(_user, "site-b", _now, Ct));
        Assert.False(await _store.RevokeSiteAsync(_user, "site-b", _now, Ct));
        Assert.Null(await _store.ResolveSiteTokenAsync(second, Ct));
        Assert.Empty(await _store.ListSitesAsync(_user, Ct));
        var requests = await _store.ListHoardRequestsAsync(_user, null, Ct);
        Assert.Equal([(again.Id, HoardStates.Revoked), (request, HoardStates.Done)], requests.Select(r => (r.Id, r.State)));

        // disabling the user revokes its sites' tokens too
        var third = SHA256.HashData("hoard3"u8);
        await _store.CreateSiteTokenAsync(third, _user, "site-c", "c", _now, Ct);
        Assert.True(await _store.DisableUserAsync("alice", Ct));
        Assert.Null(await _store.ResolveSiteTokenAsync(third, Ct));
    }

    [SkippableFact]
    public async Task Blob_holders_are_per_user_and_forgotten_only_when_old()
    {
        var tag = new ChunkTag(new Hash32(RandomNumberGenerator.GetBytes(32)));
        var bob = (await _store.AddUserAsync(new NewUser("bob", new byte[32], new KdfParameters(new byte[16], 1024, 1, 1), [1], [2]), _now, Ct)).Id;
        await _store.RecordBlobsAsync(_user, [tag], _now, Ct);
        Assert.Single(await _store.HeldBlobsAsync(_user, [tag], null, Ct));
        Assert.Empty(await _store.HeldBlobsAsync(bob, [tag], null, Ct));
        Assert.False(await _store.ForgetBlobAsync(tag, _now, Ct));          // seen at _now: not before it
        await _store.HeldBlobsAsync(_user, [tag], _now.AddMinutes(30), Ct); // touch
        Assert.False(await _store.ForgetBlobAsync(tag, _now.AddMinutes(10), Ct));
        Assert.True(await _store.ForgetBlobAsync(tag, _now.AddMinutes(31), Ct));
        Assert.Empty(await _store.HeldBlobsAsync(_user, [tag], null, Ct));
    }

    // ------------------------------------------------------------------ races between servers

    private const int Servers = 2, CallersPerServer = 4, Rounds = 8;

    /// <summary>Store instances over this test's database, one per simulated server; the first is the test's own.</summary>
    private IReadOnlyList<IMetadataStore> ServerStores() =>
        [_store, .. Enumerable.Range(1, Servers - 1).Select(_ => OpenTracked(Database))];

    /// <summary>Runs <paramref name="call"/> from every caller of every server at once (each on the thread pool).</summary>
    private static Task<T[]> RaceAsync<T>(IReadOnlyList<IMetadataStore> servers, Func<IMetadataStore, int, Task<T>> call) =>
        Task.WhenAll(Enumerable.Range(0, servers.Count * CallersPerServer)
            .Select(i => Task.Run(() => call(servers[i % servers.Count], i))));

    /// <summary>Each round, every caller of every server commits on one parcel with the same lock and the same parent:
    /// exactly one becomes the head, the rest are side versions, and numbers stay dense.</summary>
    [SkippableFact]
    public async Task Concurrent_commits_on_one_parcel_have_exactly_one_head_each_round()
    {
        var token = await LockAsync("s1");
        var servers = ServerStores();
        var head = _first;
        for (int round = 0; round < Rounds; round++)
        {
            var parentMac = head.Mac;
            var results = await RaceAsync(servers, (s, i) =>
                s.CommitAsync(_parcel, Record($"r{round}-w{i}", parentMac), token, DateTimeOffset.UtcNow, Ct));
            head = Assert.Single(results, r => r.Status == CommitStatus.Head).Version!;
            Assert.All(results.Where(r => r.Status != CommitStatus.Head), r =>
            {
                Assert.Equal(CommitStatus.Side, r.Status);
                Assert.Contains("no longer the head", r.Reason);
            });
        }
        var all = await _store.ListVersionsAsync(_parcel, Ct);
        int racers = Servers * CallersPerServer;
        Assert.Equal(Enumerable.Range(1, 1 + racers * Rounds).Select(i => (long)i), all.Select(v => v.Number));
        Assert.Equal(Rounds + 1, all.Count(v => !v.Side));
        Assert.Equal(head.Number, (await servers[^1].GetParcelSummaryAsync(_parcel, Ct))!.Head);
    }

    /// <summary>A retried commit arriving at two servers at once still makes one version.</summary>
    [SkippableFact]
    public async Task The_same_commit_racing_through_several_servers_makes_one_version()
    {
        var token = await LockAsync("s1");
        var servers = ServerStores();
        var record = Record("retried", _first.Mac);
        var results = await RaceAsync(servers, (s, _) => s.CommitAsync(_parcel, record, token, DateTimeOffset.UtcNow, Ct));
        Assert.Single(results, r => r.Status == CommitStatus.Head);
        Assert.All(results, r => Assert.Equal(2, r.Version!.Number));
        Assert.Equal(results.Length - 1, results.Count(r => r.Status == CommitStatus.Existing));
        Assert.Equal(2, (await _store.ListVersionsAsync(_parcel, Ct)).Count);
    }

    /// <summary>Each round, sites through every server try to lock one parcel: one is granted, every other attempt is
    /// refused naming that holder.</summary>
    [SkippableFact]
    public async Task Concurrent_lock_attempts_have_exactly_one_winner_each_round()
    {
        var servers = ServerStores();
        for (int round = 0; round < Rounds; round++)
        {
            var grants = await RaceAsync(servers, (s, i) =>
                s.AcquireLockAsync(_parcel, _user, $"site-{round}-{i}", "n", DateTimeOffset.UtcNow, Ct));
            var winner = Assert.Single(grants, g => g.Granted);
            Assert.All(grants.Where(g => !g.Granted), g =>
            {
                Assert.Null(g.Token);
                Assert.Equal(winner.Lock.SiteId, g.Lock.SiteId);
            });
            Assert.Equal(winner.Lock.SiteId, (await servers[^1].GetLockAsync(_parcel, Ct))!.SiteId);
            // alternate between an orderly release and a break, each through the other server
            if (round % 2 == 0) Assert.Equal(LockRelease.Released, await servers[^1].ReleaseLockAsync(_parcel, winner.Token!, Ct));
            else Assert.True(await servers[^1].BreakLockAsync(_parcel, Ct));
        }
    }

    /// <summary>Releasing and breaking the same lock at once: exactly one of them ends it.</summary>
    [SkippableFact]
    public async Task A_release_racing_a_break_ends_the_lock_once()
    {
        var servers = ServerStores();
        for (int round = 0; round < Rounds; round++)
        {
            var token = await LockAsync($"s{round}");
            var release = Task.Run(() => servers[0].ReleaseLockAsync(_parcel, token, Ct));
            var broken = Task.Run(() => servers[^1].BreakLockAsync(_parcel, Ct));
            bool released = await release == LockRelease.Released;
            Assert.True(released ^ await broken, "exactly one of release and break ends the lock");
            Assert.Null(await _store.GetLockAsync(_parcel, Ct));
        }
    }

    /// <summary>The same parcel created through several servers at once: one creation; the same first commit is
    /// recognised, another one conflicts.</summary>
    [SkippableFact]
    public async Task Concurrent_creations_of_one_parcel_make_it_once()
    {
        var servers = ServerStores();
        var first = Record("create-q", "");
        var results = await RaceAsync(servers, (s, i) => s.CreateParcelAsync(_user, new NewParcel("q", "qid", 4096, 1 << 20, [9], _now),
            i % 2 == 0 ? first : Record($"other-{i}", ""), _now, Ct));
        var made = Assert.Single(results, r => r.Status == CommitStatus.Head);
        bool firstWon = made.Version!.CommitId == first.CommitId;
        foreach (var (r, i) in results.Select((r, i) => (r, i)).Where(x => x.r.Status != CommitStatus.Head))
        {
            Assert.Equal(i % 2 == 0 && firstWon ? CommitStatus.Existing : CommitStatus.Conflict, r.Status);
            if (r.Status == CommitStatus.Existing) Assert.Equal(1, r.Version!.Number);
        }
        var q = (await _store.GetParcelAsync(_user, "q", Ct))!;
        Assert.Single(await _store.ListVersionsAsync(q.Key, Ct));
    }

    [SkippableFact]
    public async Task Concurrent_additions_of_one_user_make_it_once()
    {
        var servers = ServerStores();
        var outcomes = await RaceAsync(servers, async (s, _) =>
        {
            try { await s.AddUserAsync(new NewUser("carol", new byte[32], new KdfParameters(new byte[16], 1024, 1, 1), [1], [2]), _now, Ct); return true; }
            catch (MetadataConflictException) { return false; }
        });
        Assert.Single(outcomes, won => won);
        Assert.Single(await _store.ListUsersAsync(Ct), u => u.Name == "carol");
    }

    /// <summary>Servers starting together over a new database: each initialises, one schema results.</summary>
    [SkippableFact]
    public async Task Servers_initialising_a_new_database_at_once_make_one_schema()
    {
        var database = await NewDatabaseAsync();
        var servers = Enumerable.Range(0, Servers * CallersPerServer).Select(_ => OpenTracked(database)).ToList();
        await Task.WhenAll(servers.Select(s => Task.Run(() => s.InitializeAsync(Ct))));
        Assert.Equal(CurrentSchema, await SchemaVersionAsync(servers[0]));
        var secrets = await Task.WhenAll(servers.Select(s => s.GetServerSecretAsync(Ct)));
        Assert.All(secrets, s => Assert.Equal(secrets[0], s));
        Assert.Equal(32, secrets[0].Length);
    }

    // ------------------------------------------------------------------ transfer

    /// <summary>Everything a deployment holds: lock states of each kind, sessions, holdings, epoch, pruned history.</summary>
    private async Task PopulateAsync()
    {
        var token = await LockAsync("s1");
        var v2 = (await _store.CommitAsync(_parcel, Record("c2", _first.Mac), token, _now, Ct)).Version!;
        await _store.CommitAsync(_parcel, Record("side", _first.Mac), token, _now, Ct);
        await _store.ReleaseLockAsync(_parcel, token, Ct);
        var broken = await LockAsync("s2");
        await _store.BreakLockAsync(_parcel, Ct);
        await LockAsync("s3");
        await _store.CommitAsync(_parcel, Record("late", v2.Mac), broken, _now.AddSeconds(1), Ct);
        var bob = await _store.AddUserAsync(new NewUser("bob", [7, 7], new KdfParameters([1, 2], 2048, 2, 1), [3], [4]), _now, Ct);
        await _store.DisableUserAsync("bob", Ct);
        var bobs = await _store.CreateParcelAsync(bob.Id, new NewParcel("b", "bid", 8192, 1 << 22, [5], _now), Record("b1", ""), _now, Ct);
        Assert.Equal(CommitStatus.Head, bobs.Status);
        await _store.CreateSessionAsync(SHA256.HashData("t1"u8), _user, "s1", "one", _now, _now.AddDays(1), Ct);
        await _store.CreateSessionAsync(SHA256.HashData("t2"u8), bob.Id, "s2", "two", _now, _now.AddDays(1), Ct);
        var tags = Enumerable.Range(0, 50).Select(_ => new ChunkTag(new Hash32(RandomNumberGenerator.GetBytes(32)))).ToList();
        await _store.RecordBlobsAsync(_user, tags, _now, Ct);
        await _store.RecordBlobsAsync(bob.Id, tags[..10], _now.AddMinutes(5), Ct);
        await _store.AdvanceCollectionEpochAsync(Ct);
        await _store.AdvanceCollectionEpochAsync(Ct);
        await _store.CreateSiteTokenAsync(SHA256.HashData("h1"u8), _user, "s1", "one", _now, Ct);
        await _store.CreateSiteTokenAsync(SHA256.HashData("h2"u8), _user, "s1", "one", _now, Ct); // revokes h1
        var site = Assert.Single(await _store.ListSitesAsync(_user, Ct));
        var (request, _) = await _store.AddHoardRequestAsync(_user, _parcel, site, null, _now, Ct);
        await _store.UpdateHoardRequestAsync(_user, "s1", request.Id, new HoardUpdate(HoardStates.Done, 2, 5, 5, 500, null), _now, Ct);
        await _store.AddHoardRequestAsync(_user, _parcel, site, 1, _now, Ct);
    }

    /// <summary>A snapshot as comparable text (records holding byte arrays compare by reference).</summary>
    public static string Describe(MetadataSnapshot s) => JsonSerializer.Serialize(new
    {
        s.ServerSecret, s.CollectionEpoch, s.Users, s.Sessions, s.Parcels, s.Versions, s.Locks,
        Holdings = s.Holdings.Select(h => new { Tag = h.Tag.ToString(), h.UserId, h.LastSeen }),
        s.SiteTokens, s.HoardRequests,
    });

    [SkippableFact]
    public async Task Export_then_import_into_an_empty_store_keeps_every_row_and_the_rules_carry_on()
    {
        await PopulateAsync();
        var exported = await _store.ExportAsync(Ct);
        Assert.Equal(3, exported.Locks.Count);
        Assert.Equal(60, exported.Holdings.Count);
        Assert.Equal((2, 2), (exported.SiteTokens.Count, exported.HoardRequests.Count));
        var target = OpenTracked(await NewDatabaseAsync());
        await target.InitializeAsync(Ct);
        await target.ImportAsync(exported, Ct);
        Assert.Equal(Describe(exported), Describe(await target.ExportAsync(Ct)));
        Assert.Equal(await _store.GetStatsAsync(Ct), await target.GetStatsAsync(Ct));
        await Assert.ThrowsAsync<MetadataConflictException>(() => target.ImportAsync(exported, Ct));

        // ids continue after the imported ones; the imported lock still rules the parcel
        var dave = await target.AddUserAsync(new NewUser("dave", new byte[32], new KdfParameters(new byte[16], 1024, 1, 1), [1], [2]), _now, Ct);
        Assert.True(dave.Id > exported.Users.Max(u => u.Id));
        var refused = await target.AcquireLockAsync(_parcel, _user, "elsewhere", "x", _now, Ct);
        Assert.Equal(("s3", false), (refused.Lock.SiteId, refused.Granted));
        var made = await target.CreateParcelAsync(dave.Id, new NewParcel("d", "did", 4096, 1 << 20, [9], _now), Record("d1", ""), _now, Ct);
        Assert.True((await target.GetParcelAsync(dave.Id, "d", Ct))!.Key > exported.Parcels.Max(p => p.Key));
        Assert.Equal(CommitStatus.Head, made.Status);

        // the site's hoard-only token still works there; request ids continue too
        var site = (await target.ResolveSiteTokenAsync(SHA256.HashData("h2"u8), Ct))!;
        Assert.Null(await target.ResolveSiteTokenAsync(SHA256.HashData("h1"u8), Ct));
        var (next, created) = await target.AddHoardRequestAsync(_user, _parcel, new SiteRecord(site.SiteId, site.SiteName, site.Created), 7, _now, Ct);
        Assert.True(created && next.Id > exported.HoardRequests.Max(r => r.Request.Id));
    }
}
