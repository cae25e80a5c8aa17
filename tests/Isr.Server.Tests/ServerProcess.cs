using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using Isr.Format;

namespace Isr.Server.Tests;

/// <summary>The built <c>isr-server</c> run as a separate process: one-shot admin commands, and <c>run</c> on a free
/// loopback port with a client pinning its certificate fingerprint. Dispose kills it by PID.</summary>
public sealed class ServerProcess : IDisposable
{
    public Process Process { get; }
    public int Port { get; }
    public string Fingerprint { get; }
    private readonly System.Text.StringBuilder _stderr = new();

    private ServerProcess(Process process, int port, string fingerprint) => (Process, Port, Fingerprint) = (process, port, fingerprint);

    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    public static string ServerDll()
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

    private static ProcessStartInfo Info(IEnumerable<string> args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(ServerDll());
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment.Remove("ISR_KILL_AT");
        return info;
    }

    public static Task<(int Code, string Out, string Err)> RunToEndAsync(params string[] args) =>
        RunToEndAsync(new Dictionary<string, string>(), args);

    public static async Task<(int Code, string Out, string Err)> RunToEndAsync(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        var info = Info(args);
        foreach (var (name, value) in environment) info.Environment[name] = value;
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try { await process.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException) { process.Kill(entireProcessTree: true); throw; }
        return (process.ExitCode, await stdout, await stderr);
    }

    /// <summary><c>init</c> of a data directory and <c>user add</c> of one user, the password given in a file next to it.</summary>
    public static async Task InitWithUserAsync(string data, string user, string password)
    {
        var init = await RunToEndAsync("init", "--data", data);
        Assert.True(init.Code == 0, init.Err);
        var passwordFile = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(data))!, $"{user}.pw");
        await File.WriteAllTextAsync(passwordFile, password + "\n");
        var add = await RunToEndAsync("user", "add", user, "--password-file", passwordFile, "--data", data);
        Assert.True(add.Code == 0, add.Err);
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary><c>isr-server run --data DATA EXTRA</c>; returns once it prints "listening on". <paramref name="killAt"/> sets ISR_KILL_AT.</summary>
    public static async Task<ServerProcess> StartAsync(string data, string? killAt = null, int? port = null, string[]? extra = null)
    {
        int chosen = port ?? FreePort();
        var info = Info(["run", "--data", data, .. extra ?? [], "--urls", $"https://127.0.0.1:{chosen}"]);
        if (killAt is not null) info.Environment["ISR_KILL_AT"] = killAt;
        var process = Process.Start(info)!;
        string? fingerprint = null;
        try
        {
            using var startup = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            while (true)
            {
                var line = await process.StandardOutput.ReadLineAsync(startup.Token) ?? throw new Exception("isr-server exited before listening");
                if (line.StartsWith("fingerprint: ")) fingerprint = line["fingerprint: ".Length..].Trim();
                if (line.StartsWith("listening on ")) break;
            }
        }
        catch { process.Kill(entireProcessTree: true); process.Dispose(); throw; }
        var server = new ServerProcess(process, chosen, fingerprint ?? throw new Exception("isr-server printed no fingerprint"));
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (server._stderr) server._stderr.AppendLine(e.Data); };
        process.BeginErrorReadLine();
        _ = process.StandardOutput.ReadToEndAsync(); // keep the pipe drained
        return server;
    }

    /// <summary><c>isr-server jukebox --dir DIR --listen URL EXTRA</c> on a free port; returns once it serves. Killed by PID by the caller.</summary>
    public static async Task<(Process Process, Uri Url)> StartJukeboxAsync(string dir, params string[] extra)
    {
        var url = new Uri($"http://127.0.0.1:{FreePort()}/");
        var process = Process.Start(Info(["jukebox", "--dir", dir, "--listen", url.AbsoluteUri.TrimEnd('/'), .. extra]))!;
        try
        {
            using var startup = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            while (!(await process.StandardOutput.ReadLineAsync(startup.Token) ?? throw new Exception("isr-server jukebox exited before serving"))
                .StartsWith("jukebox serving", StringComparison.Ordinal)) { }
        }
        catch { process.Kill(entireProcessTree: true); process.Dispose(); throw; }
        _ = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        return (process, url);
    }

    /// <summary>An HTTP/2 client that accepts only this server's certificate.</summary>
    public HttpClient Client()
    {
        var fingerprint = Fingerprint;
        var handler = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
                cert is not null && Convert.ToHexStringLower(SHA256.HashData(cert.RawData)) == fingerprint,
        };
        return new HttpClient(handler)
        {
            BaseAddress = new Uri($"https://127.0.0.1:{Port}"),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
    }

    /// <summary>Logs <paramref name="user"/> in with the KDF parameters the server hands out (prelogin).</summary>
    public async Task<ApiClient> LoginAsync(string user, string password, string siteId = "s1")
    {
        var http = Client();
        using var prelogin = await http.PostAsJsonAsync("/api/v1/prelogin", new { user });
        var k = (await prelogin.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("kdf");
        var kdf = new KdfParameters(k.GetProperty("salt").GetBytesFromBase64(), k.GetProperty("memoryKiB").GetInt32(),
            k.GetProperty("iterations").GetInt32(), k.GetProperty("parallelism").GetInt32());
        var client = new ApiClient(http, new TestUser(user, password, kdf, []));
        using var login = await client.LoginAsync(siteId);
        Assert.Equal(HttpStatusCode.OK, login.StatusCode);
        return client;
    }

    public async Task<bool> WaitForExitAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try { await Process.WaitForExitAsync(cts.Token); return true; }
        catch (OperationCanceledException) { return false; }
    }

    public void Dispose()
    {
        try
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                Process.WaitForExit(TimeSpan.FromSeconds(30));
            }
        }
        catch (InvalidOperationException) { }
        Process.Dispose();
    }
}
