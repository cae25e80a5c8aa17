using System.Diagnostics;
using System.Text;

namespace Isr.BlockDevice.Tests;

/// <summary>Runs QEMU's tools under a hard timeout. A missing tool fails the test loudly: CI must install it.</summary>
internal static class ExternalTool
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    public static string Require(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries).Append("/usr/bin"))
        {
            string candidate = Path.Combine(dir, tool);
            if (File.Exists(candidate)) return candidate;
        }
        throw new Xunit.Sdk.XunitException(
            $"REQUIRED TOOL MISSING: '{tool}' was not found on PATH. These tests drive QEMU's own NBD client; " +
            "install it (Debian/Ubuntu: apt-get install qemu-utils) — CI must provide it.");
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string Output => Stdout + Stderr;
    }

    public static async Task<Result> RunAsync(string tool, IEnumerable<string> args, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(Require(tool))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {tool}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? DefaultTimeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true); // this process only, by its PID
            await process.WaitForExitAsync();
            throw new TimeoutException($"{tool} {string.Join(' ', psi.ArgumentList)} did not finish within {timeout ?? DefaultTimeout}; killed pid {process.Id}.");
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs and asserts success (exit code 0 and none of QEMU's failure phrases).</summary>
    public static async Task<string> RunOkAsync(string tool, params string[] args)
    {
        var result = await RunAsync(tool, args);
        string output = result.Output;
        bool failed = result.ExitCode != 0 || output.Contains("fail", StringComparison.OrdinalIgnoreCase) ||
            output.Contains("error", StringComparison.OrdinalIgnoreCase);
        if (failed)
        {
            var message = new StringBuilder($"{tool} {string.Join(' ', args)} exited {result.ExitCode}:\n{output}");
            throw new Xunit.Sdk.XunitException(message.ToString());
        }
        return output;
    }
}
