using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Isr.Vmm;

/// <summary>
/// One running QEMU for one VM: start (fresh or waiting for saved state), load and save the
/// memory/device state as a stream, pause/continue, quit. The process, its output and QMP are all
/// watched, because QEMU reports some failures only by exiting (a bad incoming stream).
/// </summary>
public sealed class QemuVm : IAsyncDisposable
{
    // Local transfers should run at disk/network speed; QEMU's default cap (128 MiB/s in 7.2)
    // is meant for live migration over a shared link. Measured here: 200 MiB of non-zero RAM
    // took 1.65 s with the default, 0.73 s without the cap. (downtime-limit does not matter:
    // the guest is stopped before saving, so nothing is re-dirtied and one pass suffices.)
    private const long MaxMigrationBandwidth = 100L * 1024 * 1024 * 1024;
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan ExitGrace = TimeSpan.FromSeconds(5);

    private readonly QemuProcess _process;
    private readonly RuntimeDirectory _runtimeDir;
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _eventPump;
    private volatile bool _quitRequested;
    private volatile bool _killRequested;
    private volatile bool _guestPoweredOff;
    private volatile bool _loadStarted;
    private int _disposed;

    private QemuVm(VmDescriptor descriptor, QemuSiteOptions site, bool incoming, QemuProcess process, QmpClient qmp, RuntimeDirectory runtimeDir,
        VncEndpoint? vnc)
    {
        Descriptor = descriptor;
        Vnc = vnc;
        Site = site;
        Incoming = incoming;
        _process = process;
        Qmp = qmp;
        _runtimeDir = runtimeDir;
        _eventPump = Task.Run(PumpEventsAsync);
        _ = Task.Run(WatchExitAsync);
    }

    public VmDescriptor Descriptor { get; }

    public QemuSiteOptions Site { get; }

    /// <summary>Started with <c>-incoming defer</c>: waits for <see cref="LoadStateAsync"/>.</summary>
    public bool Incoming { get; }

    public int ProcessId => _process.ProcessId;

    /// <summary>Where QEMU listens for the guest agent's port; null when the descriptor has no guest-agent device.</summary>
    public string? GuestAgentSocketPath => Site.GuestAgentSocketPath;

    /// <summary>Where the VNC server listens (for <see cref="QemuDisplayMode.Vnc"/>: tell the user); null otherwise.</summary>
    public VncEndpoint? Vnc { get; }

    /// <summary>
    /// The QMP connection, for commands this class does not wrap. Its <see cref="QmpClient.Events"/>
    /// channel is consumed here; subscribe to <see cref="EventReceived"/> instead.
    /// </summary>
    public QmpClient Qmp { get; }

    /// <summary>Completes with QEMU's exit code once it has exited; <see cref="ExitReason"/> is set by then.</summary>
    public Task<int> Exited => _exited.Task;

    public bool HasExited => _exited.Task.IsCompleted;

    /// <summary>Why QEMU ended; null while it runs.</summary>
    public QemuExitReason? ExitReason { get; private set; }

    /// <summary>The last lines QEMU printed.</summary>
    public string OutputTail => _process.OutputTail;

    /// <summary>Every QMP event (STOP, RESUME, SHUTDOWN, BLOCK_IO_ERROR, ...), in order, on a background task.</summary>
    public event EventHandler<QmpEvent>? EventReceived;

    /// <summary>Raised once when the process has ended, whatever the reason.</summary>
    public event EventHandler<QemuExitedEventArgs>? ProcessExited;

