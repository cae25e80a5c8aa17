using System.Diagnostics;
using System.Net.Sockets;
using System.Reflection;
using System.Text;
using System.Text.Json;
using Isr.Client.Session;
using Isr.Client.Site;

namespace Isr.Client.Daemon;

/// <summary>The CLI's side of the daemon protocol; starts the daemon when none answers.</summary>
public static class DaemonClient
{
    /// <summary>Sends a request, reporting progress lines, and returns the result. Starts the daemon if needed, and
    /// (unless <paramref name="recover"/> is false) also when a killed daemon left work (<see cref="SiteRecovery.HasWork"/>).</summary>
    public static async Task<JsonElement?> SendAsync(SiteDirectory site, DaemonRequest request, Action<string>? onProgress, CancellationToken ct, bool startIfNeeded = true,
        bool recover = true, Action<long>? onBytes = null)
    {
        var socket = await ConnectAsync(site, startIfNeeded || recover && SiteRecovery.HasWork(site), ct);
        if (socket is null) return null;
        await using var stream = new NetworkStream(socket, ownsSocket: true);
        await stream.WriteAsync(JsonSerializer.SerializeToUtf8Bytes(request, DaemonJsonContext.Default.DaemonRequest), ct);
        await stream.WriteAsync("\n"u8.ToArray(), ct);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            var reply = JsonSerializer.Deserialize(line, DaemonJsonContext.Default.DaemonReply)!;
            switch (reply.Kind)
            {
                case "progress" when reply.Bytes is long sent: onBytes?.Invoke(sent); break;
                case "progress": onProgress?.Invoke(reply.Message ?? ""); break;
                case "result": return reply.Result;
                default: throw new DaemonException(reply.Error ?? "the site daemon failed", reply.ErrorKind ?? "");
            }
        }
        throw new DaemonException($"the site daemon closed the connection without an answer (see {site.DaemonLog})", "");
    }

    private static async Task<Socket?> ConnectAsync(SiteDirectory site, bool startIfNeeded, CancellationToken ct)
    {
        var socket = await TryConnectAsync(site.DaemonSocket, ct);
        if (socket != null || !startIfNeeded) return socket;
        StartDaemon(site);
        for (int attempt = 0; attempt < 200; attempt++)
        {
            await Task.Delay(50, ct);
            socket = await TryConnectAsync(site.DaemonSocket, ct);
            if (socket != null) return socket;
        }
        throw new DaemonException($"the site daemon did not start (see {site.DaemonLog})", "");
    }

    private static async Task<Socket?> TryConnectAsync(string path, CancellationToken ct)
    {
        if (!File.Exists(path)) return null;
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
            return socket;
        }
        catch (SocketException)
        {
            socket.Dispose();
            return null;
        }
    }

    /// <summary>Starts `isr daemon` for this state directory, detached from the terminal, logging to ISR_HOME/daemon.log.</summary>
    private static void StartDaemon(SiteDirectory site)
    {
        var host = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which program to start");
        // setsid: no controlling terminal, so closing the user's shell does not end the sessions; stdio goes to the log,
        // so callers that read the CLI's output through a pipe do not wait for the daemon.
        var start = new ProcessStartInfo("setsid") { UseShellExecute = false };
        foreach (var arg in (string[])["sh", "-c", "exec \"$0\" \"$@\" </dev/null >>\"$ISR_DAEMON_LOG\" 2>&1", host]) start.ArgumentList.Add(arg);
        // Run by the dotnet host (never a single-file or native program): the entry assembly sits in the app's directory.
        if (Path.GetFileNameWithoutExtension(host) == "dotnet")
            start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, Assembly.GetEntryAssembly()!.GetName().Name + ".dll"));
        start.ArgumentList.Add("daemon");
        start.Environment["ISR_HOME"] = site.Root;
        start.Environment["ISR_DAEMON_LOG"] = site.DaemonLog;
        using var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start the site daemon");
    }
}
