using System.Diagnostics;
using System.Net.Sockets;

namespace Isr.Vmm.Tests;

/// <summary>
/// A private X server (Xvfb) for window tests, on the first free display number from 90 on. It runs under
/// coreutils' <c>timeout</c> (so it ends even if the test host dies) and is killed by its PID on dispose.
/// </summary>
internal sealed class XvfbServer : IDisposable
{
    public const int Width = 1024;
    public const int Height = 768;

    private readonly Process _process;

    private XvfbServer(Process process, int number, string log)
    {
        _process = process;
        Number = number;
        LogPath = log;
    }

    /// <summary>The X display number N (DISPLAY=:N).</summary>
    public int Number { get; }

    public string Display => $":{Number}";

    public string LogPath { get; }

    /// <summary>Tools these tests run; a missing one fails the test with the Debian package to install.</summary>
    public static string RequireTool(string name, string package)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        throw new Xunit.Sdk.XunitException(
            $"This test needs '{name}', which is not on PATH: install the Debian package {package} (scripts/install-deps.sh does).");
    }

    public static async Task<XvfbServer> StartAsync(string logDirectory, TimeSpan hardLimit, CancellationToken ct)
    {
        var xvfb = RequireTool("Xvfb", "xvfb");
        var timeout = RequireTool("timeout", "coreutils");
        for (var number = 90; number < 190; number++)
        {
            // Another X server (or a leftover lock) has this number: try the next. Xvfb itself refuses a taken
            // number too, which covers a race with a server starting right now.
            if (File.Exists($"/tmp/.X{number}-lock") || File.Exists($"/tmp/.X11-unix/X{number}"))
                continue;
            var log = Path.Combine(logDirectory, $"xvfb-{number}.log");
            var psi = new ProcessStartInfo(timeout)
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var a in (string[])["-s", "KILL", $"{(int)hardLimit.TotalSeconds}", xvfb, $":{number}",
                         "-screen", "0", $"{Width}x{Height}x24", "-nolisten", "tcp", "-noreset"])
                psi.ArgumentList.Add(a);
            var process = Process.Start(psi)!;
            var output = new System.Text.StringBuilder();
            process.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var server = new XvfbServer(process, number, log);
            var started = Stopwatch.StartNew();
            while (true)
            {
                if (process.HasExited)
                {
                    await process.WaitForExitAsync(ct);
                    string text;
                    lock (output)
                        text = output.ToString();
                    File.WriteAllText(log, text);
                    if (text.Contains("already active", StringComparison.Ordinal))
                        break; // display taken after all (a race): next number
                    throw new Xunit.Sdk.XunitException($"Xvfb :{number} exited with {process.ExitCode}: {text}");
                }
                if (await CanConnectAsync(number, ct))
                {
                    lock (output)
                        File.WriteAllText(log, output.ToString());
                    return server;
                }
                if (started.Elapsed > TimeSpan.FromSeconds(20))
                {
                    server.Dispose();
                    lock (output)
                        throw new Xunit.Sdk.XunitException($"Xvfb :{number} did not start within 20 s: {output}");
                }
                await Task.Delay(50, ct);
            }
            process.Dispose();
        }
        throw new Xunit.Sdk.XunitException("No free X display number from :90 to :189 for Xvfb.");
    }

    private static async Task<bool> CanConnectAsync(int number, CancellationToken ct)
    {
        var path = $"/tmp/.X11-unix/X{number}";
        if (!File.Exists(path))
            return false;
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Screenshot of the whole screen with xwd (x11-apps), saved as <paramref name="pngPath"/> too.</summary>
    public async Task<RgbImage> ScreenshotAsync(string pngPath, CancellationToken ct)
    {
        var xwdPath = Path.ChangeExtension(pngPath, ".xwd");
        for (var attempt = 1; ; attempt++)
        {
            var (exitCode, stderr) = await RunXwdAsync(xwdPath, ct);
            if (exitCode == 0)
                break;
            // xwd reads each window with its own visual; one being created, resized or destroyed meanwhile makes
            // GetImage fail with BadMatch/BadWindow/BadDrawable. Such a failure is transient: take it again.
            if (attempt < 10 && (stderr.Contains("BadMatch") || stderr.Contains("BadWindow") || stderr.Contains("BadDrawable")))
            {
                await Task.Delay(300, ct);
                continue;
            }
            throw new Xunit.Sdk.XunitException($"xwd on {Display} failed ({exitCode}): {stderr}");
        }
        var image = RgbImage.ParseXwd(await File.ReadAllBytesAsync(xwdPath, ct));
        image.SavePng(pngPath);
        File.Delete(xwdPath); // 3 MB; the PNG is what a person looks at
        return image;
    }

    private async Task<(int ExitCode, string Stderr)> RunXwdAsync(string xwdPath, CancellationToken ct)
    {
        var xwd = RequireTool("xwd", "x11-apps");
        var psi = new ProcessStartInfo(xwd)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in (string[])["-display", Display, "-root", "-silent", "-out", xwdPath])
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync(ct);
        _ = process.StandardOutput.ReadToEndAsync(ct);
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(TimeSpan.FromSeconds(30));
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw new Xunit.Sdk.XunitException($"xwd on {Display} did not finish within 30 s.");
        }
        return (process.ExitCode, await stderr);
    }

    /// <summary>Kills Xvfb and the timeout around it, by their PIDs.</summary>
    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
            // Exited meanwhile.
        }
        _process.Dispose();
    }
}
