using System.Diagnostics;
using Isr.Storage.S3;

namespace Isr.Storage.Tests.Services;

/// <summary>
/// A real one-node Ceph cluster with radosgw, started by the project's own <c>scripts/services/ceph.sh</c> once per
/// test run (collection fixture) and stopped after. Without Ceph installed, the tests that need it are skipped with a
/// loud message, or fail when <c>ISR_REQUIRE_SERVICES=1</c> (CI).
/// </summary>
public sealed class CephCluster : IAsyncLifetime
{
    private string _dir = Directory.CreateTempSubdirectory("isr-ceph-").FullName;
    private Dictionary<string, string> _env = [];
    private bool _started;

    /// <summary>Why the cluster is not there (tests skip with this), or null.</summary>
    public string? Unavailable { get; private set; }

    public Uri Endpoint => new(_env["ISR_S3_ENDPOINT"]);
    public string AccessKey => _env["AWS_ACCESS_KEY_ID"];
    public string SecretKey => _env["AWS_SECRET_ACCESS_KEY"];

    /// <summary>A bucket made at startup; tests share it, each under a prefix of its own.</summary>
    public const string Bucket = "isr-tests";

    public static bool Required => Environment.GetEnvironmentVariable("ISR_REQUIRE_SERVICES") == "1";

    /// <summary>Skips the calling test (loudly) if the cluster is not there.</summary>
    public void SkipIfUnavailable() => Skip.If(Unavailable is not null, Unavailable);

    public S3ChunkStoreOptions Options(string bucket, string prefix) =>
        new() { Bucket = bucket, Endpoint = Endpoint, AccessKey = AccessKey, SecretKey = SecretKey, Prefix = prefix };

    public async Task InitializeAsync()
    {
        var script = Path.Combine(RepoRoot(), "scripts", "services", "ceph.sh");
        var missing = new[] { "ceph-mon", "ceph-osd", "radosgw" }.Where(p => !OnPath(p)).ToList();
        if (missing.Count > 0)
        {
            var what = $"CEPH NOT INSTALLED ({string.Join(", ", missing)} not on PATH): install it with scripts/install-deps.sh";
            if (Required) throw new InvalidOperationException($"{what}; ISR_REQUIRE_SERVICES=1 requires the tests against radosgw to run");
            Unavailable = $"{what}. The tests against radosgw are SKIPPED (ISR_REQUIRE_SERVICES=1 makes this a failure).";
            Console.Error.WriteLine($"*** {Unavailable}");
            return;
        }
        var (code, output) = await RunAsync(script, "start", _dir);
        if (code != 0)
        {
            // A one-node cluster's start can lose a race for a port with the tests' own connections; one more try on
            // fresh ports, saying so, before the tests that need it fail (the failed start stopped what it started).
            Console.Error.WriteLine($"*** ceph.sh start failed ({code}), trying once more: {output}");
            DeleteDirectory();
            _dir = Directory.CreateTempSubdirectory("isr-ceph-").FullName;
            (code, output) = await RunAsync(script, "start", _dir);
        }
        if (code != 0) throw new InvalidOperationException($"ceph.sh start failed ({code}): {output}");
        _started = true;
        _env = File.ReadAllLines(Path.Combine(_dir, "s3.env")).Select(l => l.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
        using var store = new S3ChunkStore(Options(Bucket, ""));
        await store.EnsureBucketAsync(default);
    }

    public async Task DisposeAsync()
    {
        if (_started) await RunAsync(Path.Combine(RepoRoot(), "scripts", "services", "ceph.sh"), "stop", _dir);
        DeleteDirectory();
    }

    private void DeleteDirectory()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static async Task<(int Code, string Output)> RunAsync(string script, string verb, string dir)
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { script, verb, dir }) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try { await process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException) { process.Kill(entireProcessTree: true); throw new TimeoutException($"ceph.sh {verb} took over 2 minutes"); }
        return (process.ExitCode, await stdout + await stderr);
    }

    private static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => d.Length > 0 && File.Exists(Path.Combine(d, program)));

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "scripts", "services", "ceph.sh"))) return dir.FullName;
        throw new InvalidOperationException("scripts/services/ceph.sh not found above the test assembly");
    }
}

[CollectionDefinition(Name)]
public sealed class CephCollection : ICollectionFixture<CephCluster>
{
    public const string Name = "ceph";
}
