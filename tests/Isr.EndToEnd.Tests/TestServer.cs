using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// The real `isr-server`, started as a process the way an administrator would: init (self-signed certificate),
/// user add, run on a free loopback port. Killed by PID on disposal.
/// </summary>
public sealed partial class TestServer : IAsyncDisposable
{
    /// <summary>Engines other than the embedded ones: <c>--metadata</c>, <c>--chunks</c>, and the environment
    /// (S3 credentials) the server runs with.</summary>
    public sealed record Engines(string Metadata, string Chunks, IReadOnlyDictionary<string, string> Environment);

    public const string User = "alice";
    public string DataDirectory { get; }
    public string Url { get; }
    public string Fingerprint { get; }
    private readonly Engines? _engines;
    private Process _process;

    private TestServer(string data, string url, string fingerprint, Engines? engines, Process process) =>
        (DataDirectory, Url, Fingerprint, _engines, _process) = (data, url, fingerprint, engines, process);

    /// <summary>Kills the server process (as a crash or a lost network would look to sites).</summary>
    public async Task StopAsync()
    {
        try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>Starts the server again on the same address and data.</summary>
    public async Task RestartAsync()
    {
        await StopAsync();
        _process.Dispose();
        _process = await RunAsync(DataDirectory, Url, _engines);
    }

    /// <summary>Another instance on another port over the same data directory (certificate) and engines, as a second
    /// machine behind a balancer would be.</summary>
    public async Task<TestServer> StartAnotherAsync()
    {
        var url = FreeUrl();
        return new TestServer(DataDirectory, url, Fingerprint, _engines, await RunAsync(DataDirectory, url, _engines));
    }

    internal static string ServerDll
    {
        get
        {
            var configuration = AppContext.BaseDirectory.Contains("/Release/") ? "Release" : "Debug";
            var path = Path.Combine(TestEnvironment.RepoRoot, "src", "Isr.Server", "bin", configuration, "net10.0", "isr-server.dll");
            return File.Exists(path) ? path : throw new InvalidOperationException($"isr-server is not built ({path}): build the solution first");
        }
    }

    [GeneratedRegex("fingerprint: ([0-9a-f]{64})")]
    private static partial Regex FingerprintLine();

    public static async Task<TestServer> StartAsync(string root, string password, Engines? engines = null)
    {
        var data = Path.Combine(root, "server");
        string[] metadata = engines is null ? [] : ["--metadata", engines.Metadata];
        var init = await Admin(["init", "--data", data, .. metadata]);
        var fingerprint = FingerprintLine().Match(init).Groups[1].Value;
        var passwordFile = Path.Combine(root, "user-password");
        await File.WriteAllTextAsync(passwordFile, password);
        await Admin(["user", "add", User, "--password-file", passwordFile, "--data", data, .. metadata]);
        File.Delete(passwordFile);

        var url = FreeUrl();
        return new TestServer(data, url, fingerprint, engines, await RunAsync(data, url, engines));
    }

    private static string FreeUrl()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return $"https://127.0.0.1:{port}";
    }

    private static async Task<Process> RunAsync(string data, string url, Engines? engines)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        string[] args = [ServerDll, "run", "--data", data, "--urls", url, .. engines is null ? [] : new[] { "--metadata", engines.Metadata, "--chunks", engines.Chunks }];
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (name, value) in engines?.Environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        var process = Process.Start(start)!;
        var ready = new TaskCompletionSource();
        process.OutputDataReceived += (_, e) => { if (e.Data?.StartsWith("listening on", StringComparison.Ordinal) == true) ready.TrySetResult(); };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (await Task.WhenAny(ready.Task, process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(60))) != ready.Task)
        {
            try { process.Kill(true); } catch (InvalidOperationException) { }
            throw new InvalidOperationException("isr-server did not start listening within 60 s");
        }
        return process;
    }

    public static async Task<string> Admin(params string[] args)
    {
        var (code, stdout, stderr) = await TestEnvironment.RunAsync("dotnet", [ServerDll, .. args], null, TimeSpan.FromMinutes(2));
        Assert.True(code == 0, $"isr-server {string.Join(' ', args)} exited {code}: {stderr}");
        return stdout;
    }

    public async ValueTask DisposeAsync()
    {
        try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        _process.Dispose();
    }
}
