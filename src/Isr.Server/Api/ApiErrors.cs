using System.Text.Json;
using System.Text.Json.Serialization;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Diagnostics;

namespace Isr.Server.Api;

/// <summary>A failure with its PROTOCOL.md status and code; <see cref="Missing"/> and <see cref="Lock"/> go into the body when set.</summary>
public sealed class ApiException(int status, string code, string message) : Exception(message)
{
    public int Status { get; } = status;
    public string Code { get; } = code;
    public IReadOnlyList<string>? Missing { get; init; }
    public LockInfo? Lock { get; init; }

    public static ApiException BadRequest(string message) => new(400, "bad_request", message);
    public static ApiException Unauthorized(string message = "no valid session: log in") => new(401, "unauthorized", message);
    public static ApiException Forbidden(string message) => new(403, "forbidden", message);
    public static ApiException NotFound(string message) => new(404, "not_found", message);
    public static ApiException Conflict(string message) => new(409, "conflict", message);
}

/// <summary>The error body: <c>{error, code}</c>, plus <c>missing</c> or <c>lock</c> for some conflicts.</summary>
public sealed record ErrorBody(string Error, string Code,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<string>? Missing = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] LockInfo? Lock = null);

internal static class ApiErrorHandling
{
    /// <summary>Turns every exception into a JSON error body; never a stack trace. Logs no request data.</summary>
    public static async Task Middleware(HttpContext ctx, RequestDelegate next)
    {
        try
        {
            await next(ctx);
        }
        catch (Exception e) when (!ctx.RequestAborted.IsCancellationRequested || e is not OperationCanceledException)
        {
            var (status, body) = Classify(e, ctx);
            if (ctx.Response.HasStarted)
            {
                // mid-stream (a download): the frames cannot be taken back; cut the connection so the client sees a failure
                ctx.RequestServices.GetRequiredService<ILogger<ApiException>>().LogWarning("aborting a streamed response: {Code}", body.Code);
                ctx.Abort();
                return;
            }
            ctx.Response.Clear();
            ctx.Response.StatusCode = status;
            await ctx.Response.WriteAsJsonAsync(body, ApiJson.Options, ctx.RequestAborted);
        }
    }

    private static (int, ErrorBody) Classify(Exception e, HttpContext ctx)
    {
        switch (e)
        {
            case ApiException api:
                return (api.Status, new ErrorBody(api.Message, api.Code, api.Missing, api.Lock));
            case BadHttpRequestException bad:
                return bad.StatusCode == 413
                    ? (413, new ErrorBody("the request body is too large", "too_large"))
                    : (400, new ErrorBody("malformed request: " + bad.Message, "bad_request"));
            case JsonException:
                return (400, new ErrorBody("malformed JSON body", "bad_request"));
            case IOException io when IsDiskFull(io):
            case Microsoft.Data.Sqlite.SqliteException { SqliteErrorCode: 13 }: // SQLITE_FULL: the metadata's disk is full
                ctx.RequestServices.GetRequiredService<ILogger<ApiException>>().LogError("the data directory's disk is full");
                return (507, new ErrorBody("the server's disk is full", "insufficient_storage"));
            default:
                ctx.RequestServices.GetRequiredService<ILogger<ApiException>>()
                    .LogError("internal error in {Method} {Path}: {Type}: {Message}", ctx.Request.Method, ctx.Request.Path, e.GetType().Name, e.Message);
                return (500, new ErrorBody("internal server error", "internal_error"));
        }
    }

    // ENOSPC (Linux 28), EDQUOT (122), ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows
    private static bool IsDiskFull(IOException e) => (e.HResult & 0xFFFF) is 28 or 122 or 0x70 or 0x27;

    /// <summary>Bodiless 4xx/5xx from routing (unknown path, wrong method) get a JSON body too.</summary>
    public static async Task StatusCodePage(StatusCodeContext context)
    {
        var response = context.HttpContext.Response;
        var body = response.StatusCode switch
        {
            404 => new ErrorBody("no such endpoint", "not_found"),
            405 => new ErrorBody("method not allowed", "method_not_allowed"),
            401 => new ErrorBody("no valid session: log in", "unauthorized"),
            413 => new ErrorBody("the request body is too large", "too_large"),
            >= 500 => new ErrorBody("internal server error", "internal_error"),
            _ => new ErrorBody("bad request", "bad_request"),
        };
        await response.WriteAsJsonAsync(body, ApiJson.Options);
    }
}
