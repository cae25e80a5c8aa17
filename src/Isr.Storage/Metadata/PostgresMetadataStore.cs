using System.Data;
using System.Security.Cryptography;
using Isr.Format;
using Npgsql;
using NpgsqlTypes;

namespace Isr.Storage.Metadata;

/// <summary>
/// The metadata engine for several stateless servers over one PostgreSQL database. Every read-then-write rule runs in
/// one READ COMMITTED transaction that first locks the row it is about (the parcel for commits, rollbacks, locks and
/// pruning; the name's unique index for users and parcels), so concurrent servers are serialised per parcel and exactly
/// one wins; each later statement sees what the winner committed. Deadlocks and serialisation failures (possible
/// between batch blob updates) are retried a bounded number of times. Reads run in one REPEATABLE READ snapshot.
/// </summary>
public sealed class PostgresMetadataStore : IMetadataStore
{
    private const int Attempts = 5;
    private const int Batch = 16384;
    /// <summary>pg_advisory_xact_lock key held while the schema is created or migrated (servers may start together).</summary>
    private const long SchemaLockKey = 0x6973725f736368; // "isr_sch"

    private readonly NpgsqlDataSource _source;

    public PostgresMetadataStore(string connectionString) => _source = NpgsqlDataSource.Create(connectionString);

    public void Dispose() => _source.Dispose();

    // ------------------------------------------------------------------ plumbing