    /// <summary>
    /// Starts QEMU for <paramref name="descriptor"/> after checking that this site can run it
    /// (QEMU silently accepts mismatches we must not). With <paramref name="incoming"/> the guest
    /// stays paused, waiting for <see cref="LoadStateAsync"/>.
    /// </summary>
    public static async Task<QemuVm> StartAsync(VmDescriptor descriptor, QemuSiteOptions site, bool incoming, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        ArgumentNullException.ThrowIfNull(site);
        var installation = QemuInstallation.Locate(site.QemuBinaryPath);
        var caps = await installation.GetCapabilitiesAsync(cancellationToken).ConfigureAwait(false);
        // A fresh boot only needs the machine to exist here; loading saved state also needs the same QEMU series.
        var blocking = DescriptorCheck.Compare(descriptor, caps)
            .Where(d => d.IsBlocking && (incoming || d.Field != DescriptorField.VmmVersion))
            .ToList();
        if (blocking.Count > 0)
            throw new DescriptorMismatchException(blocking);

        if (site.Display == QemuDisplayMode.Window)
            CheckWindowCanOpen(site, caps);
        TryDelete(site.QmpSocketPath); // a stale socket from a killed QEMU would only refuse connections
        var runtimeDir = RuntimeDirectory.Create("vm");
        if (descriptor.Devices.Any(d => d.Kind == VmDeviceKind.GuestAgent))
            site = site with { GuestAgentSocketPath = System.IO.Path.Combine(runtimeDir.Path, "agent.sock") };
        QemuProcess? process = null;
        QmpClient? qmp = null;
        try
        {
            var args = QemuCommandLine.Build(descriptor, site, incoming);
            process = QemuProcess.Start(installation.BinaryPath, args, site.WindowEnvironment);
            qmp = await process.ConnectQmpAsync(site.QmpSocketPath, site.StartTimeout, cancellationToken).ConfigureAwait(false);
            VncEndpoint? vnc = null;
            if (site.Display == QemuDisplayMode.Vnc)
            {
                vnc = VncEndpoint.FromQueryVnc(await qmp.ExecuteAsync("query-vnc", null, cancellationToken).ConfigureAwait(false))
                    ?? throw new QemuVmException("QEMU started without its VNC server.", process.OutputTail);
            }
            return new QemuVm(descriptor, site, incoming, process, qmp, runtimeDir, vnc);
        }
        catch
        {
            if (qmp is not null)
                await qmp.DisposeAsync().ConfigureAwait(false);
            if (process is not null)
                await process.DisposeAsync().ConfigureAwait(false);
            runtimeDir.Delete();
            TryDelete(site.QmpSocketPath);
            throw;
        }
    }

    /// <summary>
    /// QEMU fails late and obscurely without its GUI module or a desktop ("gtk initialization failed"); say what is
    /// missing instead.
    /// </summary>
    private static void CheckWindowCanOpen(QemuSiteOptions site, SiteCapabilities caps)
    {
        if (!caps.DisplayBackends.Contains(site.WindowBackend, StringComparer.Ordinal))
            throw new QemuVmException(
                $"QEMU's '{site.WindowBackend}' display is not installed at this site (it has: {string.Join(", ", caps.DisplayBackends)}); " +
                "the window needs the Debian package qemu-system-gui. Use VNC or headless instead.");
        string? Variable(string name) =>
            site.WindowEnvironment is { } env && env.TryGetValue(name, out var value) ? value : Environment.GetEnvironmentVariable(name);
        if (string.IsNullOrEmpty(Variable("DISPLAY")) && string.IsNullOrEmpty(Variable("WAYLAND_DISPLAY")))
            throw new QemuVmException(
                "The VM's window needs a desktop, but neither DISPLAY nor WAYLAND_DISPLAY is set. Use VNC or headless instead.");
    }

