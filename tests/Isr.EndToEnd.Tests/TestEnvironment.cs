using System.Diagnostics;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Isr.EndToEnd.Tests;

/// <summary>Where the repository, the test guest and the built CLI are. Missing prerequisites fail loudly, never skip.</summary>
public static class TestEnvironment
{
    public const string Canary = "ISR-CANARY-PLAINTEXT-5f2b9e";

    public static string RepoRoot { get; } = FindRepoRoot();

    public static string GuestDirectory => Environment.GetEnvironmentVariable("ISR_TEST_GUEST") ?? Path.Combine(RepoRoot, "guest", "out");

    public static string GuestImage(string name = "disk.img")
    {
        var path = Path.Combine(GuestDirectory, name);
        if (!File.Exists(path))
            throw new InvalidOperationException($"TEST GUEST MISSING: {path} does not exist. Build it with scripts/guest/build.sh (scripts/test.sh does).");
        return path;
    }

    /// <summary>The `isr` the tests run, and the arguments that come before its own: the native one named by
    /// ISR_TEST_CLI (scripts/test.sh publishes it: what users install), else the build next to the tests under dotnet.</summary>
    public static (string Program, string[] Prefix) Isr
    {
        get
        {
            if (Environment.GetEnvironmentVariable("ISR_TEST_CLI") is { Length: > 0 } native)
                return File.Exists(native) ? (native, []) : throw new InvalidOperationException($"ISR_TEST_CLI names {native}, which does not exist");
            var path = Path.Combine(AppContext.BaseDirectory, "isr.dll");
            return File.Exists(path) ? ("dotnet", [path]) : throw new InvalidOperationException($"isr.dll is not next to the tests ({path})");
        }
    }

    /// <summary>The program and full argument list that run isr with <paramref name="args"/>.</summary>
    public static (string Program, string[] Args) IsrCommand(IEnumerable<string> args)
    {
        var (program, prefix) = Isr;
        return (program, [.. prefix, .. args]);
    }

    /// <summary>Runs isr with these arguments under a hard timeout.</summary>
    public static Task<(int Code, string Stdout, string Stderr)> RunIsrAsync(IEnumerable<string> args, IDictionary<string, string>? env, TimeSpan timeout)
    {
        var (program, all) = IsrCommand(args);
        return RunAsync(program, all, env, timeout);
    }

    public static void RequireProgram(string name)
    {
        var found = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, name)));
        if (!found) throw new InvalidOperationException($"REQUIRED PROGRAM MISSING: {name} is not on PATH. Install it with scripts/install-deps.sh.");
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Isr.slnx"))) return dir.FullName;
        throw new InvalidOperationException("cannot find the repository root (Isr.slnx) above the test binaries");
    }

    /// <summary>Runs a program under a hard timeout (killed with its children when it expires).</summary>
    public static async Task<(int Code, string Stdout, string Stderr)> RunAsync(string program, IEnumerable<string> args,
        IDictionary<string, string>? env, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        if (env != null) foreach (var (k, v) in env) start.Environment[k] = v;
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', start.ArgumentList)} did not finish within {timeout}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
