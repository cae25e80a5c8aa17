using System.Diagnostics;
using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Site;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// A site (its own ISR_HOME) and a store in a temporary directory, driven through the real `isr` CLI as a user would.
/// Disposal kills, by PID, the daemon and any QEMU this site started, then deletes the directory.
/// </summary>
public sealed class TestSite : IAsyncDisposable
{
    public const string Password = "correct horse battery staple";
    public string Root { get; } = Directory.CreateTempSubdirectory("isr-e2e-").FullName;
    public string Name { get; }

    private readonly string _home;

    /// <param name="home">ISR_HOME under the test's directory (deeper paths test the socket path limit).</param>
    public TestSite(string name = "site-a", string home = "site") => (Name, _home) = (name, home);
    public string Home => Path.Combine(Root, _home);
    public string Store => Path.Combine(Root, "store");
    private readonly HashSet<int> _qemuPids = new();

    public async Task<(int Code, string Stdout, string Stderr)> IsrAsync(params string[] args) => await IsrWithPasswordAsync(Password, args);

    /// <summary>Runs isr with ISR_KILL_AT set: it SIGKILLs itself at that step (see KillPoint).</summary>
    public Task<(int Code, string Stdout, string Stderr)> IsrKilledAtAsync(string step, params string[] args) =>
        IsrWithPasswordAsync(Password, args, new() { ["ISR_KILL_AT"] = step });

    public async Task<(int Code, string Stdout, string Stderr)> IsrWithPasswordAsync(string password, params string[] args) =>
        await IsrWithPasswordAsync(password, args, null);

    private async Task<(int Code, string Stdout, string Stderr)> IsrWithPasswordAsync(string password, string[] args, Dictionary<string, string>? extra) =>
        await TestEnvironment.RunIsrAsync(args, Environment(password, extra), TimeSpan.FromMinutes(3));

    private Dictionary<string, string> Environment(string password, Dictionary<string, string>? extra)
    {
        var env = new Dictionary<string, string> { ["ISR_HOME"] = Home, ["ISR_PASSWORD"] = password, ["DISPLAY"] = "", ["ISR_SITE_NAME"] = Name };
        foreach (var (k, v) in extra ?? []) env[k] = v;
        return env;
    }

    /// <summary>Starts isr without waiting for it, so that a test can act while it runs (read its stderr as it comes).</summary>
    public RunningProgram IsrStart(string[] args, Dictionary<string, string>? extra = null)
    {
        var (program, all) = TestEnvironment.IsrCommand(args);
        return RunningProgram.Start(program, all, Environment(Password, extra));
    }

    /// <summary>Runs isr and requires exit code 0; returns stdout.</summary>
    public async Task<string> IsrOkAsync(params string[] args)
    {
        var (code, stdout, stderr) = await IsrAsync(args);
        Assert.True(code == 0, $"isr {string.Join(' ', args)} exited {code}\nstdout: {stdout}\nstderr: {stderr}\ndaemon log: {DaemonLog()}");
        return stdout;
    }

    public Task<JsonElement> IsrJsonAsync(params string[] args) => IsrJsonAsync(null, args);

    /// <summary>Like <see cref="IsrJsonAsync(string[])"/> with ISR_KILL_AT set: a daemon this starts inherits the kill point.</summary>
    public Task<JsonElement> IsrJsonKillingAtAsync(string step, params string[] args) => IsrJsonAsync(step, args);

    /// <summary>Power loss at the site: SIGKILL every QEMU this site started (the daemon is already gone).</summary>
    public void KillQemus()
    {
        foreach (var pid in _qemuPids) Kill(pid);
        _qemuPids.Clear();
    }

    private async Task<JsonElement> IsrJsonAsync(string? killAt, string[] args) => (await IsrJsonAndStderrAsync(killAt, args)).Json;

    /// <summary>Like <see cref="IsrJsonAsync(string[])"/>, also returning what the command wrote on stderr (its progress lines).</summary>
    public Task<(JsonElement Json, string Stderr)> IsrJsonAndStderrAsync(params string[] args) => IsrJsonAndStderrAsync(null, args);

