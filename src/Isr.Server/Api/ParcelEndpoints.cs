using Isr.Format;
using Isr.Server.Blobs;
using Isr.Storage.Metadata;

namespace Isr.Server.Api;

/// <summary>PROTOCOL.md "Parcels", "Versions" and "Locks". Parcel names are per user: another user's parcel is simply not found.</summary>
internal static class ParcelEndpoints
{
    public const string LockTokenHeader = "Isr-Lock-Token";

    public static void Map(RouteGroupBuilder api)
    {
        api.MapGet("/parcels", async (HttpContext http, IMetadataStore metadata, CancellationToken ct) =>
        {
            var parcels = await metadata.ListParcelsAsync(http.Session().UserId, ct);
            return Results.Json(parcels.Select(p => new ParcelEntry(ParcelInfoDto.From(p.Parcel), p.Head, p.Lock)), ApiJson.Options);
        });

        api.MapPost("/parcels", async (HttpContext http, IMetadataStore metadata, CommitChecker checker, TimeProvider clock, CancellationToken ct) =>
        {
            var request = await ApiJson.ReadAsync<CreateParcelRequest>(http.Request, ct);
            var p = request.Parcel;
            ValidName(p.Name);
            if (p.Id.Length is 0 or > 128) throw ApiException.BadRequest("parcel.id must be 1 to 128 characters");
            if (p.ChunkSize <= 0 || p.DiskSize < 0) throw ApiException.BadRequest("parcel.chunkSize and parcel.diskSize are out of range");
            if (p.WrappedKey.Length == 0) throw ApiException.BadRequest("parcel.wrappedKey is empty");
            ValidateRecord(request.First, p.Id, requireCommitId: false);
            var session = http.Session();
            await RequireCompleteAsync(checker, session.UserId, request.First, ct);
            var result = await metadata.CreateParcelAsync(session.UserId,
                new NewParcel(p.Name, p.Id, p.ChunkSize, p.DiskSize, p.WrappedKey, p.Created), request.First, clock.GetUtcNow(), ct);
            return result.Status switch
            {
                CommitStatus.Head => Results.Json(new VersionResponse(result.Version!), ApiJson.Options, statusCode: 201),
                CommitStatus.Existing => Results.Json(new VersionResponse(result.Version!), ApiJson.Options, statusCode: 200),
                _ => throw ApiException.Conflict(result.Reason ?? $"parcel '{p.Name}' exists"),
            };
        });

        var parcel = api.MapGroup("/parcels/{name}");

        parcel.MapGet("", async (HttpContext http, string name, IMetadataStore metadata, CancellationToken ct) =>
        {
            var record = await ResolveAsync(http, name, ct);
            var summary = await metadata.GetParcelSummaryAsync(record.Key, ct) ?? throw ApiException.NotFound($"no parcel named '{name}'");
            return Results.Json(new ParcelEntry(ParcelInfoDto.From(summary.Parcel), summary.Head, summary.Lock), ApiJson.Options);
        }).AllowHoardToken();

        parcel.MapGet("/versions", async (HttpContext http, string name, IMetadataStore metadata, CancellationToken ct) =>
        {
            var record = await ResolveAsync(http, name, ct);
            return Results.Json(await metadata.ListVersionsAsync(record.Key, ct), ApiJson.Options);
        }).AllowHoardToken();

        parcel.MapPost("/versions", (HttpContext http, string name, IMetadataStore metadata, CommitChecker checker, TimeProvider clock, CancellationToken ct) =>
            CommitAsync(http, name, metadata, checker, clock, rollback: false, ct));

        parcel.MapPost("/rollback", (HttpContext http, string name, IMetadataStore metadata, CommitChecker checker, TimeProvider clock, CancellationToken ct) =>
            CommitAsync(http, name, metadata, checker, clock, rollback: true, ct));

        parcel.MapPost("/lock", async (HttpContext http, string name, IMetadataStore metadata, TimeProvider clock, CancellationToken ct) =>
        {
            var record = await ResolveAsync(http, name, ct);
            var request = await ApiJson.ReadAsync<LockRequest>(http.Request, ct);
            if (request.SiteId.Length is 0 or > 200) throw ApiException.BadRequest("siteId must be 1 to 200 characters");
            var grant = await metadata.AcquireLockAsync(record.Key, http.Session().UserId, request.SiteId, request.SiteName ?? "", clock.GetUtcNow(), ct);
            if (!grant.Granted)
                throw new ApiException(409, "locked", $"parcel '{name}' is locked by site '{grant.Lock.SiteName}' ({grant.Lock.SiteId})") { Lock = grant.Lock };
            return Results.Json(new LockResponse(grant.Token!, grant.Lock), ApiJson.Options);
        });

        parcel.MapDelete("/lock", async (HttpContext http, string name, IMetadataStore metadata, CancellationToken ct) =>
        {
            var record = await ResolveAsync(http, name, ct);
            var token = LockToken(http) ?? throw ApiException.BadRequest($"the {LockTokenHeader} header is required");
            return await metadata.ReleaseLockAsync(record.Key, token, ct) switch
            {
                LockRelease.UnknownToken => throw ApiException.Forbidden("the lock token is not a lock of this parcel"),
                _ => Results.NoContent(),
            };
        });

        parcel.MapPost("/lock/break", async (HttpContext http, string name, IMetadataStore metadata, CancellationToken ct) =>
        {
            var record = await ResolveAsync(http, name, ct);
            if (record.OwnerId != http.Session().UserId) throw ApiException.Forbidden("only the owner can break the lock");
            await metadata.BreakLockAsync(record.Key, ct);
            return Results.NoContent();
        });

        parcel.MapGet("/lock", async (HttpContext http, string name, IMetadataStore metadata, CancellationToken ct) =>
        {
            var record = await ResolveAsync(http, name, ct);
            var current = await metadata.GetLockAsync(record.Key, ct);
            return current is null ? Results.NoContent() : Results.Json(current, ApiJson.Options);
        });

        // The holder's check-in progress: another site's resume waits for the commit while this keeps coming.
        parcel.MapPut("/lock/checkin", async (HttpContext http, string name, IMetadataStore metadata, TimeProvider clock, CancellationToken ct) =>
        {
            var record = await ResolveAsync(http, name, ct, touchLock: false);
            var token = LockToken(http) ?? throw ApiException.BadRequest($"the {LockTokenHeader} header is required");
            var report = await ApiJson.ReadAsync<CheckinReport>(http.Request, ct);
            if (report.Sent < 0 || report.Total < 0) throw ApiException.BadRequest("sent and total must not be negative");
            return await metadata.ReportCheckinAsync(record.Key, token, report.Sent, report.Total, clock.GetUtcNow(), ct)
                ? Results.NoContent()
                : throw ApiException.Forbidden("the lock token is not the current lock of this parcel");
        });
    }

