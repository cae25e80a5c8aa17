using System.Text.Json;
using System.Text.Json.Serialization;
using Isr.Format;
using Isr.Storage.Metadata;

namespace Isr.Server.Api;

/// <summary>JSON of the API: camelCase; a missing required field or a null where none is allowed is a 400.</summary>
public static class ApiJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip,
    };

    /// <summary>Reads the body as <typeparamref name="T"/>; anything malformed is <see cref="ApiException"/> 400.</summary>
    public static async Task<T> ReadAsync<T>(HttpRequest request, CancellationToken ct)
    {
        try
        {
            return await JsonSerializer.DeserializeAsync<T>(request.Body, Options, ct)
                ?? throw ApiException.BadRequest("the body must be a JSON object");
        }
        catch (JsonException e)
        {
            throw ApiException.BadRequest($"malformed JSON body{(e.Path is { Length: > 0 } p ? $" at {p}" : "")}");
        }
        catch (NotSupportedException)
        {
            throw ApiException.BadRequest("malformed JSON body");
        }
    }
}

public sealed record PreloginRequest(string User);
public sealed record PreloginResponse(KdfParameters Kdf);
public sealed record LoginRequest(string User, byte[] AuthSecret, string? SiteId = null, string? SiteName = null);
public sealed record LoginResponse(string Token, string User, byte[] WrappedSecrets, KdfParameters Kdf,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? HoardToken);
/// <param name="RecoveryWrappedSecrets">When the secrets change (an account adopting a store's keys): them wrapped under a new recovery key.</param>
public sealed record ChangePasswordRequest(byte[] AuthSecret, byte[] NewAuthSecret, KdfParameters Kdf, byte[] WrappedSecrets, byte[]? RecoveryWrappedSecrets = null);
public sealed record RecoveryResponse(byte[] WrappedSecrets);
public sealed record ReadTokenResponse(string Token);

public sealed record ParcelInfoDto(string Name, string Id, int ChunkSize, long DiskSize, byte[] WrappedKey, DateTimeOffset Created)
{
    public static ParcelInfoDto From(ParcelRecord p) => new(p.Name, p.Id, p.ChunkSize, p.DiskSize, p.WrappedKey, p.Created);
}

public sealed record CreateParcelRequest(ParcelInfoDto Parcel, VersionRecord First);
public sealed record ParcelEntry(ParcelInfoDto Parcel, long Head, LockInfo? Lock);
public sealed record VersionResponse(VersionRecord Version);
public sealed record CommitRequest(VersionRecord Version, string? CommitId = null);
public sealed record CommitResponse(VersionRecord Version, bool Side,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Reason);
public sealed record LockRequest(string SiteId, string? SiteName = null);
public sealed record LockResponse(string Token, LockInfo Lock);
public sealed record CheckinReport(long Sent, long? Total = null);
public sealed record UploadResponse(int Stored, int Existing);
public sealed record HoardRequestBody(string Parcel, string Site, long? Version = null);
public sealed record HoardRequestResponse(HoardRequestRecord Request);
public sealed record HoardReport(string State, long BlobsDone, long BlobsTotal, long BytesDone, long? Version = null, string? Error = null)
{
    public HoardUpdate ToUpdate() => new(State, Version, BlobsDone, BlobsTotal, BytesDone, Error);
}
