using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace Isr.Server.Tests;

/// <summary>The built <c>isr-server</c> as a child process: one-shot admin commands, or <c>run</c> until disposed
/// (killed by its PID).</summary>
public sealed class ServerProcess : IDisposable
{
    private readonly Process _process;
    public int Port { get; }
    public string Fingerprint { get; }

    private ServerProcess(Process process, int port, string fingerprint) => (_process, Port, Fingerprint) = (process, port, fingerprint);

    public static string Dll()
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "isr-server.dll");
        if (File.Exists(Path.Combine(AppContext.BaseDirectory, "isr-server.runtimeconfig.json"))) return beside;
        // fall back to the project's own output (same configuration as this test assembly)
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Parent!.Name;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "src", "Isr.Server", "bin", configuration, "net10.0", "isr-server.dll");
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException("isr-server.dll was not built");
    }

    private static ProcessStartInfo StartInfo(string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(Dll());
        foreach (var a in args) info.ArgumentList.Add(a);
        return info;
    }

    public static Task<(int Code, string Out, string Err)> RunToEndAsync(params string[] args) =>
        RunToEndAsync(new Dictionary<string, string>(), args);

    public static async Task<(int Code, string Out, string Err)> RunToEndAsync(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        var info = StartInfo(args);
        foreach (var (name, value) in environment) info.Environment[name] = value;
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try { await process.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException) { process.Kill(entireProcessTree: true); throw; }
        return (process.ExitCode, await stdout, await stderr);
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary><c>isr-server run ARGS --urls https://127.0.0.1:PORT</c> on a free port, once it says it listens.</summary>
    public static async Task<ServerProcess> StartAsync(params string[] args)
    {
        int port = FreePort();
        var process = Process.Start(StartInfo([.. args, "--urls", $"https://127.0.0.1:{port}"]))!;
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        var server = new ServerProcess(process, port, "");
        try
        {
            string? fingerprint = null;
            using var startup = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            while (true)
            {
                var line = await process.StandardOutput.ReadLineAsync(startup.Token) ?? throw new Exception("isr-server exited before listening");
                if (line.StartsWith("fingerprint: ")) fingerprint = line["fingerprint: ".Length..].Trim();
                if (line.StartsWith("listening on ")) break;
            }
            return new ServerProcess(process, port, fingerprint ?? throw new Exception("isr-server printed no fingerprint"));
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    /// <summary>An HTTP/2 client that trusts exactly the certificate with the printed fingerprint.</summary>
    public HttpClient Client()
    {
        var handler = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
                cert is not null && Convert.ToHexStringLower(SHA256.HashData(cert.RawData)) == Fingerprint,
        };
        return new HttpClient(handler)
        {
            BaseAddress = new Uri($"https://127.0.0.1:{Port}"),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(TimeSpan.FromSeconds(30));
            }
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
