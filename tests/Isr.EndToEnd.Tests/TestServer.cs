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
    public const string User = "alice";
    public string DataDirectory { get; }
    public string Url { get; }
    public string Fingerprint { get; }
    private Process _process;

    private TestServer(string data, string url, string fingerprint, Process process) =>
        (DataDirectory, Url, Fingerprint, _process) = (data, url, fingerprint, process);

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
        _process = await RunAsync(DataDirectory, Url);
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

    public static async Task<TestServer> StartAsync(string root, string password)
    {
        var data = Path.Combine(root, "server");
        var init = await Admin("init", "--data", data);
        var fingerprint = FingerprintLine().Match(init).Groups[1].Value;
        var passwordFile = Path.Combine(root, "user-password");
        await File.WriteAllTextAsync(passwordFile, password);
        await Admin("user", "add", User, "--password-file", passwordFile, "--data", data);
        File.Delete(passwordFile);

        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var url = $"https://127.0.0.1:{port}";
        return new TestServer(data, url, fingerprint, await RunAsync(data, url));
    }

    private static async Task<Process> RunAsync(string data, string url)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { ServerDll, "run", "--data", data, "--urls", url }) start.ArgumentList.Add(a);
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