    private static async Task<IResult> CommitAsync(HttpContext http, string name, IMetadataStore metadata, CommitChecker checker,
        TimeProvider clock, bool rollback, CancellationToken ct)
    {
        var record = await ResolveAsync(http, name, ct, touchLock: false);
        var request = await ApiJson.ReadAsync<CommitRequest>(http.Request, ct);
        if (request.CommitId is { Length: > 0 } id && request.Version.CommitId.Length > 0 && id != request.Version.CommitId)
            throw ApiException.BadRequest("commitId differs from version.commitId");
        var version = request.Version; // its commitId is signed: the server never alters it
        ValidateRecord(version, record.Id, requireCommitId: true);
        var token = LockToken(http);
        if (!rollback && token is null) throw ApiException.Forbidden($"a commit needs the parcel's lock ({LockTokenHeader} header)");

        // rule 1 first (a retry is answered without walking the trees), then rule 2, then the one-transaction rules
        if (await metadata.FindByCommitIdAsync(record.Key, version.CommitId, ct) is { } done)
            return Results.Json(new CommitResponse(done, done.Side, null), ApiJson.Options, statusCode: 200);
        await RequireCompleteAsync(checker, http.Session().UserId, version, ct);
        KillPoint.Reach("server.commit.after-blob-check");
        var now = clock.GetUtcNow();
        var result = rollback
            ? await metadata.RollbackAsync(record.Key, version, token, now, ct)
            : await metadata.CommitAsync(record.Key, version, token, now, ct);
        KillPoint.Reach("server.commit.after-db-commit");
        return result.Status switch
        {
            CommitStatus.Head or CommitStatus.Side =>
                Results.Json(new CommitResponse(result.Version!, result.Status == CommitStatus.Side, result.Reason), ApiJson.Options, statusCode: 201),
            CommitStatus.Existing => Results.Json(new CommitResponse(result.Version!, result.Version!.Side, result.Reason), ApiJson.Options, statusCode: 200),
            CommitStatus.Forbidden => throw ApiException.Forbidden(result.Reason ?? "not the lock holder"),
            CommitStatus.NotFound => throw ApiException.NotFound($"no parcel named '{name}'"),
            CommitStatus.Locked => throw new ApiException(409, "locked", result.Reason ?? "another site holds the lock") { Lock = result.Lock },
            _ => throw ApiException.Conflict(result.Reason ?? "conflict"),
        };
    }

