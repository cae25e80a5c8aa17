using System.Security.Cryptography;
using Isr.Format;
using Microsoft.Data.Sqlite;

namespace Isr.Storage.Metadata;

/// <summary>
/// The embedded metadata engine: one SQLite file in WAL mode. Every read-then-write rule runs in one
/// <c>BEGIN IMMEDIATE</c> transaction, which takes the database's write lock up front, so concurrent commits or lock
/// attempts (threads, or processes sharing the file) are serialised and exactly one wins. Readers never block.
/// </summary>
public sealed class SqliteMetadataStore : IMetadataStore
{
    private readonly string _connectionString;
    public string DatabasePath { get; }

    public SqliteMetadataStore(string databasePath)
    {
        DatabasePath = Path.GetFullPath(databasePath);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = DatabasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = true,
            DefaultTimeout = 60,
        }.ToString();
    }

    public void Dispose() => SqliteConnection.ClearAllPools();

    // ------------------------------------------------------------------ plumbing

    private async Task<SqliteConnection> OpenAsync(CancellationToken ct)
    {
        var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync(ct);
        using var pragma = connection.CreateCommand();
        pragma.CommandText = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 60000; PRAGMA synchronous = FULL;";
        await pragma.ExecuteNonQueryAsync(ct);
        return connection;
    }

    /// <summary>Runs <paramref name="body"/> in one BEGIN IMMEDIATE transaction; commits if it returns.</summary>
    private async Task<T> WriteAsync<T>(Func<Db, Task<T>> body, CancellationToken ct)
    {
        await using var connection = await OpenAsync(ct);
        await using var tx = connection.BeginTransaction(deferred: false); // BEGIN IMMEDIATE
        var result = await body(new Db(connection, tx, ct));
        await tx.CommitAsync(ct);
        return result;
    }

    private async Task<T> ReadAsync<T>(Func<Db, Task<T>> body, CancellationToken ct)
    {
        await using var connection = await OpenAsync(ct);
        await using var tx = connection.BeginTransaction(deferred: true); // one consistent snapshot
        return await body(new Db(connection, tx, ct));
    }

    private sealed class Db(SqliteConnection connection, SqliteTransaction tx, CancellationToken ct)
    {
        public CancellationToken Ct => ct;

        public SqliteCommand Command(string sql, params (string Name, object? Value)[] args)
        {
            var cmd = connection.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = sql;
            foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
            return cmd;
        }

        public async Task<int> ExecAsync(string sql, params (string, object?)[] args)
        {
            await using var cmd = Command(sql, args);
            return await cmd.ExecuteNonQueryAsync(ct);
        }

        public async Task<object?> ScalarAsync(string sql, params (string, object?)[] args)
        {
            await using var cmd = Command(sql, args);
            var value = await cmd.ExecuteScalarAsync(ct);
            return value is DBNull ? null : value;
        }

        public async Task<List<T>> QueryAsync<T>(string sql, Func<SqliteDataReader, T> map, params (string, object?)[] args)
        {
            await using var cmd = Command(sql, args);
            await using var reader = await cmd.ExecuteReaderAsync(ct);
            var list = new List<T>();
            while (await reader.ReadAsync(ct)) list.Add(map(reader));
            return list;
        }

        public async Task<T?> SingleAsync<T>(string sql, Func<SqliteDataReader, T> map, params (string, object?)[] args) where T : class =>
            (await QueryAsync(sql, map, args)).FirstOrDefault();
    }

    private static long Ms(DateTimeOffset t) => t.ToUnixTimeMilliseconds();
    private static DateTimeOffset Time(long ms) => DateTimeOffset.FromUnixTimeMilliseconds(ms);
    private static byte[] TagBytes(ChunkTag tag) => tag.Hash.ToArray();

    // ------------------------------------------------------------------ schema

    private static readonly string[] Migrations =
    [
        // 1: initial schema
        """
        CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            verifier BLOB NOT NULL,
            kdf_salt BLOB NOT NULL, kdf_memory INTEGER NOT NULL, kdf_iterations INTEGER NOT NULL, kdf_parallelism INTEGER NOT NULL,
            wrapped_secrets BLOB NOT NULL,
            recovery_wrapped BLOB NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            created INTEGER NOT NULL);
        CREATE TABLE sessions (
            token_hash BLOB PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            site_id TEXT NOT NULL, site_name TEXT NOT NULL,
            created INTEGER NOT NULL, expires INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE parcels (
            key INTEGER PRIMARY KEY,
            owner_id INTEGER NOT NULL REFERENCES users(id),
            name TEXT NOT NULL,
            parcel_id TEXT NOT NULL,
            chunk_size INTEGER NOT NULL, disk_size INTEGER NOT NULL,
            wrapped_key BLOB NOT NULL,
            created INTEGER NOT NULL,
            UNIQUE (owner_id, name));
        CREATE TABLE versions (
            parcel_key INTEGER NOT NULL REFERENCES parcels(key),
            number INTEGER NOT NULL,
            commit_id TEXT NOT NULL,
            mac TEXT NOT NULL,
            parent_mac TEXT NOT NULL,
            parent INTEGER,
            side INTEGER NOT NULL,
            reason TEXT,
            record BLOB NOT NULL,
            committed INTEGER NOT NULL,
            PRIMARY KEY (parcel_key, number));
        CREATE UNIQUE INDEX versions_commit_id ON versions (parcel_key, commit_id) WHERE commit_id <> '';
        CREATE INDEX versions_mac ON versions (parcel_key, mac);
        CREATE TABLE locks (
            token TEXT PRIMARY KEY,
            parcel_key INTEGER NOT NULL REFERENCES parcels(key),
            user_id INTEGER NOT NULL REFERENCES users(id),
            site_id TEXT NOT NULL, site_name TEXT NOT NULL,
            acquired INTEGER NOT NULL, last_contact INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('held', 'released', 'broken')));
        CREATE UNIQUE INDEX locks_held ON locks (parcel_key) WHERE state = 'held';
        CREATE TABLE blob_holders (
            tag BLOB NOT NULL,
            user_id INTEGER NOT NULL REFERENCES users(id),
            last_seen INTEGER NOT NULL,
            PRIMARY KEY (tag, user_id)) WITHOUT ROWID;
        """,
        // 2: hoard — hoard-only site tokens and hoard requests
        """
        CREATE TABLE site_tokens (
            token_hash BLOB PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            site_id TEXT NOT NULL, site_name TEXT NOT NULL,
            created INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX site_tokens_site ON site_tokens (user_id, site_id);
        CREATE TABLE hoard_requests (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            parcel_key INTEGER NOT NULL REFERENCES parcels(key),
            site_id TEXT NOT NULL, site_name TEXT NOT NULL,
            version INTEGER,
            state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'revoked')),
            blobs_done INTEGER NOT NULL DEFAULT 0, blobs_total INTEGER NOT NULL DEFAULT 0, bytes_done INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created INTEGER NOT NULL, updated INTEGER NOT NULL);
        CREATE INDEX hoard_requests_site ON hoard_requests (user_id, site_id);
        """,
        // 3: lock check-in progress (the holder's upload, so that another site waits for its commit)
        """
        ALTER TABLE locks ADD COLUMN checkin_sent INTEGER;
        ALTER TABLE locks ADD COLUMN checkin_total INTEGER;
        ALTER TABLE locks ADD COLUMN checkin_started INTEGER;
        ALTER TABLE locks ADD COLUMN checkin_updated INTEGER;
        """,
    ];

    public async Task InitializeAsync(CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DatabasePath)!);
        await using (var connection = await OpenAsync(ct))
        {
            using var wal = connection.CreateCommand();
            wal.CommandText = "PRAGMA journal_mode = WAL;";
            await wal.ExecuteNonQueryAsync(ct);
        }
        await WriteAsync(async db =>
        {
            await db.ExecAsync("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
            var current = Convert.ToInt32(await db.ScalarAsync("SELECT coalesce(max(version), 0) FROM schema_version"));
            if (current > Migrations.Length)
                throw new InvalidOperationException($"database schema {current} is newer than this server ({Migrations.Length})");
            for (int v = current; v < Migrations.Length; v++)
            {
                await db.ExecAsync(Migrations[v]);
                await db.ExecAsync("INSERT INTO schema_version (version) VALUES ($v)", ("$v", v + 1));
            }
            await db.ExecAsync("INSERT OR IGNORE INTO settings (key, value) VALUES ('server_secret', $s)", ("$s", RandomNumberGenerator.GetBytes(32)));
            await db.ExecAsync("INSERT OR IGNORE INTO settings (key, value) VALUES ('collection_epoch', 0)");
            return 0;
        }, ct);
    }

    public async Task<int> SchemaVersionAsync(CancellationToken ct) =>
        await ReadAsync(async db => Convert.ToInt32(await db.ScalarAsync("SELECT coalesce(max(version), 0) FROM schema_version")), ct);

    // ------------------------------------------------------------------ settings

    public Task<byte[]> GetServerSecretAsync(CancellationToken ct) =>
        ReadAsync(async db => (byte[])(await db.ScalarAsync("SELECT value FROM settings WHERE key = 'server_secret'"))!, ct);

    public Task<long> GetCollectionEpochAsync(CancellationToken ct) =>
        ReadAsync(async db => Convert.ToInt64(await db.ScalarAsync("SELECT value FROM settings WHERE key = 'collection_epoch'")), ct);

    public Task<long> AdvanceCollectionEpochAsync(CancellationToken ct) =>
        WriteAsync(async db => Convert.ToInt64(await db.ScalarAsync(
            "UPDATE settings SET value = value + 1 WHERE key = 'collection_epoch' RETURNING value")), ct);

    // ------------------------------------------------------------------ users

    private const string UserColumns = "id, name, verifier, kdf_salt, kdf_memory, kdf_iterations, kdf_parallelism, wrapped_secrets, recovery_wrapped, disabled, created";

    private static UserRecord ReadUser(SqliteDataReader r) => new(
        r.GetInt64(0), r.GetString(1), (byte[])r[2],
        new KdfParameters((byte[])r[3], r.GetInt32(4), r.GetInt32(5), r.GetInt32(6)),
        (byte[])r[7], (byte[])r[8], r.GetInt64(9) != 0, Time(r.GetInt64(10)));

    public Task<UserRecord> AddUserAsync(NewUser user, DateTimeOffset now, CancellationToken ct) => WriteAsync(async db =>
    {
        if (await db.ScalarAsync("SELECT 1 FROM users WHERE name = $n", ("$n", user.Name)) is not null)
            throw new MetadataConflictException($"user '{user.Name}' exists");
        var id = Convert.ToInt64(await db.ScalarAsync(
            """
            INSERT INTO users (name, verifier, kdf_salt, kdf_memory, kdf_iterations, kdf_parallelism, wrapped_secrets, recovery_wrapped, created)
            VALUES ($n, $v, $s, $m, $i, $p, $w, $r, $c) RETURNING id
            """,
            ("$n", user.Name), ("$v", user.Verifier), ("$s", user.Kdf.Salt), ("$m", user.Kdf.MemoryKiB), ("$i", user.Kdf.Iterations),
            ("$p", user.Kdf.Parallelism), ("$w", user.WrappedSecrets), ("$r", user.RecoveryWrappedSecrets), ("$c", Ms(now))));
        return new UserRecord(id, user.Name, user.Verifier, user.Kdf, user.WrappedSecrets, user.RecoveryWrappedSecrets, false, Time(Ms(now)));
    }, ct);

    public Task<UserRecord?> GetUserAsync(string name, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync($"SELECT {UserColumns} FROM users WHERE name = $n", ReadUser, ("$n", name)), ct);

    public async Task<IReadOnlyList<UserRecord>> ListUsersAsync(CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync($"SELECT {UserColumns} FROM users ORDER BY name", ReadUser), ct);

    public Task<bool> DisableUserAsync(string name, CancellationToken ct) => WriteAsync(async db =>
    {
        if (await db.ScalarAsync("SELECT id FROM users WHERE name = $n", ("$n", name)) is not long id) return false;
        await db.ExecAsync("UPDATE users SET disabled = 1 WHERE id = $id", ("$id", id));
        await db.ExecAsync("UPDATE sessions SET revoked = 1 WHERE user_id = $id", ("$id", id));
        await db.ExecAsync("UPDATE site_tokens SET revoked = 1 WHERE user_id = $id", ("$id", id));
        return true;
    }, ct);

    public Task<bool> ChangePasswordAsync(long userId, byte[] expectedVerifier, byte[] newVerifier, KdfParameters kdf, byte[] wrappedSecrets,
        byte[]? recoveryWrappedSecrets, CancellationToken ct) =>
        WriteAsync(async db => await db.ExecAsync(
            """
            UPDATE users SET verifier = $nv, kdf_salt = $s, kdf_memory = $m, kdf_iterations = $i, kdf_parallelism = $p, wrapped_secrets = $w,
                recovery_wrapped = COALESCE($r, recovery_wrapped)
            WHERE id = $id AND verifier = $ov
            """,
            ("$nv", newVerifier), ("$s", kdf.Salt), ("$m", kdf.MemoryKiB), ("$i", kdf.Iterations), ("$p", kdf.Parallelism),
            ("$w", wrappedSecrets), ("$r", recoveryWrappedSecrets), ("$id", userId), ("$ov", expectedVerifier)) == 1, ct);

    // ------------------------------------------------------------------ sessions

    public Task CreateSessionAsync(byte[] tokenHash, long userId, string siteId, string siteName, DateTimeOffset now, DateTimeOffset expires, CancellationToken ct) =>
        WriteAsync(db => db.ExecAsync(
            "INSERT INTO sessions (token_hash, user_id, site_id, site_name, created, expires) VALUES ($t, $u, $si, $sn, $c, $e)",
            ("$t", tokenHash), ("$u", userId), ("$si", siteId), ("$sn", siteName), ("$c", Ms(now)), ("$e", Ms(expires))), ct);

    public Task<SessionRecord?> ResolveSessionAsync(byte[] tokenHash, DateTimeOffset now, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync(
            """
            SELECT s.user_id, u.name, u.disabled, s.site_id, s.site_name, s.created, s.expires
            FROM sessions s JOIN users u ON u.id = s.user_id
            WHERE s.token_hash = $t AND s.revoked = 0 AND s.expires > $now
            """,
            r => new SessionRecord(r.GetInt64(0), r.GetString(1), r.GetInt64(2) != 0, r.GetString(3), r.GetString(4), Time(r.GetInt64(5)), Time(r.GetInt64(6))),
            ("$t", tokenHash), ("$now", Ms(now))), ct);

    public Task RevokeSessionAsync(byte[] tokenHash, CancellationToken ct) =>
        WriteAsync(db => db.ExecAsync("UPDATE sessions SET revoked = 1 WHERE token_hash = $t", ("$t", tokenHash)), ct);

    // ------------------------------------------------------------------ hoard-only site tokens and hoard requests

    public Task CreateSiteTokenAsync(byte[] tokenHash, long userId, string siteId, string siteName, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            await db.ExecAsync("UPDATE site_tokens SET revoked = 1 WHERE user_id = $u AND site_id = $si", ("$u", userId), ("$si", siteId));
            return await db.ExecAsync("INSERT INTO site_tokens (token_hash, user_id, site_id, site_name, created) VALUES ($t, $u, $si, $sn, $c)",
                ("$t", tokenHash), ("$u", userId), ("$si", siteId), ("$sn", siteName), ("$c", Ms(now)));
        }, ct);

    public Task<SessionRecord?> ResolveSiteTokenAsync(byte[] tokenHash, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync(
            """
            SELECT t.user_id, u.name, u.disabled, t.site_id, t.site_name, t.created
            FROM site_tokens t JOIN users u ON u.id = t.user_id
            WHERE t.token_hash = $t AND t.revoked = 0
            """,
            r => new SessionRecord(r.GetInt64(0), r.GetString(1), r.GetInt64(2) != 0, r.GetString(3), r.GetString(4), Time(r.GetInt64(5)),
                DateTimeOffset.MaxValue, HoardOnly: true),
            ("$t", tokenHash)), ct);

    public async Task<IReadOnlyList<SiteRecord>> ListSitesAsync(long userId, CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync(
            "SELECT site_id, site_name, created FROM site_tokens WHERE user_id = $u AND revoked = 0 ORDER BY site_name, site_id",
            r => new SiteRecord(r.GetString(0), r.GetString(1), Time(r.GetInt64(2))), ("$u", userId)), ct);

    public Task<bool> RevokeSiteAsync(long userId, string siteId, DateTimeOffset now, CancellationToken ct) => WriteAsync(async db =>
    {
        int revoked = await db.ExecAsync("UPDATE site_tokens SET revoked = 1 WHERE user_id = $u AND site_id = $si AND revoked = 0",
            ("$u", userId), ("$si", siteId));
        await db.ExecAsync(
            "UPDATE hoard_requests SET state = 'revoked', updated = $now WHERE user_id = $u AND site_id = $si AND state IN ('pending', 'running')",
            ("$u", userId), ("$si", siteId), ("$now", Ms(now)));
        return revoked > 0;
    }, ct);

    private const string HoardColumns =
        "h.id, p.name, h.site_id, h.site_name, h.version, h.state, h.blobs_done, h.blobs_total, h.bytes_done, h.error, h.created, h.updated";
    private const string HoardFrom = "hoard_requests h JOIN parcels p ON p.key = h.parcel_key";

    private static HoardRequestRecord ReadHoard(SqliteDataReader r) => new(r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3),
        r.IsDBNull(4) ? null : r.GetInt64(4), r.GetString(5), r.GetInt64(6), r.GetInt64(7), r.GetInt64(8), r.IsDBNull(9) ? null : r.GetString(9),
        Time(r.GetInt64(10)), Time(r.GetInt64(11)));

    public Task<(HoardRequestRecord Request, bool Created)> AddHoardRequestAsync(long userId, long parcelKey, SiteRecord site, long? version,
        DateTimeOffset now, CancellationToken ct) => WriteAsync(async db =>
    {
        var open = await db.SingleAsync(
            $"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.user_id = $u AND h.parcel_key = $k AND h.site_id = $si " +
            "AND h.state IN ('pending', 'running') AND h.version IS $v",
            ReadHoard, ("$u", userId), ("$k", parcelKey), ("$si", site.SiteId), ("$v", version));
        if (open is not null) return (open, false);
        var id = Convert.ToInt64(await db.ScalarAsync(
            """
            INSERT INTO hoard_requests (user_id, parcel_key, site_id, site_name, version, state, created, updated)
            VALUES ($u, $k, $si, $sn, $v, 'pending', $now, $now) RETURNING id
            """,
            ("$u", userId), ("$k", parcelKey), ("$si", site.SiteId), ("$sn", site.SiteName), ("$v", version), ("$now", Ms(now))));
        return ((await db.SingleAsync($"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.id = $id", ReadHoard, ("$id", id)))!, true);
    }, ct);

    public async Task<IReadOnlyList<HoardRequestRecord>> ListHoardRequestsAsync(long userId, string? siteId, CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync(
            $"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.user_id = $u AND ($si IS NULL OR h.site_id = $si) ORDER BY h.id DESC",
            ReadHoard, ("$u", userId), ("$si", siteId)), ct);

    public Task<HoardRequestRecord?> UpdateHoardRequestAsync(long userId, string siteId, long id, HoardUpdate update, DateTimeOffset now,
        CancellationToken ct) => WriteAsync(async db =>
    {
        int changed = await db.ExecAsync(
            """
            UPDATE hoard_requests SET state = $st, version = coalesce($v, version), blobs_done = $bd, blobs_total = $bt, bytes_done = $by,
                error = $e, updated = $now
            WHERE id = $id AND user_id = $u AND site_id = $si AND state IN ('pending', 'running')
            """,
            ("$st", update.State), ("$v", update.Version), ("$bd", update.BlobsDone), ("$bt", update.BlobsTotal), ("$by", update.BytesDone),
            ("$e", update.Error), ("$now", Ms(now)), ("$id", id), ("$u", userId), ("$si", siteId));
        return changed == 0 ? null : await db.SingleAsync($"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.id = $id", ReadHoard, ("$id", id));
    }, ct);

    public Task<bool> HasOpenHoardRequestAsync(long userId, string siteId, long parcelKey, CancellationToken ct) =>
        ReadAsync(async db => await db.ScalarAsync(
            "SELECT 1 FROM hoard_requests WHERE user_id = $u AND site_id = $si AND parcel_key = $k AND state IN ('pending', 'running')",
            ("$u", userId), ("$si", siteId), ("$k", parcelKey)) is not null, ct);

    // ------------------------------------------------------------------ parcels

    private const string ParcelColumns = "p.key, p.owner_id, u.name, p.name, p.parcel_id, p.chunk_size, p.disk_size, p.wrapped_key, p.created";
    private const string ParcelFrom = "parcels p JOIN users u ON u.id = p.owner_id";

    private static ParcelRecord ReadParcel(SqliteDataReader r) => new(
        r.GetInt64(0), r.GetInt64(1), r.GetString(2), r.GetString(3), r.GetString(4), r.GetInt32(5), r.GetInt64(6), (byte[])r[7], Time(r.GetInt64(8)));

    public Task<CommitResult> CreateParcelAsync(long ownerId, NewParcel parcel, VersionRecord first, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            if (await db.ScalarAsync("SELECT key FROM parcels WHERE owner_id = $o AND name = $n", ("$o", ownerId), ("$n", parcel.Name)) is long existing)
            {
                if (first.CommitId.Length > 0 && await FindByCommitIdAsync(db, existing, first.CommitId) is { } done)
                    return new CommitResult(CommitStatus.Existing, done.Version, done.Reason);
                return new CommitResult(CommitStatus.Conflict, Reason: $"parcel '{parcel.Name}' exists");
            }
            var key = Convert.ToInt64(await db.ScalarAsync(
                """
                INSERT INTO parcels (owner_id, name, parcel_id, chunk_size, disk_size, wrapped_key, created)
                VALUES ($o, $n, $id, $cs, $ds, $wk, $c) RETURNING key
                """,
                ("$o", ownerId), ("$n", parcel.Name), ("$id", parcel.Id), ("$cs", parcel.ChunkSize), ("$ds", parcel.DiskSize),
                ("$wk", parcel.WrappedKey), ("$c", Ms(parcel.Created))));
            var numbered = first with { Number = 1, Parent = null, Side = false };
            await InsertVersionAsync(db, key, numbered, null, now);
            return new CommitResult(CommitStatus.Head, numbered);
        }, ct);

    public Task<ParcelRecord?> GetParcelAsync(long ownerId, string name, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} WHERE p.owner_id = $o AND p.name = $n", ReadParcel,
            ("$o", ownerId), ("$n", name)), ct);

    public async Task<IReadOnlyList<ParcelRecord>> ListAllParcelsAsync(CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} ORDER BY u.name, p.name", ReadParcel), ct);

    public async Task<IReadOnlyList<ParcelSummary>> ListParcelsAsync(long ownerId, CancellationToken ct) => await ReadAsync(async db =>
    {
        var parcels = await db.QueryAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} WHERE p.owner_id = $o ORDER BY p.name", ReadParcel, ("$o", ownerId));
        var result = new List<ParcelSummary>();
        foreach (var p in parcels) result.Add(new ParcelSummary(p, await HeadNumberAsync(db, p.Key), await GetLockAsync(db, p.Key)));
        return result;
    }, ct);

    public Task<ParcelSummary?> GetParcelSummaryAsync(long parcelKey, CancellationToken ct) => ReadAsync(async db =>
    {
        var p = await db.SingleAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} WHERE p.key = $k", ReadParcel, ("$k", parcelKey));
        return p is null ? null : new ParcelSummary(p, await HeadNumberAsync(db, p.Key), await GetLockAsync(db, p.Key));
    }, ct);

    // ------------------------------------------------------------------ versions

    private sealed record FoundVersion(VersionRecord Version, string? Reason);

    private static FoundVersion ReadVersion(SqliteDataReader r)
    {
        var record = VersionRecord.FromJson((byte[])r[0]);
        return new FoundVersion(record with { Number = r.GetInt64(1), Parent = r.IsDBNull(2) ? null : r.GetInt64(2), Side = r.GetInt64(3) != 0 },
            r.IsDBNull(4) ? null : r.GetString(4));
    }

    private const string VersionColumns = "record, number, parent, side, reason";

    private static async Task<long> HeadNumberAsync(Db db, long parcelKey) =>
        Convert.ToInt64(await db.ScalarAsync("SELECT coalesce(max(number), 0) FROM versions WHERE parcel_key = $k AND side = 0", ("$k", parcelKey)));

    private static async Task<FoundVersion?> HeadAsync(Db db, long parcelKey) =>
        await db.SingleAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $k AND side = 0 ORDER BY number DESC LIMIT 1",
            ReadVersion, ("$k", parcelKey));

    private static Task<FoundVersion?> FindByCommitIdAsync(Db db, long parcelKey, string commitId) =>
        db.SingleAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $k AND commit_id = $c", ReadVersion,
            ("$k", parcelKey), ("$c", commitId));

    private static async Task InsertVersionAsync(Db db, long parcelKey, VersionRecord v, string? reason, DateTimeOffset now)
    {
        var stored = v with { Number = 0, Parent = null, Side = false }; // the columns are authoritative for these
        await db.ExecAsync(
            """
            INSERT INTO versions (parcel_key, number, commit_id, mac, parent_mac, parent, side, reason, record, committed)
            VALUES ($k, $n, $c, $m, $pm, $p, $s, $r, $rec, $t)
            """,
            ("$k", parcelKey), ("$n", v.Number), ("$c", v.CommitId), ("$m", v.Mac), ("$pm", v.ParentMac), ("$p", v.Parent),
            ("$s", v.Side ? 1 : 0), ("$r", reason), ("$rec", stored.ToJson()), ("$t", Ms(now)));
    }

    public async Task<IReadOnlyList<VersionRecord>> ListVersionsAsync(long parcelKey, CancellationToken ct) =>
        (await ReadAsync(db => db.QueryAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $k ORDER BY number", ReadVersion,
            ("$k", parcelKey)), ct)).Select(r => r.Version).ToList();

    public async Task<VersionRecord?> FindByCommitIdAsync(long parcelKey, string commitId, CancellationToken ct) =>
        commitId.Length == 0 ? null : (await ReadAsync(db => FindByCommitIdAsync(db, parcelKey, commitId), ct))?.Version;

    public Task<CommitResult> CommitAsync(long parcelKey, VersionRecord version, string? lockToken, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            if (await db.ScalarAsync("SELECT 1 FROM parcels WHERE key = $k", ("$k", parcelKey)) is null) return new CommitResult(CommitStatus.NotFound);
            if (version.CommitId.Length > 0 && await FindByCommitIdAsync(db, parcelKey, version.CommitId) is { } done)
                return new CommitResult(CommitStatus.Existing, done.Version, done.Reason);
            string? state = lockToken is null ? null : (string?)await db.ScalarAsync(
                "SELECT state FROM locks WHERE token = $t AND parcel_key = $k", ("$t", lockToken), ("$k", parcelKey));
            if (state is null) return new CommitResult(CommitStatus.Forbidden, Reason: "the lock token is not a lock of this parcel");
            var head = await HeadAsync(db, parcelKey);
            var reason = CommitRules.SideReason(state, head?.Version, version);
            if (state == "held")
                await db.ExecAsync("UPDATE locks SET last_contact = $now WHERE token = $t", ("$now", Ms(now)), ("$t", lockToken));
            var numbered = await NumberAsync(db, parcelKey, version, side: reason is not null);
            await InsertVersionAsync(db, parcelKey, numbered, reason, now);
            KillPoint.Reach("server.commit.before-db-commit"); // the row is written, the transaction not committed
            return new CommitResult(reason is null ? CommitStatus.Head : CommitStatus.Side, numbered, reason);
        }, ct);

    private static async Task<VersionRecord> NumberAsync(Db db, long parcelKey, VersionRecord version, bool side)
    {
        var next = Convert.ToInt64(await db.ScalarAsync("SELECT coalesce(max(number), 0) + 1 FROM versions WHERE parcel_key = $k", ("$k", parcelKey)));
        object? parent = version.ParentMac.Length == 0 ? null : await db.ScalarAsync(
            "SELECT number FROM versions WHERE parcel_key = $k AND mac = $m ORDER BY number DESC LIMIT 1", ("$k", parcelKey), ("$m", version.ParentMac));
        return version with { Number = next, Parent = parent is null ? null : Convert.ToInt64(parent), Side = side };
    }

    public Task<CommitResult> RollbackAsync(long parcelKey, VersionRecord version, string? lockToken, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            if (await db.ScalarAsync("SELECT 1 FROM parcels WHERE key = $k", ("$k", parcelKey)) is null) return new CommitResult(CommitStatus.NotFound);
            if (version.CommitId.Length > 0 && await FindByCommitIdAsync(db, parcelKey, version.CommitId) is { } done)
                return new CommitResult(CommitStatus.Existing, done.Version, done.Reason);
            var held = await db.SingleAsync("SELECT token FROM locks WHERE parcel_key = $k AND state = 'held'", r => r.GetString(0), ("$k", parcelKey));
            if (held is not null && held != lockToken)
                return new CommitResult(CommitStatus.Locked, Reason: "another site holds the lock", Lock: await GetLockAsync(db, parcelKey));
            var head = await HeadAsync(db, parcelKey);
            if (head is not null && version.ParentMac != head.Version.Mac)
                return new CommitResult(CommitStatus.Conflict, Reason: $"a rollback must name the head (version {head.Version.Number}) as its parent");
            if (held is not null)
                await db.ExecAsync("UPDATE locks SET last_contact = $now WHERE token = $t", ("$now", Ms(now)), ("$t", held));
            var numbered = await NumberAsync(db, parcelKey, version, side: false);
            await InsertVersionAsync(db, parcelKey, numbered, null, now);
            return new CommitResult(CommitStatus.Head, numbered);
        }, ct);

    public Task<IReadOnlyList<VersionRecord>> PruneAsync(long parcelKey, int keepHeads, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            var versions = (await db.QueryAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $k ORDER BY number", ReadVersion,
                ("$k", parcelKey))).Select(r => r.Version).ToList();
            var doomed = PrunePolicy.Select(versions, keepHeads);
            foreach (var v in doomed)
                await db.ExecAsync("DELETE FROM versions WHERE parcel_key = $k AND number = $n", ("$k", parcelKey), ("$n", v.Number));
            return doomed;
        }, ct);

    public async Task<IReadOnlyList<StoredVersion>> ListAllVersionsAsync(CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync(
            $"""
            SELECT v.record, v.number, v.parent, v.side, v.reason, p.key, u.name, p.name
            FROM versions v JOIN parcels p ON p.key = v.parcel_key JOIN users u ON u.id = p.owner_id
            ORDER BY u.name, p.name, v.number
            """,
            r => new StoredVersion(r.GetInt64(5), r.GetString(6), r.GetString(7), ReadVersion(r).Version)), ct);

    // ------------------------------------------------------------------ locks

    private static LockInfo ReadLock(SqliteDataReader r) =>
        new(r.GetString(0), r.GetString(1), Time(r.GetInt64(2)), Time(r.GetInt64(3)), r.GetString(4),
            r.IsDBNull(6) ? null : new LockCheckin(r.GetInt64(6), r.IsDBNull(7) ? null : r.GetInt64(7), Time(r.GetInt64(8)), Time(r.GetInt64(9))));

    private const string LockSelect =
        "SELECT l.site_id, l.site_name, l.acquired, l.last_contact, u.name, l.token, l.checkin_sent, l.checkin_total, l.checkin_started, l.checkin_updated " +
        "FROM locks l JOIN users u ON u.id = l.user_id";

    private static Task<LockInfo?> GetLockAsync(Db db, long parcelKey) =>
        db.SingleAsync($"{LockSelect} WHERE l.parcel_key = $k AND l.state = 'held'", ReadLock, ("$k", parcelKey));

    public Task<LockInfo?> GetLockAsync(long parcelKey, CancellationToken ct) => ReadAsync(db => GetLockAsync(db, parcelKey), ct);

    public Task<LockGrant> AcquireLockAsync(long parcelKey, long userId, string siteId, string siteName, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            var rows = await db.QueryAsync($"{LockSelect} WHERE l.parcel_key = $k AND l.state = 'held'",
                r => (Lock: ReadLock(r), Token: r.GetString(5)), ("$k", parcelKey));
            if (rows.Count > 0)
            {
                var current = rows[0];
                if (current.Lock.SiteId != siteId) return new LockGrant(false, null, current.Lock);
                // taken again by its holder (a resume there): any check-in it reported is over
                await db.ExecAsync(
                    """
                    UPDATE locks SET last_contact = $now, site_name = $sn,
                        checkin_sent = NULL, checkin_total = NULL, checkin_started = NULL, checkin_updated = NULL
                    WHERE token = $t
                    """,
                    ("$now", Ms(now)), ("$sn", siteName), ("$t", current.Token));
                return new LockGrant(true, current.Token, current.Lock with { LastContact = Time(Ms(now)), SiteName = siteName, Checkin = null });
            }
            var token = Base64Url(RandomNumberGenerator.GetBytes(32));
            await db.ExecAsync(
                """
                INSERT INTO locks (token, parcel_key, user_id, site_id, site_name, acquired, last_contact, state)
                VALUES ($t, $k, $u, $si, $sn, $now, $now, 'held')
                """,
                ("$t", token), ("$k", parcelKey), ("$u", userId), ("$si", siteId), ("$sn", siteName), ("$now", Ms(now)));
            return new LockGrant(true, token, (await GetLockAsync(db, parcelKey))!);
        }, ct);

    public Task<LockRelease> ReleaseLockAsync(long parcelKey, string token, CancellationToken ct) => WriteAsync(async db =>
    {
        var state = (string?)await db.ScalarAsync("SELECT state FROM locks WHERE token = $t AND parcel_key = $k", ("$t", token), ("$k", parcelKey));
        if (state is null) return LockRelease.UnknownToken;
        if (state != "held") return LockRelease.AlreadyReleased;
        await db.ExecAsync("UPDATE locks SET state = 'released' WHERE token = $t", ("$t", token));
        return LockRelease.Released;
    }, ct);

    public Task<bool> BreakLockAsync(long parcelKey, CancellationToken ct) => WriteAsync(async db =>
        await db.ExecAsync("UPDATE locks SET state = 'broken' WHERE parcel_key = $k AND state = 'held'", ("$k", parcelKey)) > 0, ct);

    public Task TouchLockAsync(long parcelKey, string token, DateTimeOffset now, CancellationToken ct) => WriteAsync(db =>
        db.ExecAsync("UPDATE locks SET last_contact = $now WHERE token = $t AND parcel_key = $k AND state = 'held'",
            ("$now", Ms(now)), ("$t", token), ("$k", parcelKey)), ct);

    public Task<bool> ReportCheckinAsync(long parcelKey, string token, long sent, long? total, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db => await db.ExecAsync(
            """
            UPDATE locks SET last_contact = $now, checkin_sent = $s, checkin_total = $n, checkin_started = coalesce(checkin_started, $now),
                checkin_updated = $now
            WHERE token = $t AND parcel_key = $k AND state = 'held'
            """,
            ("$now", Ms(now)), ("$s", sent), ("$n", total), ("$t", token), ("$k", parcelKey)) > 0, ct);

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    // ------------------------------------------------------------------ blobs

    private const int Batch = 500;

    public Task RecordBlobsAsync(long userId, IReadOnlyCollection<ChunkTag> tags, DateTimeOffset now, CancellationToken ct)
    {
        if (tags.Count == 0) return Task.CompletedTask;
        return WriteAsync(async db =>
        {
            await using var cmd = db.Command(
                """
                INSERT INTO blob_holders (tag, user_id, last_seen) VALUES ($t, $u, $now)
                ON CONFLICT (tag, user_id) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)
                """, ("$u", userId), ("$now", Ms(now)));
            var tag = cmd.Parameters.Add("$t", SqliteType.Blob);
            foreach (var t in tags.Distinct())
            {
                tag.Value = TagBytes(t);
                await cmd.ExecuteNonQueryAsync(ct);
            }
            return 0;
        }, ct);
    }

    public async Task<IReadOnlySet<ChunkTag>> HeldBlobsAsync(long userId, IReadOnlyCollection<ChunkTag> tags, DateTimeOffset? touch, CancellationToken ct)
    {
        var held = new HashSet<ChunkTag>();
        foreach (var chunk in tags.Distinct().Chunk(Batch))
        {
            var names = string.Join(", ", chunk.Select((_, i) => $"$t{i}"));
            var args = chunk.Select((t, i) => ($"$t{i}", (object?)TagBytes(t))).Append(("$u", userId)).ToList();
            List<ChunkTag> found;
            if (touch is { } now)
            {
                args.Add(("$now", Ms(now)));
                found = await WriteAsync(db => db.QueryAsync(
                    $"UPDATE blob_holders SET last_seen = max(last_seen, $now) WHERE user_id = $u AND tag IN ({names}) RETURNING tag",
                    r => new ChunkTag(new Hash32((byte[])r[0])), [.. args]), ct);
            }
            else
            {
                found = await ReadAsync(db => db.QueryAsync($"SELECT tag FROM blob_holders WHERE user_id = $u AND tag IN ({names})",
                    r => new ChunkTag(new Hash32((byte[])r[0])), [.. args]), ct);
            }
            held.UnionWith(found);
        }
        return held;
    }

    public async Task<IReadOnlyDictionary<ChunkTag, DateTimeOffset>> LastSeenAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct)
    {
        var result = new Dictionary<ChunkTag, DateTimeOffset>();
        foreach (var chunk in tags.Distinct().Chunk(Batch))
        {
            var names = string.Join(", ", chunk.Select((_, i) => $"$t{i}"));
            var rows = await ReadAsync(db => db.QueryAsync($"SELECT tag, max(last_seen) FROM blob_holders WHERE tag IN ({names}) GROUP BY tag",
                r => (new ChunkTag(new Hash32((byte[])r[0])), Time(r.GetInt64(1))),
                [.. chunk.Select((t, i) => ($"$t{i}", (object?)TagBytes(t)))]), ct);
            foreach (var (tag, seen) in rows) result[tag] = seen;
        }
        return result;
    }

    public Task<bool> ForgetBlobAsync(ChunkTag tag, DateTimeOffset seenBefore, CancellationToken ct) => WriteAsync(async db =>
    {
        var latest = await db.ScalarAsync("SELECT max(last_seen) FROM blob_holders WHERE tag = $t", ("$t", TagBytes(tag)));
        if (latest is not null && Convert.ToInt64(latest) >= Ms(seenBefore)) return false;
        await db.ExecAsync("DELETE FROM blob_holders WHERE tag = $t", ("$t", TagBytes(tag)));
        return true;
    }, ct);

    public Task<MetadataStats> GetStatsAsync(CancellationToken ct) => ReadAsync(async db =>
    {
        async Task<long> Count(string sql) => Convert.ToInt64(await db.ScalarAsync(sql));
        return new MetadataStats(
            (int)await Count("SELECT count(*) FROM users"),
            (int)await Count("SELECT count(*) FROM parcels"),
            (int)await Count("SELECT count(*) FROM versions"),
            (int)await Count("SELECT count(*) FROM versions WHERE side = 1"),
            (int)await Count("SELECT count(*) FROM locks WHERE state = 'held'"),
            await Count("SELECT count(*) FROM blob_holders"),
            await Count("SELECT count(DISTINCT tag) FROM blob_holders"));
    }, ct);

    // ------------------------------------------------------------------ transfer

    public Task<MetadataSnapshot> ExportAsync(CancellationToken ct) => ReadAsync(async db => new MetadataSnapshot(
        (byte[])(await db.ScalarAsync("SELECT value FROM settings WHERE key = 'server_secret'"))!,
        Convert.ToInt64(await db.ScalarAsync("SELECT value FROM settings WHERE key = 'collection_epoch'")),
        await db.QueryAsync($"SELECT {UserColumns} FROM users ORDER BY id", ReadUser),
        await db.QueryAsync("SELECT token_hash, user_id, site_id, site_name, created, expires, revoked FROM sessions ORDER BY token_hash",
            r => new SessionRow((byte[])r[0], r.GetInt64(1), r.GetString(2), r.GetString(3), Time(r.GetInt64(4)), Time(r.GetInt64(5)), r.GetInt64(6) != 0)),
        await db.QueryAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} ORDER BY p.key", ReadParcel),
        await db.QueryAsync($"SELECT {VersionColumns}, parcel_key, committed FROM versions ORDER BY parcel_key, number", r =>
        {
            var row = ReadVersion(r);
            return new VersionRow(r.GetInt64(5), row.Version, row.Reason, Time(r.GetInt64(6)));
        }),
        await db.QueryAsync("SELECT token, parcel_key, user_id, site_id, site_name, acquired, last_contact, state FROM locks ORDER BY parcel_key, acquired, token",
            r => new LockRow(r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetString(3), r.GetString(4), Time(r.GetInt64(5)), Time(r.GetInt64(6)),
                LockStates.Parse(r.GetString(7)))),
        await db.QueryAsync("SELECT tag, user_id, last_seen FROM blob_holders ORDER BY tag, user_id",
            r => new BlobHolding(new ChunkTag(new Hash32((byte[])r[0])), r.GetInt64(1), Time(r.GetInt64(2)))),
        await db.QueryAsync("SELECT token_hash, user_id, site_id, site_name, created, revoked FROM site_tokens ORDER BY token_hash",
            r => new SiteTokenRow((byte[])r[0], r.GetInt64(1), r.GetString(2), r.GetString(3), Time(r.GetInt64(4)), r.GetInt64(5) != 0)),
        await db.QueryAsync($"SELECT {HoardColumns}, h.user_id, h.parcel_key FROM {HoardFrom} ORDER BY h.id",
            r => new HoardRequestRow(r.GetInt64(12), r.GetInt64(13), ReadHoard(r)))), ct);

    public Task ImportAsync(MetadataSnapshot snapshot, CancellationToken ct) => WriteAsync(async db =>
    {
        if (Convert.ToInt64(await db.ScalarAsync("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM parcels)")) > 0)
            throw new MetadataConflictException("the target metadata store is not empty");
        await db.ExecAsync("UPDATE settings SET value = $s WHERE key = 'server_secret'", ("$s", snapshot.ServerSecret));
        await db.ExecAsync("UPDATE settings SET value = $e WHERE key = 'collection_epoch'", ("$e", snapshot.CollectionEpoch));
        foreach (var u in snapshot.Users)
            await db.ExecAsync(
                $"INSERT INTO users ({UserColumns}) VALUES ($id, $n, $v, $s, $m, $i, $p, $w, $r, $d, $c)",
                ("$id", u.Id), ("$n", u.Name), ("$v", u.Verifier), ("$s", u.Kdf.Salt), ("$m", u.Kdf.MemoryKiB), ("$i", u.Kdf.Iterations),
                ("$p", u.Kdf.Parallelism), ("$w", u.WrappedSecrets), ("$r", u.RecoveryWrappedSecrets), ("$d", u.Disabled ? 1 : 0), ("$c", Ms(u.Created)));
        foreach (var s in snapshot.Sessions)
            await db.ExecAsync(
                "INSERT INTO sessions (token_hash, user_id, site_id, site_name, created, expires, revoked) VALUES ($t, $u, $si, $sn, $c, $e, $r)",
                ("$t", s.TokenHash), ("$u", s.UserId), ("$si", s.SiteId), ("$sn", s.SiteName), ("$c", Ms(s.Created)), ("$e", Ms(s.Expires)),
                ("$r", s.Revoked ? 1 : 0));
        foreach (var p in snapshot.Parcels)
            await db.ExecAsync(
                """
                INSERT INTO parcels (key, owner_id, name, parcel_id, chunk_size, disk_size, wrapped_key, created)
                VALUES ($k, $o, $n, $id, $cs, $ds, $wk, $c)
                """,
                ("$k", p.Key), ("$o", p.OwnerId), ("$n", p.Name), ("$id", p.Id), ("$cs", p.ChunkSize), ("$ds", p.DiskSize),
                ("$wk", p.WrappedKey), ("$c", Ms(p.Created)));
        foreach (var v in snapshot.Versions) await InsertVersionAsync(db, v.ParcelKey, v.Version, v.Reason, v.Committed);
        foreach (var l in snapshot.Locks)
            await db.ExecAsync(
                """
                INSERT INTO locks (token, parcel_key, user_id, site_id, site_name, acquired, last_contact, state)
                VALUES ($t, $k, $u, $si, $sn, $a, $lc, $st)
                """,
                ("$t", l.Token), ("$k", l.ParcelKey), ("$u", l.UserId), ("$si", l.SiteId), ("$sn", l.SiteName), ("$a", Ms(l.Acquired)),
                ("$lc", Ms(l.LastContact)), ("$st", LockStates.Name(l.State)));
        await using var holding = db.Command("INSERT INTO blob_holders (tag, user_id, last_seen) VALUES ($t, $u, $s)");
        var (tag, user, seen) = (holding.Parameters.Add("$t", SqliteType.Blob), holding.Parameters.Add("$u", SqliteType.Integer),
            holding.Parameters.Add("$s", SqliteType.Integer));
        foreach (var h in snapshot.Holdings)
        {
            (tag.Value, user.Value, seen.Value) = (TagBytes(h.Tag), h.UserId, Ms(h.LastSeen));
            await holding.ExecuteNonQueryAsync(db.Ct);
        }
        foreach (var t in snapshot.SiteTokens)
            await db.ExecAsync("INSERT INTO site_tokens (token_hash, user_id, site_id, site_name, created, revoked) VALUES ($t, $u, $si, $sn, $c, $r)",
                ("$t", t.TokenHash), ("$u", t.UserId), ("$si", t.SiteId), ("$sn", t.SiteName), ("$c", Ms(t.Created)), ("$r", t.Revoked ? 1 : 0));
        foreach (var (owner, parcel, h) in snapshot.HoardRequests)
            await db.ExecAsync(
                """
                INSERT INTO hoard_requests (id, user_id, parcel_key, site_id, site_name, version, state, blobs_done, blobs_total, bytes_done, error, created, updated)
                VALUES ($id, $u, $k, $si, $sn, $v, $st, $bd, $bt, $by, $e, $c, $up)
                """,
                ("$id", h.Id), ("$u", owner), ("$k", parcel), ("$si", h.SiteId), ("$sn", h.SiteName), ("$v", h.Version), ("$st", h.State),
                ("$bd", h.BlobsDone), ("$bt", h.BlobsTotal), ("$by", h.BytesDone), ("$e", h.Error), ("$c", Ms(h.Created)), ("$up", Ms(h.Updated)));
        return 0;
    }, ct);
}