    private async Task<T> WriteAsync<T>(Func<Db, Task<T>> body, CancellationToken ct)
    {
        for (int attempt = 1; ; attempt++)
        {
            await using var connection = await _source.OpenConnectionAsync(ct);
            await using var tx = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, ct);
            try
            {
                var result = await body(new Db(connection, tx, ct));
                await tx.CommitAsync(ct);
                return result;
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure
                                              && attempt < Attempts)
            {
                // the transaction was rolled back whole: running the body again is safe
            }
        }
    }

    private async Task<T> ReadAsync<T>(Func<Db, Task<T>> body, CancellationToken ct)
    {
        await using var connection = await _source.OpenConnectionAsync(ct);
        await using var tx = await connection.BeginTransactionAsync(IsolationLevel.RepeatableRead, ct);
        return await body(new Db(connection, tx, ct));
    }

    /// <summary>Commands with positional parameters ($1, $2, …) inside one transaction.</summary>
    private sealed class Db(NpgsqlConnection connection, NpgsqlTransaction tx, CancellationToken ct)
    {
        public CancellationToken Ct => ct;
        public NpgsqlConnection Connection => connection;

        public NpgsqlCommand Command(string sql, params object?[] args)
        {
            var cmd = new NpgsqlCommand(sql, connection, tx);
            foreach (var a in args) cmd.Parameters.Add(a as NpgsqlParameter ?? new NpgsqlParameter { Value = a ?? DBNull.Value });
            return cmd;
        }

        public async Task<int> ExecAsync(string sql, params object?[] args)
        {
            await using var cmd = Command(sql, args);
            return await cmd.ExecuteNonQueryAsync(ct);
        }

        public async Task<object?> ScalarAsync(string sql, params object?[] args)
        {
            await using var cmd = Command(sql, args);
            var value = await cmd.ExecuteScalarAsync(ct);
            return value is DBNull ? null : value;
        }

        public async Task<List<T>> QueryAsync<T>(string sql, Func<NpgsqlDataReader, T> map, params object?[] args)
        {
            await using var cmd = Command(sql, args);
            await using var reader = await cmd.ExecuteReaderAsync(ct);
            var list = new List<T>();
            while (await reader.ReadAsync(ct)) list.Add(map(reader));
            return list;
        }

        public async Task<T?> SingleAsync<T>(string sql, Func<NpgsqlDataReader, T> map, params object?[] args) where T : class =>
            (await QueryAsync(sql, map, args)).FirstOrDefault();
    }

    /// <summary>Millisecond precision (the contract), UTC offset (what Npgsql writes to timestamptz).</summary>
    private static DateTimeOffset Ms(DateTimeOffset t) => DateTimeOffset.FromUnixTimeMilliseconds(t.ToUnixTimeMilliseconds());
    private static DateTimeOffset Time(NpgsqlDataReader r, int i) => r.GetFieldValue<DateTimeOffset>(i);
    private static ChunkTag Tag(NpgsqlDataReader r, int i) => new(new Hash32((byte[])r[i]));

    /// <summary>A bytea[] parameter, distinct and sorted: batch writes then lock rows in one order (fewer deadlocks).</summary>
    private static NpgsqlParameter Tags(IEnumerable<ChunkTag> tags) => new()
    {
        NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea,
        Value = tags.Select(t => t.Hash.ToArray()).OrderBy(b => b, ByteOrder.Instance).ToArray(),
    };

    private sealed class ByteOrder : IComparer<byte[]>
    {
        public static readonly ByteOrder Instance = new();
        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }

    // ------------------------------------------------------------------ schema

    private static readonly string[] Migrations =
    [
        // 1: initial schema
        """
        CREATE TABLE server (
            id integer PRIMARY KEY CHECK (id = 1),
            secret bytea NOT NULL,
            collection_epoch bigint NOT NULL);
        CREATE TABLE users (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            name text NOT NULL UNIQUE,
            verifier bytea NOT NULL,
            kdf_salt bytea NOT NULL, kdf_memory integer NOT NULL, kdf_iterations integer NOT NULL, kdf_parallelism integer NOT NULL,
            wrapped_secrets bytea NOT NULL,
            recovery_wrapped bytea NOT NULL,
            disabled boolean NOT NULL DEFAULT false,
            created timestamptz NOT NULL);
        CREATE TABLE sessions (
            token_hash bytea PRIMARY KEY,
            user_id bigint NOT NULL REFERENCES users(id),
            site_id text NOT NULL, site_name text NOT NULL,
            created timestamptz NOT NULL, expires timestamptz NOT NULL,
            revoked boolean NOT NULL DEFAULT false);
        CREATE INDEX sessions_user ON sessions (user_id);
        CREATE TABLE parcels (
            key bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            owner_id bigint NOT NULL REFERENCES users(id),
            name text NOT NULL,
            parcel_id text NOT NULL,
            chunk_size integer NOT NULL, disk_size bigint NOT NULL,
            wrapped_key bytea NOT NULL,
            created timestamptz NOT NULL,
            UNIQUE (owner_id, name));
        CREATE TABLE versions (
            parcel_key bigint NOT NULL REFERENCES parcels(key),
            number bigint NOT NULL,
            commit_id text NOT NULL,
            mac text NOT NULL,
            parent_mac text NOT NULL,
            parent bigint,
            side boolean NOT NULL,
            reason text,
            record bytea NOT NULL,
            committed timestamptz NOT NULL,
            PRIMARY KEY (parcel_key, number));
        CREATE UNIQUE INDEX versions_commit_id ON versions (parcel_key, commit_id) WHERE commit_id <> '';
        CREATE INDEX versions_mac ON versions (parcel_key, mac);
        CREATE TABLE locks (
            token text PRIMARY KEY,
            parcel_key bigint NOT NULL REFERENCES parcels(key),
            user_id bigint NOT NULL REFERENCES users(id),
            site_id text NOT NULL, site_name text NOT NULL,
            acquired timestamptz NOT NULL, last_contact timestamptz NOT NULL,
            state text NOT NULL CHECK (state IN ('held', 'released', 'broken')));
        CREATE INDEX locks_parcel ON locks (parcel_key);
        CREATE UNIQUE INDEX locks_held ON locks (parcel_key) WHERE state = 'held';
        CREATE TABLE blob_holders (
            tag bytea NOT NULL,
            user_id bigint NOT NULL REFERENCES users(id),
            last_seen timestamptz NOT NULL,
            PRIMARY KEY (tag, user_id));
        """,
        // 2: hoard — hoard-only site tokens and hoard requests
        """
        CREATE TABLE site_tokens (
            token_hash bytea PRIMARY KEY,
            user_id bigint NOT NULL REFERENCES users(id),
            site_id text NOT NULL, site_name text NOT NULL,
            created timestamptz NOT NULL,
            revoked boolean NOT NULL DEFAULT false);
        CREATE INDEX site_tokens_site ON site_tokens (user_id, site_id);
        CREATE TABLE hoard_requests (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            user_id bigint NOT NULL REFERENCES users(id),
            parcel_key bigint NOT NULL REFERENCES parcels(key),
            site_id text NOT NULL, site_name text NOT NULL,
            version bigint,
            state text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'revoked')),
            blobs_done bigint NOT NULL DEFAULT 0, blobs_total bigint NOT NULL DEFAULT 0, bytes_done bigint NOT NULL DEFAULT 0,
            error text,
            created timestamptz NOT NULL, updated timestamptz NOT NULL);
        CREATE INDEX hoard_requests_site ON hoard_requests (user_id, site_id);
        """,
        // 3: lock check-in progress (the holder's upload, so that another site waits for its commit)
        """
        ALTER TABLE locks ADD COLUMN checkin_sent bigint, ADD COLUMN checkin_total bigint,
            ADD COLUMN checkin_started timestamptz, ADD COLUMN checkin_updated timestamptz;
        """,
    ];

    public Task InitializeAsync(CancellationToken ct) => WriteAsync(async db =>
    {
        // two servers starting at once: the second waits here, then finds the schema made (DDL is transactional)
        await db.ExecAsync("SELECT pg_advisory_xact_lock($1)", SchemaLockKey);
        await db.ExecAsync("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)");
        var current = Convert.ToInt32(await db.ScalarAsync("SELECT coalesce(max(version), 0) FROM schema_version"));
        if (current > Migrations.Length)
            throw new InvalidOperationException($"database schema {current} is newer than this server ({Migrations.Length})");
        for (int v = current; v < Migrations.Length; v++)
        {
            await db.ExecAsync(Migrations[v]);
            await db.ExecAsync("INSERT INTO schema_version (version) VALUES ($1)", v + 1);
        }
        await db.ExecAsync("INSERT INTO server (id, secret, collection_epoch) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING",
            RandomNumberGenerator.GetBytes(32));
        return 0;
    }, ct);

    public async Task<int> SchemaVersionAsync(CancellationToken ct) =>
        await ReadAsync(async db => Convert.ToInt32(await db.ScalarAsync("SELECT coalesce(max(version), 0) FROM schema_version")), ct);

    // ------------------------------------------------------------------ settings

    public Task<byte[]> GetServerSecretAsync(CancellationToken ct) =>
        ReadAsync(async db => (byte[])(await db.ScalarAsync("SELECT secret FROM server"))!, ct);

    public Task<long> GetCollectionEpochAsync(CancellationToken ct) =>
        ReadAsync(async db => Convert.ToInt64(await db.ScalarAsync("SELECT collection_epoch FROM server")), ct);

    public Task<long> AdvanceCollectionEpochAsync(CancellationToken ct) =>
        WriteAsync(async db => Convert.ToInt64(await db.ScalarAsync(
            "UPDATE server SET collection_epoch = collection_epoch + 1 RETURNING collection_epoch")), ct);

    // ------------------------------------------------------------------ users

    private const string UserColumns = "id, name, verifier, kdf_salt, kdf_memory, kdf_iterations, kdf_parallelism, wrapped_secrets, recovery_wrapped, disabled, created";

    private static UserRecord ReadUser(NpgsqlDataReader r) => new(
        r.GetInt64(0), r.GetString(1), (byte[])r[2],
        new KdfParameters((byte[])r[3], r.GetInt32(4), r.GetInt32(5), r.GetInt32(6)),
        (byte[])r[7], (byte[])r[8], r.GetBoolean(9), Time(r, 10));

    public Task<UserRecord> AddUserAsync(NewUser user, DateTimeOffset now, CancellationToken ct) => WriteAsync(async db =>
    {
        // a concurrent insert of the same name makes this wait for it, then do nothing
        var id = await db.ScalarAsync(
            """
            INSERT INTO users (name, verifier, kdf_salt, kdf_memory, kdf_iterations, kdf_parallelism, wrapped_secrets, recovery_wrapped, created)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING RETURNING id
            """,
            user.Name, user.Verifier, user.Kdf.Salt, user.Kdf.MemoryKiB, user.Kdf.Iterations, user.Kdf.Parallelism,
            user.WrappedSecrets, user.RecoveryWrappedSecrets, Ms(now));
        if (id is not long made) throw new MetadataConflictException($"user '{user.Name}' exists");
        return new UserRecord(made, user.Name, user.Verifier, user.Kdf, user.WrappedSecrets, user.RecoveryWrappedSecrets, false, Ms(now));
    }, ct);

    public Task<UserRecord?> GetUserAsync(string name, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync($"SELECT {UserColumns} FROM users WHERE name = $1", ReadUser, name), ct);

    public async Task<IReadOnlyList<UserRecord>> ListUsersAsync(CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync($"SELECT {UserColumns} FROM users ORDER BY name COLLATE \"C\"", ReadUser), ct);

    public Task<bool> DisableUserAsync(string name, CancellationToken ct) => WriteAsync(async db =>
    {
        if (await db.ScalarAsync("UPDATE users SET disabled = true WHERE name = $1 RETURNING id", name) is not long id) return false;
        await db.ExecAsync("UPDATE sessions SET revoked = true WHERE user_id = $1", id);
        await db.ExecAsync("UPDATE site_tokens SET revoked = true WHERE user_id = $1", id);
        return true;
    }, ct);

    public Task<bool> ChangePasswordAsync(long userId, byte[] expectedVerifier, byte[] newVerifier, KdfParameters kdf, byte[] wrappedSecrets,
        byte[]? recoveryWrappedSecrets, CancellationToken ct) =>
        WriteAsync(async db => await db.ExecAsync(
            """
            UPDATE users SET verifier = $1, kdf_salt = $2, kdf_memory = $3, kdf_iterations = $4, kdf_parallelism = $5, wrapped_secrets = $6,
                recovery_wrapped = COALESCE($9, recovery_wrapped)
            WHERE id = $7 AND verifier = $8
            """,
            newVerifier, kdf.Salt, kdf.MemoryKiB, kdf.Iterations, kdf.Parallelism, wrappedSecrets, userId, expectedVerifier,
            new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Bytea, Value = (object?)recoveryWrappedSecrets ?? DBNull.Value }) == 1, ct);

    // ------------------------------------------------------------------ sessions

    public Task CreateSessionAsync(byte[] tokenHash, long userId, string siteId, string siteName, DateTimeOffset now, DateTimeOffset expires, CancellationToken ct) =>
        WriteAsync(db => db.ExecAsync(
            "INSERT INTO sessions (token_hash, user_id, site_id, site_name, created, expires) VALUES ($1, $2, $3, $4, $5, $6)",
            tokenHash, userId, siteId, siteName, Ms(now), Ms(expires)), ct);

    public Task<SessionRecord?> ResolveSessionAsync(byte[] tokenHash, DateTimeOffset now, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync(
            """
            SELECT s.user_id, u.name, u.disabled, s.site_id, s.site_name, s.created, s.expires
            FROM sessions s JOIN users u ON u.id = s.user_id
            WHERE s.token_hash = $1 AND NOT s.revoked AND s.expires > $2
            """,
            r => new SessionRecord(r.GetInt64(0), r.GetString(1), r.GetBoolean(2), r.GetString(3), r.GetString(4), Time(r, 5), Time(r, 6)),
            tokenHash, Ms(now)), ct);

    public Task RevokeSessionAsync(byte[] tokenHash, CancellationToken ct) =>
        WriteAsync(db => db.ExecAsync("UPDATE sessions SET revoked = true WHERE token_hash = $1", tokenHash), ct);

    // ------------------------------------------------------------------ hoard-only site tokens and hoard requests

    /// <summary>A parameter whose value may be null (an untyped null leaves PostgreSQL unable to tell its type).</summary>
    private static NpgsqlParameter Maybe(object? value, NpgsqlDbType type) => new() { Value = value ?? DBNull.Value, NpgsqlDbType = type };

    public Task CreateSiteTokenAsync(byte[] tokenHash, long userId, string siteId, string siteName, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            // the user's row orders two logins of one site at once: each revokes what was live before it
            await db.ExecAsync("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", userId);
            await db.ExecAsync("UPDATE site_tokens SET revoked = true WHERE user_id = $1 AND site_id = $2", userId, siteId);
            return await db.ExecAsync("INSERT INTO site_tokens (token_hash, user_id, site_id, site_name, created) VALUES ($1, $2, $3, $4, $5)",
                tokenHash, userId, siteId, siteName, Ms(now));
        }, ct);

    public Task<SessionRecord?> ResolveSiteTokenAsync(byte[] tokenHash, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync(
            """
            SELECT t.user_id, u.name, u.disabled, t.site_id, t.site_name, t.created
            FROM site_tokens t JOIN users u ON u.id = t.user_id
            WHERE t.token_hash = $1 AND NOT t.revoked
            """,
            r => new SessionRecord(r.GetInt64(0), r.GetString(1), r.GetBoolean(2), r.GetString(3), r.GetString(4), Time(r, 5),
                DateTimeOffset.MaxValue, HoardOnly: true),
            tokenHash), ct);

    public async Task<IReadOnlyList<SiteRecord>> ListSitesAsync(long userId, CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync(
            "SELECT site_id, site_name, created FROM site_tokens WHERE user_id = $1 AND NOT revoked ORDER BY site_name COLLATE \"C\", site_id COLLATE \"C\"",
            r => new SiteRecord(r.GetString(0), r.GetString(1), Time(r, 2)), userId), ct);

    public Task<bool> RevokeSiteAsync(long userId, string siteId, DateTimeOffset now, CancellationToken ct) => WriteAsync(async db =>
    {
        int revoked = await db.ExecAsync("UPDATE site_tokens SET revoked = true WHERE user_id = $1 AND site_id = $2 AND NOT revoked", userId, siteId);
        await db.ExecAsync(
            "UPDATE hoard_requests SET state = 'revoked', updated = $3 WHERE user_id = $1 AND site_id = $2 AND state IN ('pending', 'running')",
            userId, siteId, Ms(now));
        return revoked > 0;
    }, ct);

    private const string HoardColumns =
        "h.id, p.name, h.site_id, h.site_name, h.version, h.state, h.blobs_done, h.blobs_total, h.bytes_done, h.error, h.created, h.updated";
    private const string HoardFrom = "hoard_requests h JOIN parcels p ON p.key = h.parcel_key";

    private static HoardRequestRecord ReadHoard(NpgsqlDataReader r) => new(r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3),
        r.IsDBNull(4) ? null : r.GetInt64(4), r.GetString(5), r.GetInt64(6), r.GetInt64(7), r.GetInt64(8), r.IsDBNull(9) ? null : r.GetString(9),
        Time(r, 10), Time(r, 11));

    public Task<(HoardRequestRecord Request, bool Created)> AddHoardRequestAsync(long userId, long parcelKey, SiteRecord site, long? version,
        DateTimeOffset now, CancellationToken ct) => WriteAsync(async db =>
    {
        await LockParcelAsync(db, parcelKey); // two requests at once: the second sees the first
        var open = await db.SingleAsync(
            $"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.user_id = $1 AND h.parcel_key = $2 AND h.site_id = $3 " +
            "AND h.state IN ('pending', 'running') AND h.version IS NOT DISTINCT FROM $4",
            ReadHoard, userId, parcelKey, site.SiteId, Maybe(version, NpgsqlDbType.Bigint));
        if (open is not null) return (open, false);
        var id = Convert.ToInt64(await db.ScalarAsync(
            """
            INSERT INTO hoard_requests (user_id, parcel_key, site_id, site_name, version, state, created, updated)
            VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) RETURNING id
            """,
            userId, parcelKey, site.SiteId, site.SiteName, Maybe(version, NpgsqlDbType.Bigint), Ms(now)));
        return ((await db.SingleAsync($"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.id = $1", ReadHoard, id))!, true);
    }, ct);

    public async Task<IReadOnlyList<HoardRequestRecord>> ListHoardRequestsAsync(long userId, string? siteId, CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync(
            $"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.user_id = $1 AND ($2::text IS NULL OR h.site_id = $2) ORDER BY h.id DESC",
            ReadHoard, userId, Maybe(siteId, NpgsqlDbType.Text)), ct);

    public Task<HoardRequestRecord?> UpdateHoardRequestAsync(long userId, string siteId, long id, HoardUpdate update, DateTimeOffset now,
        CancellationToken ct) => WriteAsync(async db =>
    {
        int changed = await db.ExecAsync(
            """
            UPDATE hoard_requests SET state = $1, version = coalesce($2, version), blobs_done = $3, blobs_total = $4, bytes_done = $5,
                error = $6, updated = $7
            WHERE id = $8 AND user_id = $9 AND site_id = $10 AND state IN ('pending', 'running')
            """,
            update.State, Maybe(update.Version, NpgsqlDbType.Bigint), update.BlobsDone, update.BlobsTotal, update.BytesDone,
            Maybe(update.Error, NpgsqlDbType.Text), Ms(now), id, userId, siteId);
        return changed == 0 ? null : await db.SingleAsync($"SELECT {HoardColumns} FROM {HoardFrom} WHERE h.id = $1", ReadHoard, id);
    }, ct);

    public Task<bool> HasOpenHoardRequestAsync(long userId, string siteId, long parcelKey, CancellationToken ct) =>
        ReadAsync(async db => await db.ScalarAsync(
            "SELECT 1 FROM hoard_requests WHERE user_id = $1 AND site_id = $2 AND parcel_key = $3 AND state IN ('pending', 'running')",
            userId, siteId, parcelKey) is not null, ct);

    // ------------------------------------------------------------------ parcels

    private const string ParcelColumns = "p.key, p.owner_id, u.name, p.name, p.parcel_id, p.chunk_size, p.disk_size, p.wrapped_key, p.created";
    private const string ParcelFrom = "parcels p JOIN users u ON u.id = p.owner_id";

    private static ParcelRecord ReadParcel(NpgsqlDataReader r) => new(
        r.GetInt64(0), r.GetInt64(1), r.GetString(2), r.GetString(3), r.GetString(4), r.GetInt32(5), r.GetInt64(6), (byte[])r[7], Time(r, 8));

    public Task<CommitResult> CreateParcelAsync(long ownerId, NewParcel parcel, VersionRecord first, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            // a concurrent creation of the same name makes this wait for it, then see its parcel and first version
            var key = await db.ScalarAsync(
                """
                INSERT INTO parcels (owner_id, name, parcel_id, chunk_size, disk_size, wrapped_key, created)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (owner_id, name) DO NOTHING RETURNING key
                """,
                ownerId, parcel.Name, parcel.Id, parcel.ChunkSize, parcel.DiskSize, parcel.WrappedKey, Ms(parcel.Created));
            if (key is not long made)
            {
                var existing = Convert.ToInt64(await db.ScalarAsync("SELECT key FROM parcels WHERE owner_id = $1 AND name = $2", ownerId, parcel.Name));
                if (first.CommitId.Length > 0 && await FindByCommitIdAsync(db, existing, first.CommitId) is { } done)
                    return new CommitResult(CommitStatus.Existing, done.Version, done.Reason);
                return new CommitResult(CommitStatus.Conflict, Reason: $"parcel '{parcel.Name}' exists");
            }
            var numbered = first with { Number = 1, Parent = null, Side = false };
            await InsertVersionAsync(db, made, numbered, null, now);
            return new CommitResult(CommitStatus.Head, numbered);
        }, ct);

    public Task<ParcelRecord?> GetParcelAsync(long ownerId, string name, CancellationToken ct) =>
        ReadAsync(db => db.SingleAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} WHERE p.owner_id = $1 AND p.name = $2", ReadParcel,
            ownerId, name), ct);

    public async Task<IReadOnlyList<ParcelRecord>> ListAllParcelsAsync(CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} ORDER BY u.name COLLATE \"C\", p.name COLLATE \"C\"", ReadParcel), ct);

    public async Task<IReadOnlyList<ParcelSummary>> ListParcelsAsync(long ownerId, CancellationToken ct) => await ReadAsync(async db =>
    {
        var parcels = await db.QueryAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} WHERE p.owner_id = $1 ORDER BY p.name COLLATE \"C\"", ReadParcel, ownerId);
        var result = new List<ParcelSummary>();
        foreach (var p in parcels) result.Add(new ParcelSummary(p, await HeadNumberAsync(db, p.Key), await GetLockAsync(db, p.Key)));
        return result;
    }, ct);

    public Task<ParcelSummary?> GetParcelSummaryAsync(long parcelKey, CancellationToken ct) => ReadAsync(async db =>
    {
        var p = await db.SingleAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} WHERE p.key = $1", ReadParcel, parcelKey);
        return p is null ? null : new ParcelSummary(p, await HeadNumberAsync(db, p.Key), await GetLockAsync(db, p.Key));
    }, ct);

    /// <summary>Locks the parcel's row until the transaction ends: the serialisation point of every rule about one
    /// parcel. NO KEY UPDATE leaves foreign-key checks of other tables unblocked. False if there is no such parcel.</summary>
    private static async Task<bool> LockParcelAsync(Db db, long parcelKey) =>
        await db.ScalarAsync("SELECT 1 FROM parcels WHERE key = $1 FOR NO KEY UPDATE", parcelKey) is not null;

    // ------------------------------------------------------------------ versions

    private sealed record FoundVersion(VersionRecord Version, string? Reason);

    private static FoundVersion ReadVersion(NpgsqlDataReader r)
    {
        var record = VersionRecord.FromJson((byte[])r[0]);
        return new FoundVersion(record with { Number = r.GetInt64(1), Parent = r.IsDBNull(2) ? null : r.GetInt64(2), Side = r.GetBoolean(3) },
            r.IsDBNull(4) ? null : r.GetString(4));
    }

    private const string VersionColumns = "record, number, parent, side, reason";

    private static async Task<long> HeadNumberAsync(Db db, long parcelKey) =>
        Convert.ToInt64(await db.ScalarAsync("SELECT coalesce(max(number), 0) FROM versions WHERE parcel_key = $1 AND NOT side", parcelKey));

    private static Task<FoundVersion?> HeadAsync(Db db, long parcelKey) =>
        db.SingleAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $1 AND NOT side ORDER BY number DESC LIMIT 1",
            ReadVersion, parcelKey);

    private static Task<FoundVersion?> FindByCommitIdAsync(Db db, long parcelKey, string commitId) =>
        db.SingleAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $1 AND commit_id = $2", ReadVersion, parcelKey, commitId);

    private static Task InsertVersionAsync(Db db, long parcelKey, VersionRecord v, string? reason, DateTimeOffset committed)
    {
        var stored = v with { Number = 0, Parent = null, Side = false }; // the columns are authoritative for these
        return db.ExecAsync(
            """
            INSERT INTO versions (parcel_key, number, commit_id, mac, parent_mac, parent, side, reason, record, committed)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            """,
            parcelKey, v.Number, v.CommitId, v.Mac, v.ParentMac, v.Parent, v.Side,
            new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text, Value = (object?)reason ?? DBNull.Value }, stored.ToJson(), Ms(committed));
    }

    public async Task<IReadOnlyList<VersionRecord>> ListVersionsAsync(long parcelKey, CancellationToken ct) =>
        (await ReadAsync(db => db.QueryAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $1 ORDER BY number", ReadVersion,
            parcelKey), ct)).Select(r => r.Version).ToList();

    public async Task<VersionRecord?> FindByCommitIdAsync(long parcelKey, string commitId, CancellationToken ct) =>
        commitId.Length == 0 ? null : (await ReadAsync(db => FindByCommitIdAsync(db, parcelKey, commitId), ct))?.Version;

    public Task<CommitResult> CommitAsync(long parcelKey, VersionRecord version, string? lockToken, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            if (!await LockParcelAsync(db, parcelKey)) return new CommitResult(CommitStatus.NotFound);
            if (version.CommitId.Length > 0 && await FindByCommitIdAsync(db, parcelKey, version.CommitId) is { } done)
                return new CommitResult(CommitStatus.Existing, done.Version, done.Reason);
            string? state = lockToken is null ? null : (string?)await db.ScalarAsync(
                "SELECT state FROM locks WHERE token = $1 AND parcel_key = $2", lockToken, parcelKey);
            if (state is null) return new CommitResult(CommitStatus.Forbidden, Reason: "the lock token is not a lock of this parcel");
            var head = await HeadAsync(db, parcelKey);
            var reason = CommitRules.SideReason(state, head?.Version, version);
            if (state == "held") await db.ExecAsync("UPDATE locks SET last_contact = $1 WHERE token = $2", Ms(now), lockToken);
            var numbered = await NumberAsync(db, parcelKey, version, side: reason is not null);
            await InsertVersionAsync(db, parcelKey, numbered, reason, now);
            KillPoint.Reach("server.commit.before-db-commit"); // the row is written, the transaction not committed
            return new CommitResult(reason is null ? CommitStatus.Head : CommitStatus.Side, numbered, reason);
        }, ct);

    private static async Task<VersionRecord> NumberAsync(Db db, long parcelKey, VersionRecord version, bool side)
    {
        var next = Convert.ToInt64(await db.ScalarAsync("SELECT coalesce(max(number), 0) + 1 FROM versions WHERE parcel_key = $1", parcelKey));
        object? parent = version.ParentMac.Length == 0 ? null : await db.ScalarAsync(
            "SELECT number FROM versions WHERE parcel_key = $1 AND mac = $2 ORDER BY number DESC LIMIT 1", parcelKey, version.ParentMac);
        return version with { Number = next, Parent = parent is null ? null : Convert.ToInt64(parent), Side = side };
    }

    public Task<CommitResult> RollbackAsync(long parcelKey, VersionRecord version, string? lockToken, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            if (!await LockParcelAsync(db, parcelKey)) return new CommitResult(CommitStatus.NotFound);
            if (version.CommitId.Length > 0 && await FindByCommitIdAsync(db, parcelKey, version.CommitId) is { } done)
                return new CommitResult(CommitStatus.Existing, done.Version, done.Reason);
            var held = await db.SingleAsync("SELECT token FROM locks WHERE parcel_key = $1 AND state = 'held'", r => r.GetString(0), parcelKey);
            if (held is not null && held != lockToken)
                return new CommitResult(CommitStatus.Locked, Reason: "another site holds the lock", Lock: await GetLockAsync(db, parcelKey));
            var head = await HeadAsync(db, parcelKey);
            if (head is not null && version.ParentMac != head.Version.Mac)
                return new CommitResult(CommitStatus.Conflict, Reason: $"a rollback must name the head (version {head.Version.Number}) as its parent");
            if (held is not null) await db.ExecAsync("UPDATE locks SET last_contact = $1 WHERE token = $2", Ms(now), held);
            var numbered = await NumberAsync(db, parcelKey, version, side: false);
            await InsertVersionAsync(db, parcelKey, numbered, null, now);
            return new CommitResult(CommitStatus.Head, numbered);
        }, ct);

    public Task<IReadOnlyList<VersionRecord>> PruneAsync(long parcelKey, int keepHeads, CancellationToken ct) =>
        WriteAsync<IReadOnlyList<VersionRecord>>(async db =>
        {
            if (!await LockParcelAsync(db, parcelKey)) return [];
            var versions = (await db.QueryAsync($"SELECT {VersionColumns} FROM versions WHERE parcel_key = $1 ORDER BY number", ReadVersion,
                parcelKey)).Select(r => r.Version).ToList();
            var doomed = PrunePolicy.Select(versions, keepHeads);
            if (doomed.Count > 0)
                await db.ExecAsync("DELETE FROM versions WHERE parcel_key = $1 AND number = ANY($2)", parcelKey, doomed.Select(v => v.Number).ToArray());
            return doomed;
        }, ct);

    public async Task<IReadOnlyList<StoredVersion>> ListAllVersionsAsync(CancellationToken ct) =>
        await ReadAsync(db => db.QueryAsync(
            $"""
            SELECT v.record, v.number, v.parent, v.side, v.reason, p.key, u.name, p.name
            FROM versions v JOIN parcels p ON p.key = v.parcel_key JOIN users u ON u.id = p.owner_id
            ORDER BY u.name COLLATE "C", p.name COLLATE "C", v.number
            """,
            r => new StoredVersion(r.GetInt64(5), r.GetString(6), r.GetString(7), ReadVersion(r).Version)), ct);

    // ------------------------------------------------------------------ locks

    private static LockInfo ReadLock(NpgsqlDataReader r) => new(r.GetString(0), r.GetString(1), Time(r, 2), Time(r, 3), r.GetString(4),
        r.IsDBNull(6) ? null : new LockCheckin(r.GetInt64(6), r.IsDBNull(7) ? null : r.GetInt64(7), Time(r, 8), Time(r, 9)));

    private const string LockSelect =
        "SELECT l.site_id, l.site_name, l.acquired, l.last_contact, u.name, l.token, l.checkin_sent, l.checkin_total, l.checkin_started, l.checkin_updated " +
        "FROM locks l JOIN users u ON u.id = l.user_id";

    private static Task<LockInfo?> GetLockAsync(Db db, long parcelKey) =>
        db.SingleAsync($"{LockSelect} WHERE l.parcel_key = $1 AND l.state = 'held'", ReadLock, parcelKey);

    public Task<LockInfo?> GetLockAsync(long parcelKey, CancellationToken ct) => ReadAsync(db => GetLockAsync(db, parcelKey), ct);

    public Task<LockGrant> AcquireLockAsync(long parcelKey, long userId, string siteId, string siteName, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db =>
        {
            await LockParcelAsync(db, parcelKey); // (no parcel: the insert below fails its foreign key)
            var rows = await db.QueryAsync($"{LockSelect} WHERE l.parcel_key = $1 AND l.state = 'held'",
                r => (Lock: ReadLock(r), Token: r.GetString(5)), parcelKey);
            if (rows.Count > 0)
            {
                var current = rows[0];
                if (current.Lock.SiteId != siteId) return new LockGrant(false, null, current.Lock);
                // taken again by its holder (a resume there): any check-in it reported is over
                await db.ExecAsync(
                    """
                    UPDATE locks SET last_contact = $1, site_name = $2,
                        checkin_sent = NULL, checkin_total = NULL, checkin_started = NULL, checkin_updated = NULL
                    WHERE token = $3
                    """,
                    Ms(now), siteName, current.Token);
                return new LockGrant(true, current.Token, current.Lock with { LastContact = Ms(now), SiteName = siteName, Checkin = null });
            }
            var token = Base64Url(RandomNumberGenerator.GetBytes(32));
            await db.ExecAsync(
                """
                INSERT INTO locks (token, parcel_key, user_id, site_id, site_name, acquired, last_contact, state)
                VALUES ($1, $2, $3, $4, $5, $6, $6, 'held')
                """,
                token, parcelKey, userId, siteId, siteName, Ms(now));
            return new LockGrant(true, token, (await GetLockAsync(db, parcelKey))!);
        }, ct);

    public Task<LockRelease> ReleaseLockAsync(long parcelKey, string token, CancellationToken ct) => WriteAsync(async db =>
    {
        await LockParcelAsync(db, parcelKey);
        var state = (string?)await db.ScalarAsync("SELECT state FROM locks WHERE token = $1 AND parcel_key = $2", token, parcelKey);
        if (state is null) return LockRelease.UnknownToken;
        if (state != "held") return LockRelease.AlreadyReleased;
        await db.ExecAsync("UPDATE locks SET state = 'released' WHERE token = $1", token);
        return LockRelease.Released;
    }, ct);

    public Task<bool> BreakLockAsync(long parcelKey, CancellationToken ct) => WriteAsync(async db =>
    {
        await LockParcelAsync(db, parcelKey);
        return await db.ExecAsync("UPDATE locks SET state = 'broken' WHERE parcel_key = $1 AND state = 'held'", parcelKey) > 0;
    }, ct);

    public Task TouchLockAsync(long parcelKey, string token, DateTimeOffset now, CancellationToken ct) => WriteAsync(db =>
        db.ExecAsync("UPDATE locks SET last_contact = greatest(last_contact, $1) WHERE token = $2 AND parcel_key = $3 AND state = 'held'",
            Ms(now), token, parcelKey), ct);

    public Task<bool> ReportCheckinAsync(long parcelKey, string token, long sent, long? total, DateTimeOffset now, CancellationToken ct) =>
        WriteAsync(async db => await db.ExecAsync(
            """
            UPDATE locks SET last_contact = greatest(last_contact, $1), checkin_sent = $2, checkin_total = $3,
                checkin_started = coalesce(checkin_started, $1), checkin_updated = $1
            WHERE token = $4 AND parcel_key = $5 AND state = 'held'
            """,
            Ms(now), sent, new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Bigint, Value = (object?)total ?? DBNull.Value }, token, parcelKey) > 0, ct);

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    // ------------------------------------------------------------------ blobs (one statement per batch of tags)

    public async Task RecordBlobsAsync(long userId, IReadOnlyCollection<ChunkTag> tags, DateTimeOffset now, CancellationToken ct)
    {
        foreach (var chunk in tags.Distinct().Chunk(Batch))
            await WriteAsync(db => db.ExecAsync(
                """
                INSERT INTO blob_holders (tag, user_id, last_seen) SELECT t, $2, $3 FROM unnest($1::bytea[]) t
                ON CONFLICT (tag, user_id) DO UPDATE SET last_seen = greatest(blob_holders.last_seen, excluded.last_seen)
                """, Tags(chunk), userId, Ms(now)), ct);
    }

    public async Task<IReadOnlySet<ChunkTag>> HeldBlobsAsync(long userId, IReadOnlyCollection<ChunkTag> tags, DateTimeOffset? touch, CancellationToken ct)
    {
        var held = new HashSet<ChunkTag>();
        foreach (var chunk in tags.Distinct().Chunk(Batch))
        {
            held.UnionWith(touch is { } now
                ? await WriteAsync(db => db.QueryAsync(
                    "UPDATE blob_holders SET last_seen = greatest(last_seen, $3) WHERE user_id = $1 AND tag = ANY($2) RETURNING tag",
                    r => Tag(r, 0), userId, Tags(chunk), Ms(now)), ct)
                : await ReadAsync(db => db.QueryAsync("SELECT tag FROM blob_holders WHERE user_id = $1 AND tag = ANY($2)",
                    r => Tag(r, 0), userId, Tags(chunk)), ct));
        }
        return held;
    }

    public async Task<IReadOnlyDictionary<ChunkTag, DateTimeOffset>> LastSeenAsync(IReadOnlyCollection<ChunkTag> tags, CancellationToken ct)
    {
        var result = new Dictionary<ChunkTag, DateTimeOffset>();
        foreach (var chunk in tags.Distinct().Chunk(Batch))
        {
            var rows = await ReadAsync(db => db.QueryAsync("SELECT tag, max(last_seen) FROM blob_holders WHERE tag = ANY($1) GROUP BY tag",
                r => (Tag(r, 0), Time(r, 1)), Tags(chunk)), ct);
            foreach (var (tag, seen) in rows) result[tag] = seen;
        }
        return result;
    }

    public Task<bool> ForgetBlobAsync(ChunkTag tag, DateTimeOffset seenBefore, CancellationToken ct) => WriteAsync(async db =>
    {
        var bytes = tag.Hash.ToArray();
        // lock every holding of the blob: a concurrent touch waits, and the decision below sees the latest times
        var seen = await db.QueryAsync("SELECT last_seen FROM blob_holders WHERE tag = $1 FOR UPDATE", r => Time(r, 0), bytes);
        if (seen.Count > 0 && seen.Max() >= Ms(seenBefore)) return false;
        await db.ExecAsync("DELETE FROM blob_holders WHERE tag = $1", bytes);
        return true;
    }, ct);

    public Task<MetadataStats> GetStatsAsync(CancellationToken ct) => ReadAsync(async db =>
    {
        var r = await db.QueryAsync(
            """
            SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM parcels), (SELECT count(*) FROM versions),
                   (SELECT count(*) FROM versions WHERE side), (SELECT count(*) FROM locks WHERE state = 'held'),
                   (SELECT count(*) FROM blob_holders), (SELECT count(DISTINCT tag) FROM blob_holders)
            """,
            r => new MetadataStats((int)r.GetInt64(0), (int)r.GetInt64(1), (int)r.GetInt64(2), (int)r.GetInt64(3), (int)r.GetInt64(4),
                r.GetInt64(5), r.GetInt64(6)));
        return r[0];
    }, ct);

    // ------------------------------------------------------------------ transfer

    public Task<MetadataSnapshot> ExportAsync(CancellationToken ct) => ReadAsync(async db =>
    {
        var server = (await db.QueryAsync("SELECT secret, collection_epoch FROM server", r => ((byte[])r[0], r.GetInt64(1))))[0];
        return new MetadataSnapshot(server.Item1, server.Item2,
            await db.QueryAsync($"SELECT {UserColumns} FROM users ORDER BY id", ReadUser),
            await db.QueryAsync("SELECT token_hash, user_id, site_id, site_name, created, expires, revoked FROM sessions ORDER BY token_hash",
                r => new SessionRow((byte[])r[0], r.GetInt64(1), r.GetString(2), r.GetString(3), Time(r, 4), Time(r, 5), r.GetBoolean(6))),
            await db.QueryAsync($"SELECT {ParcelColumns} FROM {ParcelFrom} ORDER BY p.key", ReadParcel),
            await db.QueryAsync($"SELECT {VersionColumns}, parcel_key, committed FROM versions ORDER BY parcel_key, number", r =>
            {
                var row = ReadVersion(r);
                return new VersionRow(r.GetInt64(5), row.Version, row.Reason, Time(r, 6));
            }),
            await db.QueryAsync("SELECT token, parcel_key, user_id, site_id, site_name, acquired, last_contact, state FROM locks ORDER BY parcel_key, acquired, token COLLATE \"C\"",
                r => new LockRow(r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetString(3), r.GetString(4), Time(r, 5), Time(r, 6),
                    LockStates.Parse(r.GetString(7)))),
            await db.QueryAsync("SELECT tag, user_id, last_seen FROM blob_holders ORDER BY tag, user_id",
                r => new BlobHolding(Tag(r, 0), r.GetInt64(1), Time(r, 2))),
            await db.QueryAsync("SELECT token_hash, user_id, site_id, site_name, created, revoked FROM site_tokens ORDER BY token_hash",
                r => new SiteTokenRow((byte[])r[0], r.GetInt64(1), r.GetString(2), r.GetString(3), Time(r, 4), r.GetBoolean(5))),
            await db.QueryAsync($"SELECT {HoardColumns}, h.user_id, h.parcel_key FROM {HoardFrom} ORDER BY h.id",
                r => new HoardRequestRow(r.GetInt64(12), r.GetInt64(13), ReadHoard(r))));
    }, ct);

    /// <summary>Rows go in with binary COPY, keeping their ids; the identity sequences then continue after the highest.</summary>
    public Task ImportAsync(MetadataSnapshot snapshot, CancellationToken ct) => WriteAsync(async db =>
    {
        await db.ExecAsync("LOCK TABLE users, parcels IN EXCLUSIVE MODE"); // nobody adds a first row meanwhile
        if (Convert.ToInt64(await db.ScalarAsync("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM parcels)")) > 0)
            throw new MetadataConflictException("the target metadata store is not empty");
        await db.ExecAsync("UPDATE server SET secret = $1, collection_epoch = $2", snapshot.ServerSecret, snapshot.CollectionEpoch);
        await CopyAsync(db, $"users ({UserColumns})", snapshot.Users, u => [
            u.Id, u.Name, u.Verifier, u.Kdf.Salt, u.Kdf.MemoryKiB, u.Kdf.Iterations, u.Kdf.Parallelism, u.WrappedSecrets,
            u.RecoveryWrappedSecrets, u.Disabled, Ms(u.Created)]);
        await CopyAsync(db, "sessions (token_hash, user_id, site_id, site_name, created, expires, revoked)", snapshot.Sessions, s => [
            s.TokenHash, s.UserId, s.SiteId, s.SiteName, Ms(s.Created), Ms(s.Expires), s.Revoked]);
        await CopyAsync(db, "parcels (key, owner_id, name, parcel_id, chunk_size, disk_size, wrapped_key, created)", snapshot.Parcels, p => [
            p.Key, p.OwnerId, p.Name, p.Id, p.ChunkSize, p.DiskSize, p.WrappedKey, Ms(p.Created)]);
        await CopyAsync(db, "versions (parcel_key, number, commit_id, mac, parent_mac, parent, side, reason, record, committed)", snapshot.Versions,
            v => [
                v.ParcelKey, v.Version.Number, v.Version.CommitId, v.Version.Mac, v.Version.ParentMac, v.Version.Parent, v.Version.Side,
                v.Reason, (v.Version with { Number = 0, Parent = null, Side = false }).ToJson(), Ms(v.Committed)]);
        await CopyAsync(db, "locks (token, parcel_key, user_id, site_id, site_name, acquired, last_contact, state)", snapshot.Locks, l => [
            l.Token, l.ParcelKey, l.UserId, l.SiteId, l.SiteName, Ms(l.Acquired), Ms(l.LastContact), LockStates.Name(l.State)]);
        await CopyAsync(db, "blob_holders (tag, user_id, last_seen)", snapshot.Holdings, h => [h.Tag.Hash.ToArray(), h.UserId, Ms(h.LastSeen)]);
        await db.ExecAsync("SELECT setval(pg_get_serial_sequence('users', 'id'), coalesce(max(id), 0) + 1, false) FROM users");
        await CopyAsync(db, "site_tokens (token_hash, user_id, site_id, site_name, created, revoked)", snapshot.SiteTokens, t => [
            t.TokenHash, t.UserId, t.SiteId, t.SiteName, Ms(t.Created), t.Revoked]);
        await CopyAsync(db, "hoard_requests (id, user_id, parcel_key, site_id, site_name, version, state, blobs_done, blobs_total, bytes_done, error, created, updated)",
            snapshot.HoardRequests, r => [
                r.Request.Id, r.UserId, r.ParcelKey, r.Request.SiteId, r.Request.SiteName, r.Request.Version, r.Request.State, r.Request.BlobsDone,
                r.Request.BlobsTotal, r.Request.BytesDone, r.Request.Error, Ms(r.Request.Created), Ms(r.Request.Updated)]);
        await db.ExecAsync("SELECT setval(pg_get_serial_sequence('parcels', 'key'), coalesce(max(key), 0) + 1, false) FROM parcels");
        await db.ExecAsync("SELECT setval(pg_get_serial_sequence('hoard_requests', 'id'), coalesce(max(id), 0) + 1, false) FROM hoard_requests");
        return 0;
    }, ct);

    private static async Task CopyAsync<T>(Db db, string target, IEnumerable<T> rows, Func<T, object?[]> values)
    {
        await using var importer = await db.Connection.BeginBinaryImportAsync($"COPY {target} FROM STDIN (FORMAT BINARY)", db.Ct);
        foreach (var row in rows)
        {
            await importer.StartRowAsync(db.Ct);
            foreach (var value in values(row))
            {
                if (value is null) await importer.WriteNullAsync(db.Ct);
                else await importer.WriteAsync(value, db.Ct);
            }
        }
        await importer.CompleteAsync(db.Ct);
    }
}
