using System.Diagnostics;
using System.Net.Sockets;

namespace Isr.Bench.Nbd;

/// <summary>External processes (qemu-img, qemu-nbd, cp) with hard timeouts; always killed by their own PID.</summary>
internal static class Tool
{
    public static string Require(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, tool);
            if (File.Exists(candidate)) return candidate;
        }
        throw new InvalidOperationException($"Required tool '{tool}' is not installed (Debian: apt-get install qemu-utils).");
    }

    public static async Task<string> RunAsync(string tool, IReadOnlyList<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(Require(tool)) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
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
            await process.WaitForExitAsync();
            throw new TimeoutException($"{tool} {string.Join(' ', args)} timed out; killed pid {process.Id}");
        }
        string output = await stdout + await stderr;
        if (process.ExitCode != 0) throw new InvalidOperationException($"{tool} {string.Join(' ', args)} exited {process.ExitCode}: {output}");
        return output;
    }

    /// <summary>A long-running process (qemu-nbd) stopped by PID on dispose.</summary>
    public sealed class Daemon : IAsyncDisposable
    {
        private readonly Process _process;

        private Daemon(Process process) => _process = process;

        public static async Task<Daemon> StartAsync(string tool, IReadOnlyList<string> args, string socketPath)
        {
            var psi = new ProcessStartInfo(Require(tool)) { RedirectStandardOutput = false, RedirectStandardError = false };
            foreach (var a in args) psi.ArgumentList.Add(a);
            var daemon = new Daemon(Process.Start(psi)!);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
            while (true)
            {
                if (daemon._process.HasExited) throw new InvalidOperationException($"{tool} exited with {daemon._process.ExitCode}");
                try
                {
                    using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    await probe.ConnectAsync(new UnixDomainSocketEndPoint(socketPath));
                    return daemon;
                }
                catch (SocketException) when (DateTime.UtcNow < deadline)
                {
                    await Task.Delay(50);
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await _process.WaitForExitAsync(cts.Token);
            }
            _process.Dispose();
        }
    }
}
