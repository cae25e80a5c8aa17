using System.Diagnostics;
using System.Text;

namespace Isr.EndToEnd.Tests;

/// <summary>A program the test started and talks to while it runs: its stderr lines as they come, its exit under a
/// hard timeout. Disposal kills it (by PID, with its children) if it is still running.</summary>
public sealed class RunningProgram : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly List<string> _stderr = [];
    private readonly SemaphoreSlim _newLine = new(0);

    private RunningProgram(Process process) => _process = process;

    public static RunningProgram Start(string program, IEnumerable<string> args, IDictionary<string, string> env)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (k, v) in env) start.Environment[k] = v;
        var running = new RunningProgram(Process.Start(start)!);
        running._process.StandardInput.Close();
        running._process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (running._stdout) running._stdout.AppendLine(e.Data); };
        running._process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (running._stderr) running._stderr.Add(e.Data);
            running._newLine.Release();
        };
        running._process.BeginOutputReadLine();
        running._process.BeginErrorReadLine();
        return running;
    }

    public string Stderr { get { lock (_stderr) return string.Join('\n', _stderr); } }

    /// <summary>The first stderr line containing <paramref name="text"/>, waiting for it as long as the program runs, at most <paramref name="timeout"/>.</summary>
    public async Task<string> WaitForStderrAsync(string text, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true) // until the line, the exit or the timeout
        {
            if (Find(text) is { } line) return line;
            if (_process.HasExited)
            {
                await _process.WaitForExitAsync(); // its output read to the end
                return Find(text) ?? throw new InvalidOperationException($"exited ({_process.ExitCode}) without printing '{text}':\n{Stderr}");
            }
            try { await _newLine.WaitAsync(TimeSpan.FromSeconds(1), cts.Token); }
            catch (OperationCanceledException) { throw new TimeoutException($"no '{text}' within {timeout}; stderr so far:\n{Stderr}"); }
        }
    }

    private string? Find(string text)
    {
        lock (_stderr) return _stderr.FirstOrDefault(l => l.Contains(text, StringComparison.Ordinal));
    }

    /// <summary>Ctrl-C: SIGINT to the program (by its PID).</summary>
    public async Task InterruptAsync()
    {
        using var kill = Process.Start("kill", ["-INT", _process.Id.ToString()]);
        await kill.WaitForExitAsync();
    }

    public async Task<(int Code, string Stdout, string Stderr)> ExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try { await _process.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException) { throw new TimeoutException($"did not exit within {timeout}; stderr so far:\n{Stderr}"); }
        lock (_stdout) return (_process.ExitCode, _stdout.ToString(), Stderr);
    }

    public async ValueTask DisposeAsync()
    {
        try { if (!_process.HasExited) { _process.Kill(entireProcessTree: true); await _process.WaitForExitAsync(); } }
        catch (InvalidOperationException) { }
        _process.Dispose();
        _newLine.Dispose();
    }
}
