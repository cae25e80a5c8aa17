using System.ComponentModel;
using System.Diagnostics;
using System.Net.Sockets;

namespace Isr.Vmm;

/// <summary>
/// A QEMU child process: started with an explicit argument list (no shell), stdout/stderr
/// captured so QEMU's error messages can be shown, exit observed, killed only by its own PID.
/// </summary>
internal sealed class QemuProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly OutputTail _tail = new();
    private readonly Task<int> _exited;

    private QemuProcess(Process process)
    {
        _process = process;
        _process.ErrorDataReceived += (_, e) => _tail.Add(e.Data);
        // stdout carries nothing we use, but must be drained so QEMU never blocks on a full pipe.
        _process.OutputDataReceived += (_, e) => _tail.Add(e.Data);
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();
        ProcessId = process.Id;
        _exited = WaitForExitAsync();
    }

    public int ProcessId { get; }

    /// <summary>Completes with the exit code once the process has exited and its output is drained.</summary>
    public Task<int> Exited => _exited;

    public bool HasExited => _exited.IsCompleted;

    /// <summary>The last lines QEMU printed (stderr and stdout).</summary>
    public string OutputTail => _tail.ToString();

    /// <param name="environment">Variables set for QEMU over this process's own (e.g. DISPLAY for its window).</param>
    public static QemuProcess Start(string binaryPath, IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(binaryPath)
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = false,
        };
        foreach (var a in arguments)
            psi.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
            psi.Environment[name] = value;
        Process? process;
        try
        {
            process = Process.Start(psi);
        }
        catch (Win32Exception e)
        {
            throw new QemuVmException($"Cannot start QEMU '{binaryPath}': {e.Message}", inner: e);
        }
        return new QemuProcess(process ?? throw new QemuVmException($"Cannot start QEMU '{binaryPath}'."));
    }

    private async Task<int> WaitForExitAsync()
    {
        await _process.WaitForExitAsync().ConfigureAwait(false);
        return _process.ExitCode;
    }

    /// <summary>
    /// Connects to the QMP socket once QEMU has created it. Fails with QEMU's own message if
    /// the process exits first (bad command line, missing firmware, ...).
    /// </summary>
    public async Task<QmpClient> ConnectQmpAsync(string socketPath, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var timeoutCts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutCts.CancelAfter(timeout);
        while (true)
        {
            if (HasExited)
                throw new QemuVmException("QEMU exited during startup.", OutputTail, await _exited.ConfigureAwait(false));
            try
            {
                if (File.Exists(socketPath))
                    return await QmpClient.ConnectAsync(socketPath, timeoutCts.Token).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                // The socket file exists but QEMU is not listening yet; retry.
            }
            catch (QmpConnectionClosedException)
            {
                // QEMU creates the QMP socket early, then may fail later in startup (e.g. a disk
                // that cannot be opened) and drop the connection. Give the exit a moment to be
                // observed so the next round reports it with QEMU's message.
                await Task.WhenAny(_exited, Task.Delay(TimeSpan.FromSeconds(2), timeoutCts.Token)).ConfigureAwait(false);
                continue;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new QemuVmException($"QEMU did not open its QMP socket within {timeout.TotalSeconds:0} s.", OutputTail);
            }

            try
            {
                // A resume waits on this: a short poll (a file test) costs nothing beside QEMU's ~80 ms start.
                await Task.WhenAny(_exited, Task.Delay(5, timeoutCts.Token)).ConfigureAwait(false);
                timeoutCts.Token.ThrowIfCancellationRequested();
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new QemuVmException($"QEMU did not open its QMP socket within {timeout.TotalSeconds:0} s.", OutputTail);
            }
        }
    }

    /// <summary>SIGKILL to this process (by the PID we started), then wait until it is gone.</summary>
    public async Task KillAsync()
    {
        if (!HasExited)
        {
            try
            {
                _process.Kill(entireProcessTree: false);
            }
            catch (InvalidOperationException)
            {
                // Already exited between the check and the kill.
            }
        }
        await _exited.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync().ConfigureAwait(false);
        _process.Dispose();
    }
}
