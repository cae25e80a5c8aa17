using System.Security.Cryptography;
using Isr.Format;
using Isr.Storage.Metadata;

namespace Isr.Server.Tests;

/// <summary>The rules of PROTOCOL.md "Versions" and "Locks" against the SQLite engine on a temporary file.</summary>
public sealed class SqliteMetadataStoreTests : IAsyncLifetime, IDisposable
{
    private static readonly CancellationToken Ct = CancellationToken.None;
    private readonly TempDir _dir = new();
    private readonly SqliteMetadataStore _store;
    private readonly DateTimeOffset _now = DateTimeOffset.UtcNow;
    private long _user;
    private long _parcel;
    private VersionRecord _first = null!;

    public SqliteMetadataStoreTests() => _store = new SqliteMetadataStore(Path.Combine(_dir.Path, "isr.db"));

    public async Task InitializeAsync()
    {
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

    public void Dispose()
    {
        _store.Dispose();
        _dir.Dispose();
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

    [Fact]
    public async Task Schema_has_a_version_and_initialising_again_changes_nothing()
    {
        Assert.Equal(1, await _store.SchemaVersionAsync(Ct));
        await _store.InitializeAsync(Ct);
        Assert.Equal(1, await _store.SchemaVersionAsync(Ct));
        Assert.Single(await _store.ListVersionsAsync(_parcel, Ct));
    }

    [Fact]
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

    [Fact]
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

    [Fact]
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

    [Fact]
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

    [Fact]
    public async Task A_token_that_never_locked_this_parcel_is_forbidden()
    {
        var result = await _store.CommitAsync(_parcel, Record("x", _first.Mac), "not-a-token", _now, Ct);
        Assert.Equal(CommitStatus.Forbidden, result.Status);
        Assert.Equal(CommitStatus.Forbidden, (await _store.CommitAsync(_parcel, Record("y", _first.Mac), null, _now, Ct)).Status);
        Assert.Single(await _store.ListVersionsAsync(_parcel, Ct));
    }

    [Fact]
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

    [Fact]
    public async Task Touch_refreshes_last_contact_of_the_current_lock_only()
    {
        var token = await LockAsync("s1");
        var later = _now.AddHours(3);
        await _store.TouchLockAsync(_parcel, "other", later, Ct);
        Assert.Equal(_now.ToUnixTimeMilliseconds(), (await _store.GetLockAsync(_parcel, Ct))!.LastContact.ToUnixTimeMilliseconds());
        await _store.TouchLockAsync(_parcel, token, later, Ct);
        Assert.Equal(later.ToUnixTimeMilliseconds(), (await _store.GetLockAsync(_parcel, Ct))!.LastContact.ToUnixTimeMilliseconds());
    }

    [Fact]
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

    [Fact]
    public async Task Creating_an_existing_parcel_conflicts_unless_it_is_the_same_first_commit()
    {
        var again = await _store.CreateParcelAsync(_user, new NewParcel("p", "pid", 4096, 1 << 20, [9], _now), _first, _now, Ct);
        Assert.Equal(CommitStatus.Existing, again.Status);
        var other = await _store.CreateParcelAsync(_user, new NewParcel("p", "pid2", 4096, 1 << 20, [9], _now), Record("other", ""), _now, Ct);
        Assert.Equal(CommitStatus.Conflict, other.Status);
    }

    [Fact]
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

    [Fact]
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

    [Fact]
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

    /// <summary>Each round, 2×N writers on separate store instances (separate connections) commit on one parcel with
    /// the same lock and the same parent: exactly one becomes the head, the rest are side versions.</summary>
    [Fact]
    public async Task Concurrent_commits_on_one_parcel_have_exactly_one_head_each_round()
    {
        const int writers = 8, rounds = 6;
        var token = await LockAsync("s1");
        var stores = Enumerable.Range(0, writers).Select(_ => new SqliteMetadataStore(_store.DatabasePath)).ToList();
        try
        {
            var head = _first;
            for (int round = 0; round < rounds; round++)
            {
                var parentMac = head.Mac;
                var results = await Task.WhenAll(stores.Select((s, i) => Task.Run(() =>
                    s.CommitAsync(_parcel, Record($"r{round}-w{i}", parentMac), token, DateTimeOffset.UtcNow, Ct))));
                Assert.Single(results, r => r.Status == CommitStatus.Head);
                Assert.Equal(writers - 1, results.Count(r => r.Status == CommitStatus.Side));
                head = results.Single(r => r.Status == CommitStatus.Head).Version!;
            }
            var all = await _store.ListVersionsAsync(_parcel, Ct);
            Assert.Equal(Enumerable.Range(1, 1 + writers * rounds).Select(i => (long)i), all.Select(v => v.Number));
            Assert.Equal(rounds + 1, all.Count(v => !v.Side));
        }
        finally
        {
            foreach (var s in stores) s.Dispose();
        }
    }

    [Fact]
    public async Task Concurrent_lock_attempts_have_exactly_one_winner_each_round()
    {
        const int sites = 8, rounds = 6;
        var stores = Enumerable.Range(0, sites).Select(_ => new SqliteMetadataStore(_store.DatabasePath)).ToList();
        try
        {
            for (int round = 0; round < rounds; round++)
            {
                var grants = await Task.WhenAll(stores.Select((s, i) => Task.Run(() =>
                    s.AcquireLockAsync(_parcel, _user, $"site-{round}-{i}", "n", DateTimeOffset.UtcNow, Ct))));
                var winner = Assert.Single(grants, g => g.Granted);
                Assert.All(grants.Where(g => !g.Granted), g => Assert.Equal(winner.Lock.SiteId, g.Lock.SiteId));
                Assert.Equal(LockRelease.Released, await _store.ReleaseLockAsync(_parcel, winner.Token!, Ct));
            }
        }
        finally
        {
            foreach (var s in stores) s.Dispose();
        }
    }

    [Fact]
    public void Prune_policy_never_removes_the_head()
    {
        var versions = Enumerable.Range(1, 5).Select(i => Record($"c{i}", "") with { Number = i }).ToList();
        Assert.Equal([1L, 2L, 3L, 4L], PrunePolicy.Select(versions, 1).Select(v => v.Number));
        Assert.Empty(PrunePolicy.Select(versions, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => PrunePolicy.Select(versions, 0));
    }
}
