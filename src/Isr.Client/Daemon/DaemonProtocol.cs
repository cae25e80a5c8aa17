using System.Text.Json;
using System.Text.Json.Serialization;
using Isr.Client.Session;
using Isr.Vmm;

namespace Isr.Client.Daemon;

/// <summary>
/// The CLI ↔ site daemon protocol: one JSON request line per connection on ISR_HOME/run/daemon.sock (mode 0600, in a
/// 0700 directory), answered by zero or more progress lines and one final line.
/// <code>
/// CLI → {"op":"resume","parcel":"p","store":"/s","password":"…","resume":{…}}     (password: only if the daemon holds no keys)
/// CLI → {"op":"keep-keys","keyEncryptionKey":"…","keepSeconds":43200}             (isr login)
/// CLI → {"op":"forget-keys"}                                                     (isr logout, isr login --keep-keys 0)
/// CLI → {"op":"checkin-now","parcel":"p","keepLock":false}                     (isr checkin, while a daemon runs)
/// CLI ← {"kind":"progress","message":"loading the memory image"}   or   {"kind":"progress","bytes":1048576}
/// CLI ← {"kind":"result","result":{…}}        or   {"kind":"error","error":"…","errorKind":"WrongPassword"}
/// </code>
/// </summary>
public sealed record DaemonRequest
{
    public required string Op { get; init; }
    public string? Parcel { get; init; }
    public string? Store { get; init; }
    public string? Password { get; init; }
    public ResumeOptions? Resume { get; init; }
    /// <summary>keep-keys: the key-encryption key `isr login` derived, and for how long the daemon may hold the keys.</summary>
    public byte[]? KeyEncryptionKey { get; init; }
    public double? KeepSeconds { get; init; }
    /// <summary>checkin-now: commit but keep the lock.</summary>
    public bool KeepLock { get; init; }
    /// <summary>checkin-now: when the CLI process started, and when it had parsed its command (the trace's origin and first step).</summary>
    public DateTimeOffset? ProcessStarted { get; init; }
    public DateTimeOffset? CommandStarted { get; init; }
}

public sealed record DaemonReply
{
    public required string Kind { get; init; }
    public string? Message { get; init; }
    /// <summary>A progress line of a transfer: bytes sent so far.</summary>
    public long? Bytes { get; init; }
    public JsonElement? Result { get; init; }
    public string? Error { get; init; }
    public string? ErrorKind { get; init; }
}

/// <summary>The daemon's answer to a ping: its process, the parcels it runs, and whether it holds keys since a login.</summary>
public sealed record DaemonPing(int Pid, string[] Sessions, bool HoldsKeys);

/// <summary>The daemon's answer to keep-keys (holding, until when) and forget-keys (not holding, no time).</summary>
public sealed record HeldKeysReply(bool Holding, DateTimeOffset? Until = null);

public static class DaemonJson
{
    /// <summary>
    /// Reads and writes a resume request and its reply once, on a pool thread, so that the first resume after a daemon
    /// starts (`isr login` starts it) does not set up the serializer's metadata and converters while the user waits: even
    /// from generated code, the CLI's first request cost 33–49 ms to write (measured in the published CLI). The CLI does
    /// not do this: beside its own start-up on two cores it moved that time rather than saving it (measured).
    /// </summary>
    public static Task WarmUpAsync() => Task.Run(() =>
    {
        var json = DaemonJsonContext.Default;
        var request = new DaemonRequest
        {
            Op = "resume", Parcel = "warm-up", Password = "",
            Resume = new ResumeOptions { DisplayEnvironment = new Dictionary<string, string> { ["DISPLAY"] = ":0" }, Lookaside = ["warm-up"] },
        };
        JsonSerializer.Deserialize(JsonSerializer.SerializeToUtf8Bytes(request, json.DaemonRequest), json.DaemonRequest);
        var stats = new SessionStats("warm-up", "running", 1, 0, false, 0, 0, 0, 0, 0, 0, 0, null, [], null) { Trace = [new TraceStep("warm-up", 0)] };
        var reply = new DaemonReply { Kind = "result", Result = JsonSerializer.SerializeToElement(stats, json.SessionStats) };
        JsonSerializer.Deserialize(JsonSerializer.SerializeToUtf8Bytes(reply, json.DaemonReply), json.DaemonReply)!.Result!.Value.Deserialize(json.SessionStats);
    });
}

/// <summary>Everything that crosses the daemon's socket (requests, replies, and each operation's result), and the
/// daemon's background-checkin.json. Public: the CLI reads the results with it.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(DaemonRequest))]
[JsonSerializable(typeof(DaemonReply))]
[JsonSerializable(typeof(DaemonPing))]
[JsonSerializable(typeof(HeldKeysReply))]
[JsonSerializable(typeof(SessionStats))]
[JsonSerializable(typeof(SuspendResult))]
[JsonSerializable(typeof(CheckinResult))]
[JsonSerializable(typeof(CheckinProgress))]
[JsonSerializable(typeof(CheckinProgress[]))]
[JsonSerializable(typeof(BackgroundHoard[]))]
[JsonSerializable(typeof(bool))]
[JsonSerializable(typeof(SiteDaemon.BackgroundRequest))]
public sealed partial class DaemonJsonContext : JsonSerializerContext;

/// <summary>An error reported by the daemon, with the kind of the exception that caused it (maps to an exit code).</summary>
public sealed class DaemonException(string message, string kind) : Exception(message)
{
    public string Kind { get; } = kind;
}
