using Isr.Storage.Metadata;

namespace Isr.Server.Api;

/// <summary>PROTOCOL.md "Hoarding at another site": the user's sites and their hoard-only tokens, hoard requests, and
/// the site's progress reports. Hoarding is keyless, so a site's daemon does it with a token that grants ciphertext only.</summary>
internal static class HoardEndpoints
{
    public static void Map(RouteGroupBuilder api)
    {
        api.MapGet("/sites", async (HttpContext http, IMetadataStore metadata, CancellationToken ct) =>
            Results.Json(await metadata.ListSitesAsync(http.Session().UserId, ct), ApiJson.Options));

        api.MapDelete("/sites/{site}", async (HttpContext http, string site, IMetadataStore metadata, TimeProvider clock, CancellationToken ct) =>
        {
            var session = http.Session();
            var target = await ResolveSiteAsync(metadata, session.UserId, site, ct);
            await metadata.RevokeSiteAsync(session.UserId, target.SiteId, clock.GetUtcNow(), ct);
            return Results.NoContent();
        });

        api.MapPost("/hoard/requests", async (HttpContext http, IMetadataStore metadata, TimeProvider clock, CancellationToken ct) =>
        {
            var request = await ApiJson.ReadAsync<HoardRequestBody>(http.Request, ct);
            var session = http.Session();
            var parcel = await metadata.GetParcelAsync(session.UserId, request.Parcel, ct) ?? throw ApiException.NotFound($"no parcel named '{request.Parcel}'");
            if (request.Version is long n && !(await metadata.ListVersionsAsync(parcel.Key, ct)).Any(v => v.Number == n))
                throw ApiException.NotFound($"parcel '{request.Parcel}' has no version {n}");
            var site = await ResolveSiteAsync(metadata, session.UserId, request.Site, ct);
            var (made, created) = await metadata.AddHoardRequestAsync(session.UserId, parcel.Key, site, request.Version, clock.GetUtcNow(), ct);
            return Results.Json(new HoardRequestResponse(made), ApiJson.Options, statusCode: created ? 201 : 200);
        });

        // A session sees all the user's requests; a site's hoard-only token sees the site's own.
        api.MapGet("/hoard/requests", async (HttpContext http, IMetadataStore metadata, CancellationToken ct) =>
        {
            var session = http.Session();
            return Results.Json(await metadata.ListHoardRequestsAsync(session.UserId, session.HoardOnly ? session.SiteId : null, ct), ApiJson.Options);
        }).AllowHoardToken();

        api.MapPut("/hoard/requests/{id:long}", async (HttpContext http, long id, IMetadataStore metadata, TimeProvider clock, CancellationToken ct) =>
        {
            var update = (await ApiJson.ReadAsync<HoardReport>(http.Request, ct)).ToUpdate();
            if (!HoardStates.Reportable.Contains(update.State))
                throw ApiException.BadRequest($"state must be one of {string.Join(", ", HoardStates.Reportable)}");
            if (update.BlobsDone < 0 || update.BlobsTotal < 0 || update.BytesDone < 0) throw ApiException.BadRequest("progress counters are out of range");
            if (update.Error is { Length: > 2000 }) throw ApiException.BadRequest("error is too long");
            var session = http.Session();
            var updated = await metadata.UpdateHoardRequestAsync(session.UserId, session.SiteId, id, update, clock.GetUtcNow(), ct)
                ?? throw ApiException.NotFound($"no open hoard request {id} for this site");
            return Results.Json(new HoardRequestResponse(updated), ApiJson.Options);
        }).AllowHoardToken();
    }

    /// <summary>The user's site with this id, else the one with this name; several of that name must be told apart by id.</summary>
    private static async Task<SiteRecord> ResolveSiteAsync(IMetadataStore metadata, long userId, string site, CancellationToken ct)
    {
        var sites = await metadata.ListSitesAsync(userId, ct);
        if (sites.FirstOrDefault(s => s.SiteId == site) is { } byId) return byId;
        var named = sites.Where(s => s.SiteName == site).ToList();
        return named.Count switch
        {
            1 => named[0],
            0 => throw ApiException.NotFound($"no site '{site}' holds a hoard token of yours (log in there first); sites: " +
                (sites.Count == 0 ? "none" : string.Join(", ", sites.Select(s => s.SiteName)))),
            _ => throw ApiException.Conflict($"{named.Count} sites are named '{site}': name one by its id ({string.Join(", ", named.Select(s => s.SiteId))})"),
        };
    }
}
