using System.Globalization;
using System.Text.Json;

namespace Isr.Vmm;

/// <summary>Where QEMU's VNC server listens, as QMP <c>query-vnc</c> reports it.</summary>
/// <param name="Family">"ipv4", "ipv6" or "unix".</param>
/// <param name="Host">The listening address ("127.0.0.1"); empty for a unix socket.</param>
/// <param name="Service">The TCP port ("5901"), or the socket path for a unix socket.</param>
public sealed record VncEndpoint(string Family, string Host, string Service)
{
    public bool IsUnixSocket => Family == "unix";

    /// <summary>The unix socket path; null for TCP.</summary>
    public string? SocketPath => IsUnixSocket ? Service : null;

    /// <summary>The TCP port; null for a unix socket.</summary>
    public int? Port => !IsUnixSocket && int.TryParse(Service, NumberStyles.None, CultureInfo.InvariantCulture, out var port) ? port : null;

    /// <summary>"127.0.0.1:5901" (host and TCP port: VNC viewers take it as "127.0.0.1::5901"), or "unix:/path".</summary>
    public override string ToString() =>
        IsUnixSocket ? "unix:" + Service : Family == "ipv6" ? $"[{Host}]:{Service}" : $"{Host}:{Service}";

    /// <summary>Reads a <c>query-vnc</c> reply; null when VNC is not enabled.</summary>
    public static VncEndpoint? FromQueryVnc(JsonElement reply)
    {
        if (reply.ValueKind != JsonValueKind.Object
            || !reply.TryGetProperty("enabled", out var enabled) || enabled.ValueKind != JsonValueKind.True)
            return null;
        static string Text(JsonElement o, string name) =>
            o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : "";
        return new VncEndpoint(Text(reply, "family"), Text(reply, "host"), Text(reply, "service"));
    }
}