    private static async Task RequireCompleteAsync(CommitChecker checker, long userId, VersionRecord version, CancellationToken ct)
    {
        var missing = await checker.FindMissingAsync(userId, version, touch: true, ct);
        if (missing.Count > 0)
            throw new ApiException(409, "conflict", $"the version references {missing.Count} blobs the server does not hold") { Missing = missing.Select(t => t.ToString()).ToList() };
    }

    /// <summary>The caller's parcel of this name (404 otherwise); refreshes the lock's lastContact if a lock token is sent.
    /// A hoard-only token gets only the parcels with an open hoard request for its site (403 otherwise).</summary>
    private static async Task<ParcelRecord> ResolveAsync(HttpContext http, string name, CancellationToken ct, bool touchLock = true)
    {
        var metadata = http.RequestServices.GetRequiredService<IMetadataStore>();
        var session = http.Session();
        var record = await metadata.GetParcelAsync(session.UserId, name, ct) ?? throw ApiException.NotFound($"no parcel named '{name}'");
        if (session.HoardOnly)
        {
            // what a site's hoard-only token may read: the parcels requested for that site, while the request is open
            if (!await metadata.HasOpenHoardRequestAsync(session.UserId, session.SiteId, record.Key, ct))
                throw Sessions.HoardOnly($"no open hoard request of this site names parcel '{name}'");
            return record;
        }
        if (touchLock && LockToken(http) is { } token)
            await metadata.TouchLockAsync(record.Key, token, http.RequestServices.GetRequiredService<TimeProvider>().GetUtcNow(), ct);
        return record;
    }

    private static string? LockToken(HttpContext http) =>
        http.Request.Headers.TryGetValue(LockTokenHeader, out var v) && v.ToString() is { Length: > 0 } s ? s : null;

    /// <summary>The server cannot check the MAC; it checks what it relies on: the tags it walks and the parcel id.</summary>
    private static void ValidateRecord(VersionRecord v, string parcelId, bool requireCommitId)
    {
        if (v.Format != VersionRecord.CurrentFormat) throw ApiException.BadRequest($"version record format {v.Format} is not supported");
        if (v.ParcelId != parcelId) throw ApiException.BadRequest("the version belongs to another parcel");
        if (requireCommitId && v.CommitId.Length == 0) throw ApiException.BadRequest("commitId is required");
        if (v.CommitId.Length > 200) throw ApiException.BadRequest("commitId is too long");
        if (v.Mac.Length == 0) throw ApiException.BadRequest("the version record is not signed");
        Framing.ParseTag(v.DescriptorTag, "descriptorTag");
        Framing.ParseTag(v.DiskRoot, "diskRoot");
        if (v.MemoryRoot.Length > 0) Framing.ParseTag(v.MemoryRoot, "memoryRoot");
        if (v.HasWorkingSet) Framing.ParseTag(v.WorkingSetTag!, "workingSetTag");
        if (v.ChunkSize <= 0 || v.DiskSize < 0 || v.MemoryChunks < 0 || v.MemoryBytes < 0) throw ApiException.BadRequest("version sizes are out of range");
    }

    /// <summary>Same rule as a store directory's parcel names: letters, digits, '-', '_', '.', not starting with '.'; at most 64.</summary>
    private static void ValidName(string name)
    {
        if (name.Length is 0 or > 64 || name[0] == '.' || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            throw ApiException.BadRequest($"'{name}' is not a valid parcel name (letters, digits, '-', '_', '.'; at most 64)");
    }
}