    /// <summary>Asks QEMU where its VNC server listens (QMP <c>query-vnc</c>); null when VNC is off.</summary>
    public async Task<VncEndpoint?> QueryVncAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfExited("query VNC");
        try
        {
            return VncEndpoint.FromQueryVnc(await Qmp.ExecuteAsync("query-vnc", null, cancellationToken).ConfigureAwait(false));
        }
        catch (QmpConnectionClosedException e)
        {
            throw await DescribeFailureAsync("QMP 'query-vnc'", e).ConfigureAwait(false);
        }
    }

    /// <summary>QEMU's run state: "running", "paused", "inmigrate", "postmigrate", "io-error", ...</summary>
    public async Task<string> QueryStatusAsync(CancellationToken cancellationToken = default)
    {
        var status = await Qmp.ExecuteAsync("query-status", null, cancellationToken).ConfigureAwait(false);
        return status.GetProperty("status").GetString() ?? "";
    }

    /// <summary>Lets the guest run (QMP <c>cont</c>); needed after loading state, which leaves it paused.</summary>
    public Task ContinueAsync(CancellationToken cancellationToken = default) => ExecuteAsync("cont", null, cancellationToken);

    /// <summary>Pauses the guest (QMP <c>stop</c>).</summary>
    public Task PauseAsync(CancellationToken cancellationToken = default) => ExecuteAsync("stop", null, cancellationToken);

    /// <summary>
    /// Loads saved state into a VM started with <c>incoming: true</c>. QEMU listens on a private
    /// unix socket; <paramref name="writeState"/> gets the connection and writes the stream as it
    /// arrives (so fetching overlaps loading) and returns at its end. Completes when QEMU reports
    /// the load completed; the guest is then paused until <see cref="ContinueAsync"/>.
    /// Throws <see cref="QemuVmException"/> with QEMU's message if the load fails or QEMU exits.
    /// </summary>
    public async Task LoadStateAsync(Func<Stream, CancellationToken, Task> writeState, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(writeState);
        ThrowIfExited("load VM state");
        if (!Incoming)
            throw new InvalidOperationException("State can only be loaded into a VM started with incoming: true.");
        if (_loadStarted)
            throw new InvalidOperationException("State was already loaded into this VM; QEMU accepts one incoming stream.");
        _loadStarted = true;

        var path = _runtimeDir.NewSocketPath("load");
        try
        {
            // QEMU binds the listener before replying, so we can connect right after.
            await ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = "unix:" + path }, cancellationToken).ConfigureAwait(false);
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
            TryDelete(path);

            await using (var stream = new NetworkStream(socket, ownsSocket: false))
            {
                try
                {
                    await WatchMigrationAsync(writeState(stream, cancellationToken), "loading VM state", cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or SocketException)
                {
                    // QEMU closed the connection: it rejected the stream. Its own message is the useful one.
                    throw await DescribeFailureAsync("loading VM state", e).ConfigureAwait(false);
                }
                // End of stream: QEMU must see EOF only after all state was written.
                socket.Shutdown(SocketShutdown.Send);
            }
            await WaitForMigrationEndAsync("loading VM state", cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            TryDelete(path);
        }
    }

    /// <summary>
    /// Pauses the guest and saves its memory and device state. QEMU connects to a private unix
    /// socket of ours and streams the state; <paramref name="readState"/> reads it until EOF
    /// (e.g. compressing and uploading as it goes). The data is only valid if this method returns
    /// normally: a failure midway also ends the stream with EOF. Afterwards the guest is stopped
    /// ("postmigrate"); normally the caller then calls <see cref="QuitAsync"/>.
    /// </summary>
    public async Task SaveStateAsync(Func<Stream, CancellationToken, Task> readState, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(readState);
        ThrowIfExited("save VM state");

        await ExecuteAsync("stop", null, cancellationToken).ConfigureAwait(false);
        await ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = MaxMigrationBandwidth }, cancellationToken)
            .ConfigureAwait(false);

        var path = _runtimeDir.NewSocketPath("save");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(1);
            var accept = listener.AcceptAsync(cancellationToken).AsTask();
            await ExecuteAsync("migrate", new JsonObject { ["uri"] = "unix:" + path }, cancellationToken).ConfigureAwait(false);
            using var connection = await WatchMigrationAsync(accept, "saving VM state", cancellationToken).ConfigureAwait(false);
            TryDelete(path);

            await using (var stream = new NetworkStream(connection, ownsSocket: false))
            {
                try
                {
                    await WatchMigrationAsync(readState(stream, cancellationToken), "saving VM state", cancellationToken).ConfigureAwait(false);
                }
                catch when (!HasExited)
                {
                    // Do not leave QEMU blocked writing to a reader that is gone.
                    await TryCancelMigrationAsync().ConfigureAwait(false);
                    throw;
                }
            }
            await WaitForMigrationEndAsync("saving VM state", cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            TryDelete(path);
        }
    }

    /// <summary>
    /// Asks QEMU to quit and waits for it to exit; kills it (by PID) if it takes longer than
    /// <paramref name="timeout"/> (default 10 s). Returns the exit code.
    /// </summary>
    public async Task<int> QuitAsync(TimeSpan? timeout = null)
    {
        if (!HasExited)
        {
            _quitRequested = true;
            try
            {
                using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
                await Qmp.ExecuteAsync("quit", null, cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is QmpConnectionClosedException or QmpErrorException or OperationCanceledException)
            {
                // QEMU may close the connection before its reply is read; the exit below decides.
            }
            try
            {
                await Exited.WaitAsync(timeout ?? TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                return await KillAsync().ConfigureAwait(false);
            }
        }
        return await Exited.ConfigureAwait(false);
    }

    /// <summary>Kills QEMU immediately (SIGKILL to its PID). The guest loses unsaved state.</summary>
    public async Task<int> KillAsync()
    {
        if (!HasExited)
        {
            _killRequested = true;
            await _process.KillAsync().ConfigureAwait(false);
        }
        return await Exited.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await KillAsync().ConfigureAwait(false);
        await Qmp.DisposeAsync().ConfigureAwait(false);
        await _process.DisposeAsync().ConfigureAwait(false);
        _runtimeDir.Delete();
        TryDelete(Site.QmpSocketPath);
        if (Site.VncSocketPath is { } vncSocket)
            TryDelete(vncSocket); // QEMU removes it when it quits, but not when killed
    }

    private async Task ExecuteAsync(string command, JsonObject? arguments, CancellationToken cancellationToken)
    {
        try
        {
            await Qmp.ExecuteAsync(command, arguments, cancellationToken).ConfigureAwait(false);
        }
        catch (QmpConnectionClosedException e)
        {
            throw await DescribeFailureAsync($"QMP '{command}'", e).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Awaits <paramref name="task"/> while checking that QEMU is alive and the migration has not
    /// failed, since neither necessarily makes the task itself fail (or finish).
    /// </summary>
    private async Task WatchMigrationAsync(Task task, string what, CancellationToken cancellationToken)
    {
        while (!task.IsCompleted)
        {
            await Task.WhenAny(task, Exited, Task.Delay(PollInterval * 2, cancellationToken)).ConfigureAwait(false);
            if (task.IsCompleted)
                break;
            cancellationToken.ThrowIfCancellationRequested();
            var status = await QueryMigrationAsync(what, cancellationToken).ConfigureAwait(false);
            if (status.IsFailed)
                throw new QemuVmException($"{what} failed: {status.ErrorDescription ?? status.Status}", OutputTail);
        }
        await task.ConfigureAwait(false);
    }

    private async Task<T> WatchMigrationAsync<T>(Task<T> task, string what, CancellationToken cancellationToken)
    {
        await WatchMigrationAsync((Task)task, what, cancellationToken).ConfigureAwait(false);
        return await task.ConfigureAwait(false);
    }

    /// <summary>Called after the stream's last byte, when QEMU ends the migration within milliseconds; a resume waits on
    /// it. So the poll starts at 1 ms and doubles up to <see cref="PollInterval"/> (a fixed 50 ms added 50 ms to one
    /// hoarded resume in five, measured).</summary>
    private async Task WaitForMigrationEndAsync(string what, CancellationToken cancellationToken)
    {
        var interval = TimeSpan.FromMilliseconds(1);
        while (true)
        {
            var status = await QueryMigrationAsync(what, cancellationToken).ConfigureAwait(false);
            if (status.IsCompleted)
                return;
            if (status.IsFailed)
                throw new QemuVmException($"{what} failed: {status.ErrorDescription ?? status.Status}", OutputTail);
            await Task.WhenAny(Exited, Task.Delay(interval, cancellationToken)).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            interval = TimeSpan.FromTicks(Math.Min(interval.Ticks * 2, PollInterval.Ticks));
        }
    }

    private async Task<MigrationStatus> QueryMigrationAsync(string what, CancellationToken cancellationToken)
    {
        if (HasExited)
            throw await DescribeFailureAsync(what, null).ConfigureAwait(false);
        try
        {
            return MigrationStatus.Parse(await Qmp.ExecuteAsync("query-migrate", null, cancellationToken).ConfigureAwait(false));
        }
        catch (QmpConnectionClosedException e)
        {
            throw await DescribeFailureAsync(what, e).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Builds the error for a failed operation: if QEMU is exiting, wait briefly for it so the
    /// exit code and its last words ("load of migration failed: ...") can be included.
    /// </summary>
    private async Task<QemuVmException> DescribeFailureAsync(string what, Exception? inner)
    {
        try
        {
            await Exited.WaitAsync(ExitGrace).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
        }
        if (HasExited)
            return new QemuVmException($"{what} failed", OutputTail, Exited.Result, inner);
        if (Qmp.IsConnected)
        {
            try
            {
                using var cts = new CancellationTokenSource(ExitGrace);
                var status = MigrationStatus.Parse(await Qmp.ExecuteAsync("query-migrate", null, cts.Token).ConfigureAwait(false));
                if (status.ErrorDescription is { } desc)
                    return new QemuVmException($"{what} failed: {desc}", OutputTail, inner: inner);
            }
            catch (Exception e) when (e is QmpConnectionClosedException or QmpErrorException or OperationCanceledException)
            {
            }
        }
        return new QemuVmException($"{what} failed", OutputTail, inner: inner);
    }

    private async Task TryCancelMigrationAsync()
    {
        try
        {
            using var cts = new CancellationTokenSource(ExitGrace);
            await Qmp.ExecuteAsync("migrate_cancel", null, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpConnectionClosedException or QmpErrorException or OperationCanceledException)
        {
        }
    }

    private void ThrowIfExited(string what)
    {
        if (HasExited)
            throw new QemuVmException($"Cannot {what}: QEMU has exited ({ExitReason})", OutputTail, Exited.Result);
    }

    // Events are pumped off the QMP reader loop so handlers may themselves issue QMP commands.
    private async Task PumpEventsAsync()
    {
        await foreach (var evt in Qmp.Events.ReadAllAsync().ConfigureAwait(false))
        {
            if (evt.Name == "SHUTDOWN"
                && evt.Data.ValueKind == JsonValueKind.Object
                && evt.Data.TryGetProperty("guest", out var guest)
                && guest.ValueKind == JsonValueKind.True)
                _guestPoweredOff = true;
            try
            {
                EventReceived?.Invoke(this, evt);
            }
            catch
            {
                // One faulty subscriber must not stop event delivery (or exit detection).
            }
        }
    }

    private async Task WatchExitAsync()
    {
        var code = await _process.Exited.ConfigureAwait(false);
        // QEMU's last events (SHUTDOWN) arrive just before its socket closes; drain them first
        // so the reason reflects them. Bounded: a wedged reader must not hide the exit.
        await Task.WhenAny(_eventPump, Task.Delay(TimeSpan.FromSeconds(2))).ConfigureAwait(false);
        var reason = _killRequested ? QemuExitReason.Killed
            : _guestPoweredOff ? QemuExitReason.GuestPoweredOff
            : _quitRequested ? QemuExitReason.Quit
            : QemuExitReason.Crashed;
        ExitReason = reason;
        // Tell subscribers before completing Exited, so whoever awaits Exited sees their reaction.
        try
        {
            ProcessExited?.Invoke(this, new QemuExitedEventArgs(code, reason, OutputTail));
        }
        catch
        {
            // Subscribers' exceptions have nowhere useful to go on this background task.
        }
        _exited.TrySetResult(code);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