    private async Task<(JsonElement Json, string Stderr)> IsrJsonAndStderrAsync(string? killAt, string[] args)
    {
        var (code, stdout, stderr) = await IsrWithPasswordAsync(Password, [.. args, "--json"], killAt is null ? null : new() { ["ISR_KILL_AT"] = killAt });
        Assert.True(code == 0, $"isr {string.Join(' ', args)} exited {code}\nstdout: {stdout}\nstderr: {stderr}\ndaemon log: {DaemonLog()}");
        var json = JsonDocument.Parse(stdout).RootElement.Clone();
        TrackQemu(json);
        return (json, stderr);
    }

    /// <summary>Remembers the QEMU a resume reported, to kill it by PID at disposal.</summary>
    public void TrackQemu(JsonElement json)
    {
        if (json.ValueKind == JsonValueKind.Object && json.TryGetProperty("qemuPid", out var pid) && pid.ValueKind == JsonValueKind.Number) _qemuPids.Add(pid.GetInt32());
    }

    /// <summary>The PID of this site's daemon, or null when none answers (starts none).</summary>
    public async Task<int?> DaemonPidAsync() =>
        (await DaemonClient.SendAsync(new SiteDirectory(Home), new DaemonRequest { Op = "ping" }, null, CancellationToken.None,
            startIfNeeded: false, recover: false))?.GetProperty("pid").GetInt32();

    /// <summary>Waits (bounded) until this site's daemon answers; returns its PID.</summary>
    public async Task<int> WaitForDaemonAsync()
    {
        for (int attempt = 0; attempt < 200; attempt++)
        {
            if (await DaemonPidAsync() is int pid) return pid;
            await Task.Delay(100);
        }
        throw new TimeoutException($"no site daemon answered within 20 s\n{DaemonLog()}");
    }

    /// <summary>SIGKILL of this site's daemon (by the PID it reports), as a crash would end it; its QEMUs live on.</summary>
    public async Task KillDaemonAsync()
    {
        using var daemon = Process.GetProcessById(await DaemonPidAsync() ?? throw new InvalidOperationException("no site daemon runs"));
        daemon.Kill();
        Assert.True(daemon.WaitForExit(10_000), "the site daemon did not die");
    }

    /// <summary>The process has exited (gone, or a zombie nobody reaped yet).</summary>
    public static bool ProcessGone(int pid)
    {
        var stat = $"/proc/{pid}/stat";
        if (!File.Exists(stat)) return true;
        try { var text = File.ReadAllText(stat); return text[(text.LastIndexOf(')') + 2)] is 'Z' or 'X'; }
        catch (IOException) { return true; }
    }

    /// <summary>`isr login` to the test server, pinning its certificate (and starting the daemon that keeps the keys,
    /// unless <paramref name="extra"/> says --keep-keys 0).</summary>
    public Task<string> LoginAsync(TestServer server, params string[] extra) =>
        IsrOkAsync(["login", "--server", server.Url, "--user", TestServer.User, "--server-fingerprint", server.Fingerprint, .. extra]);

    public string DaemonLog()
    {
        var log = Path.Combine(Home, "daemon.log");
        return File.Exists(log) ? File.ReadAllText(log) : "(no daemon log)";
    }

    public async ValueTask DisposeAsync()
    {
        if (Directory.Exists(Home))
        {
            try
            {
                var ping = await DaemonClient.SendAsync(new SiteDirectory(Home), new DaemonRequest { Op = "ping" }, null, CancellationToken.None,
                    startIfNeeded: false, recover: false);
                if (ping is { } p) Kill(p.GetProperty("pid").GetInt32());
            }
            catch (Exception e) when (e is IOException or DaemonException or System.Net.Sockets.SocketException) { }
        }
        foreach (var pid in _qemuPids) Kill(pid);
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }

    private static void Kill(int pid)
    {
        try { using var p = Process.GetProcessById(pid); p.Kill(entireProcessTree: true); p.WaitForExit(10_000); }
        catch (ArgumentException) { } // already gone
        catch (InvalidOperationException) { }
    }
}
