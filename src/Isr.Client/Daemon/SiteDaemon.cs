using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Format;

namespace Isr.Client.Daemon;

/// <summary>
/// The one process per site state directory that owns the cache and runs a session per active parcel (NBD server,
/// QEMU child, transfers). CLI commands connect to its socket; it exits after a quiet period with no sessions and no
/// background work (<paramref name="idleTimeout"/> null: never, the site-service mode). Keys live only in this process's
/// memory: for as long as a session needs them, and those handed over by `isr login` until they expire or the login ends
/// (<see cref="HeldKeys"/>); while it holds keys the daemon does not exit when idle. Meanwhile it hoards what other sites
/// of the user request for this one (<see cref="HoardAgent"/>), keylessly.
/// </summary>
public sealed class SiteDaemon(SiteDirectory site, TimeSpan? idleTimeout, Action<string> log)
{
    private readonly HoardAgent _hoards = new(site, log);
    private readonly Dictionary<string, ParcelSession> _sessions = new();
    private readonly Dictionary<string, BackgroundCheckin> _checkins = new();
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly HeldKeys _keys = new();
    private DateTimeOffset _lastActivity = DateTimeOffset.UtcNow;
    private static readonly DateTimeOffset DaemonStarted = System.Diagnostics.Process.GetCurrentProcess().StartTime.ToUniversalTime();

    public async Task RunAsync(CancellationToken ct)
    {
        // Before the socket: a second daemon would take it over and stop the first one's running VMs as orphans.
        using var instance = await HoldSiteAsync(ct);
        File.Delete(site.DaemonSocket);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(site.DaemonSocket));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(site.DaemonSocket, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        listener.Listen(16);
        log($"isr daemon {Environment.ProcessId} serving {site.Root}");
        _ = WarmUpAsync();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // Before the first request: a VM or check-in the last daemon left must not meet a new request for its parcel.
        SiteRecovery.StopOrphanedVms(site, log);
        ResumeBackgroundCheckins(stop.Token);
        var idleWatch = WatchIdleAsync(stop);
        var hoarding = _hoards.RunAsync(stop.Token);
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var client = await listener.AcceptAsync(stop.Token);
                _ = Task.Run(() => ServeAsync(client, stop.Token), CancellationToken.None);
            }
        }
        catch (OperationCanceledException) { }
        finally
        {
            File.Delete(site.DaemonSocket);
            foreach (var session in _sessions.Values) await session.DisposeAsync();
            foreach (var checkin in _checkins.Values) await checkin.Completion;
            await idleWatch;
            await hoarding;
        }
    }

    private static readonly TimeSpan PidQueryTimeout = TimeSpan.FromSeconds(2);

    /// <summary>An exclusive lock on ISR_HOME/daemon.lock for the daemon's lifetime (the BCL takes flock for
    /// FileShare.None on Unix; the kernel drops it when the process dies, so a killed daemon leaves nothing stale).</summary>
    private async Task<FileStream> HoldSiteAsync(CancellationToken ct)
    {
        Directory.CreateDirectory(site.Root);
        try { return new FileStream(Path.Combine(site.Root, "daemon.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException)
        {
            JsonElement? ping = null;
            // Its PID only makes the message better: a hung daemon must not hang this one too.
            using var patience = CancellationTokenSource.CreateLinkedTokenSource(ct);
            patience.CancelAfter(PidQueryTimeout);
            try { ping = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "ping" }, null, patience.Token, startIfNeeded: false, recover: false); }
            catch (Exception e) when (e is IOException or SocketException or DaemonException
                || e is OperationCanceledException && !ct.IsCancellationRequested) { } // starting, stopping or hung: the message says enough
            var pid = ping is { } p && p.TryGetProperty("pid", out var id) ? $" (pid {id})" : "";
            throw new SiteDaemonRunningException($"another site daemon{pid} already serves {site.Root}: the isr commands use it; " +
                "stop it (SIGTERM) before starting one in its place");
        }
    }

    /// <summary>What a first resume would wait for, done while the user is still typing: the protocol's JSON metadata, the
    /// QEMU probe (kept on disk for later daemons too), reading a VM descriptor (its JSON metadata: 15–20 ms of the
    /// first resume's "descriptor read", measured), and the memory image's way to QEMU.</summary>
    private async Task WarmUpAsync()
    {
        _ = DaemonJson.WarmUpAsync();
        try
        {
            var qemu = Isr.Vmm.QemuInstallation.Locate();
            await qemu.GetCapabilitiesAsync();
            Isr.Vmm.VmDescriptor.FromJson((await Isr.Vmm.VmDescriptorFactory.CreateAsync(qemu, 1 << 20, "pc")).ToJsonUtf8());
            await WarmUpRestoreAsync();
        }
        catch (Exception e) { log($"warm-up at start (QEMU probe, descriptor, restore): {e.Message}"); } // the resume meets it again and reports it
    }

    /// <summary>An image of throwaway data under a throwaway key, captured into a scratch home and restored through a
    /// fetcher and its cache, twice: the first resume compiled the memory image's path while the user waited (~250
    /// methods, 50–80 ms, before QEMU started), and ran zstd's decoder at tier 0 while QEMU loaded (its SIMD code is not
    /// precompiled). Two passes over 32 chunks call each decoder method past the count that promotes it to tier 1.
    /// The data is the runtime's own library: code, tables and text, compressible the ways a memory image is (natively
    /// compiled, the runtime and its library are this program).</summary>
    private static async Task WarmUpRestoreAsync()
    {
        var scratch = Directory.CreateTempSubdirectory("isr-warm-up-");
        try
        {
            var codec = new ChunkCodec(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
            var home = new Isr.Storage.DirectoryChunkStore(Path.Combine(scratch.FullName, "home"), durable: false);
            var image = new byte[2 << 20];
            var library = Path.Combine(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory(), "System.Private.CoreLib.dll");
            if (!File.Exists(library)) library = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which program this is");
            await using (var code = File.OpenRead(library))
                await code.ReadAtLeastAsync(image, image.Length, throwOnEndOfStream: false);
            var chunks = await Transfer.MemoryImage.CaptureAsync(new MemoryStream(image), codec, (tag, blob, ct) => home.PutAsync(tag, blob, ct), default);
            using var fetcher = new Cache.ChunkFetcher(new Isr.Storage.DirectoryChunkStore(Path.Combine(scratch.FullName, "cache"), durable: false), home);
            for (int pass = 0; pass < 2; pass++)
            {
                await using var restore = Transfer.MemoryImage.StartRestore(chunks.ToAsyncEnumerable(), fetcher, codec, default);
                await restore.WriteToAsync(Stream.Null, default);
            }
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    /// <summary>Authorised reads from the server, so that the first resume finds the HTTPS and JSON code ready: the parcel
    /// list, and one parcel's history, also written and read back as the site keeps it for disconnected use (building
    /// the version record's JSON metadata took the first resume's history step 10–15 ms).</summary>
    private async Task WarmUpServerAsync(LoginRecord login)
    {
        using var home = new ServerParcelHome(login);
        try
        {
            var parcels = await home.ListParcelsAsync(CancellationToken.None);
            if (parcels.Count > 0) OfflineHome.WarmUp(parcels[0], await home.ListVersionsAsync(parcels[0].Name, CancellationToken.None));
        }
        catch (Exception e) { log($"server warm-up: {e.Message}"); } // the resume meets the same error and reports it
    }

    private async Task WatchIdleAsync(CancellationTokenSource stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try { await Task.Delay(TimeSpan.FromSeconds(1), stop.Token); } catch (OperationCanceledException) { return; }
            ForgetStaleKeys();
            if (idleTimeout is { } idle && _sessions.Count == 0 && _gate.CurrentCount == 1 && !_checkins.Values.Any(c => c.Running) && !_hoards.Busy
                && !_keys.Holding && DateTimeOffset.UtcNow - _lastActivity > idle)
            {
                log("idle with no sessions: exiting");
                stop.Cancel();
            }
        }
    }

    private async Task ServeAsync(Socket client, CancellationToken ct)
    {
        await using var stream = new NetworkStream(client, ownsSocket: true);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var writeLock = new SemaphoreSlim(1, 1);
        async Task Send(DaemonReply reply)
        {
            var line = JsonSerializer.SerializeToUtf8Bytes(reply, DaemonJsonContext.Default.DaemonReply);
            await writeLock.WaitAsync(ct);
            try { await stream.WriteAsync(line, ct); await stream.WriteAsync("\n"u8.ToArray(), ct); }
            catch (IOException) { } // the CLI went away; the operation still completes
            finally { writeLock.Release(); }
        }
        DaemonRequest? request = null;
        try
        {
            var line = await reader.ReadLineAsync(ct);
            request = line is null ? null : JsonSerializer.Deserialize(line, DaemonJsonContext.Default.DaemonRequest);
            if (request is null) return;
            _lastActivity = DateTimeOffset.UtcNow;
            var progress = new InlineProgress<string>(m => Send(new DaemonReply { Kind = "progress", Message = m }).GetAwaiter().GetResult());
            long lastBytesSent = 0;
            var bytes = new InlineProgress<long>(b =>
            {
                // A line per blob would be a thousand per check-in: ten a second tell the user as much.
                if (Stopwatch.GetElapsedTime(lastBytesSent) < BytesProgressInterval) return;
                lastBytesSent = Stopwatch.GetTimestamp();
                Send(new DaemonReply { Kind = "progress", Bytes = b }).GetAwaiter().GetResult();
            });
            var result = await HandleAsync(request, progress, bytes, ct);
            await Send(new DaemonReply { Kind = "result", Result = result });
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            log($"{request?.Op} {request?.Parcel}: {e}");
            await Send(new DaemonReply { Kind = "error", Error = e.Message, ErrorKind = e.GetType().Name });
        }
        finally
        {
            _lastActivity = DateTimeOffset.UtcNow;
        }
    }

    private static readonly TimeSpan BytesProgressInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>An operation's result as the reply carries it, written by its generated metadata.</summary>
    private static JsonElement Result<T>(T? value, JsonTypeInfo<T> type) => JsonSerializer.SerializeToElement(value!, type);

    private async Task<JsonElement> HandleAsync(DaemonRequest request, IProgress<string> progress, IProgress<long> bytes, CancellationToken ct)
    {
        var json = DaemonJsonContext.Default;
        switch (request.Op)
        {
            case "ping":
                return Result(new DaemonPing(Environment.ProcessId, _sessions.Keys.ToArray(), _keys.For(site.Login) is not null), json.DaemonPing);
            case "stat":
                return Result(_sessions.TryGetValue(Require(request.Parcel), out var running) ? running.Stats() : null, json.SessionStats);
            case "checkins":
                CheckinProgress[] checkins;
                lock (_checkins) checkins = _checkins.Values.Select(c => c.Snapshot()).OrderBy(c => c.Parcel).ToArray();
                return Result(checkins, json.CheckinProgressArray);
            case "hoards":
                return Result(_hoards.Snapshot(), json.BackgroundHoardArray);
            case "keep-keys":
                var login = site.Login ?? throw new InvalidOperationException("this site is not logged in");
                _keys.Keep(login, request.KeyEncryptionKey ?? throw new ArgumentException("request is missing a field"),
                    TimeSpan.FromSeconds(request.KeepSeconds ?? 0));
                _ = WarmUpServerAsync(login);
                return Result(new HeldKeysReply(true, DateTimeOffset.UtcNow.AddSeconds(request.KeepSeconds ?? 0)), json.HeldKeysReply);
            case "forget-keys":
                _keys.Forget();
                return Result(new HeldKeysReply(false), json.HeldKeysReply);
        }
        await _gate.WaitAsync(ct);
        try
        {
            var parcel = Require(request.Parcel);
            switch (request.Op)
            {
                case "resume":
                    RefuseDuringCheckin(parcel, "resume it");
                    if (_sessions.ContainsKey(parcel)) throw new InvalidOperationException($"parcel '{parcel}' is already running at this site");
                    var session = await ResumeAsync(parcel, request, progress, ct);
                    _sessions[parcel] = session;
                    return Result(session.Stats(), json.SessionStats);
                case "suspend":
                    var active = Running(parcel);
                    SuspendResult suspended;
                    try
                    {
                        suspended = await active.SuspendAsync(progress, ct);
                    }
                    catch (Exception e) when (e is not Cache.SiteDiskFullException) // a full disk leaves the VM running: the session stays
                    {
                        _sessions.Remove(parcel);
                        await active.DisposeAsync();
                        throw;
                    }
                    _sessions.Remove(parcel);
                    await active.DisposeAsync();
                    return Result(suspended, json.SuspendResult);
                case "sync":
                    return Result(await Running(parcel).SyncAsync(progress, ct), json.SuspendResult);
                case "checkin":
                    // The upload outlives this request: the CLI returns, the user may walk away, `isr status` follows it.
                    RefuseWhileRunning(parcel);
                    RefuseDuringCheckin(parcel, "check it in again");
                    Durable.WriteFileAtomically(site.BackgroundCheckinPath(parcel), JsonSerializer.SerializeToUtf8Bytes(new BackgroundRequest(request.Store), json.BackgroundRequest));
                    return Result(StartCheckin(parcel, request.Store, ct).Snapshot(), json.CheckinProgress);
                case "checkin-now":
                    // The user waits for it: run here, where the HTTPS connection and its code are warm, not in a new CLI
                    // process (a cold connection cost 0.3–0.4 s of a 3 s check-in at 100 Mbit/s).
                    RefuseWhileRunning(parcel);
                    RefuseDuringCheckin(parcel, "check it in");
                    var checkinTrace = StepTrace.FromCommand(request.ProcessStarted, request.CommandStarted);
                    checkinTrace.Mark("daemon: request received");
                    return Result(await Checkin.RunAsync(site, HomeLocator.Open(site, request.Store), parcel, releaseLock: !request.KeepLock, bytes, ct, trace: checkinTrace),
                        json.CheckinResult);
                case "keep":
                    // The VM stopped without a suspend while no daemon ran: what `suspend` does for a crashed QEMU.
                    RefuseDuringCheckin(parcel, "keep its disk");
                    if (_sessions.ContainsKey(parcel)) throw new InvalidOperationException($"parcel '{parcel}' is running at this site: use 'isr suspend'");
                    var why = site.ReadLocal(parcel)?.Interrupted ?? throw new InvalidOperationException($"parcel '{parcel}' is not running at this site");
                    var keepHome = HomeLocator.Open(site, request.Store);
                    var opened = await OpenedParcel.OpenAsync(keepHome, (await UnlockAsync(keepHome, request.Password, ct)).Secrets, parcel, ct);
                    return Result(await ParcelSession.KeepStoppedAsync(opened, site, why, progress, ct), json.SuspendResult);
                case "running":
                    return Result(_sessions.ContainsKey(parcel), json.Boolean);
                default:
                    throw new ArgumentException($"unknown request '{request.Op}'");
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>The user's keys: those held since `isr login` when they open this home, else from the password.</summary>
    private async Task<(UserSecrets Secrets, bool Held)> UnlockAsync(IParcelHome home, string? password, CancellationToken ct) =>
        home is ServerParcelHome logged && _keys.For(logged.Login) is { } held ? (held, true)
            : (await home.UnlockAsync(password ?? throw new PasswordNeededException($"a password is needed to open the keys for {home.Describe}"), ct), false);

    private BackgroundCheckin StartCheckin(string parcel, string? store, CancellationToken ct)
    {
        var checkin = new BackgroundCheckin(site, HomeLocator.Open(site, store), parcel, log, ct);
        lock (_checkins) _checkins[parcel] = checkin;
        return checkin;
    }

    /// <summary>Takes up each `isr checkin --background` an earlier daemon did not finish (it was killed): the user
    /// who walked away expects it to complete without being asked again.</summary>
    private void ResumeBackgroundCheckins(CancellationToken ct)
    {
        foreach (var parcel in site.ParcelNames())
        {
            var path = site.BackgroundCheckinPath(parcel);
            if (!File.Exists(path)) continue;
            BackgroundRequest? request;
            try { request = JsonSerializer.Deserialize(File.ReadAllBytes(path), DaemonJsonContext.Default.BackgroundRequest); }
            catch (JsonException) { request = null; }
            if (request is null) { File.Delete(path); continue; }
            log($"taking up the background check-in of '{parcel}' an earlier daemon did not finish");
            StartCheckin(parcel, request.Store, ct);
        }
    }

    /// <summary>What a background check-in needs to be started again: its home (null: the logged-in server). Public only
    /// for <see cref="DaemonJsonContext"/>.</summary>
    public sealed record BackgroundRequest(string? Store);

    /// <summary>A logout or a site wipe removes the login file: the keys go with it within a second.</summary>
    private void ForgetStaleKeys()
    {
        if (!_keys.Holding) return;
        try { _keys.Refresh(site.Login); }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException) { _keys.Refresh(null); }
    }

    private void RefuseDuringCheckin(string parcel, string action)
    {
        lock (_checkins)
            if (_checkins.TryGetValue(parcel, out var c) && c.Running)
                throw new InvalidOperationException($"parcel '{parcel}' is being checked in at this site in the background: wait until 'isr status' says it is committed, then {action}");
    }

    private void RefuseWhileRunning(string parcel)
    {
        if (_sessions.ContainsKey(parcel)) throw new InvalidOperationException($"parcel '{parcel}' is running at this site: suspend it first, then check it in");
    }

    private ParcelSession Running(string parcel) =>
        _sessions.TryGetValue(parcel, out var session) ? session : throw new InvalidOperationException($"parcel '{parcel}' is not running at this site");

    /// <summary>Unlocks the user's secrets, takes the parcel's lock (server homes), commits a version left pending by an
    /// earlier suspend here, checks the history, and resumes.</summary>
    private async Task<ParcelSession> ResumeAsync(string parcel, DaemonRequest request, IProgress<string> progress, CancellationToken ct)
    {
        var options = request.Resume ?? new ResumeOptions();
        var trace = StepTrace.FromCommand(options.ProcessStarted, options.CommandStarted);
        if (DaemonStarted > (options.ProcessStarted ?? DateTimeOffset.MaxValue)) trace.Mark("daemon process started", DaemonStarted);
        trace.Mark("daemon: request received");
        var home = HomeLocator.Open(site, request.Store);
        var (secrets, held) = await UnlockAsync(home, request.Password, ct);
        trace.Mark(held ? "keys held by the daemon since login" : "keys unlocked (Argon2id of the password)");
        if (home is ServerParcelHome server)
        {
            var identity = site.Identity;
            try
            {
                var token = await server.AcquireLockAsync(parcel, identity.Id, identity.Name, ct);
                site.UpdateLocal(parcel, s => s with { LockToken = token });
                trace.Mark("lock acquired");
            }
            catch (ServerUnreachableException e)
            {
                // Disconnected operation: only under the lock this site already holds, from what it saved and hoarded.
                if (site.ReadLocal(parcel)?.LockToken is null)
                    throw new ServerUnreachableException($"{e.Message}; this site does not hold the lock of '{parcel}', so it cannot resume it disconnected", e);
                home = new OfflineHome(server, site, e.Message);
                progress.Report($"disconnected: {e.Message}. Working from this site's cache under the lock it holds; " +
                    "'isr checkin' sends the changes when the server can be reached");
            }
        }
        var pending = PendingCommit.Load(site.PendingCommitPath(parcel));
        if (pending is not null && home is not OfflineHome)
        {
            progress.Report("checking in the version suspended earlier at this site");
            await Checkin.RunAsync(site, home, parcel, releaseLock: false, null, ct);
            pending = null;
        }
        var opened = await OpenedParcel.OpenAsync(home, secrets, parcel, ct);
        trace.Mark("parcel opened, history verified");
        if (home is ServerParcelHome) OfflineHome.Save(site, opened.Info, opened.Versions);
        if (site.ReadLocal(parcel)?.LastSeenHead is long seen && opened.Head.Number < seen)
            progress.Report($"WARNING: the newest version of '{parcel}' at {home.Describe} is {opened.Head.Number}, older than version {seen} " +
                "this site saw before: the home may be replaying an old state");
        site.UpdateLocal(parcel, s => s with { Store = home is DirectoryParcelHome d ? d.Root : "" });
        var lookaside = Lookaside.LookasideSources.Open(options.Lookaside.Concat(Lookaside.LookasideSources.Configured(site)), site, secrets, opened.Codec,
            m => progress.Report("WARNING: " + m), readToken: home is ServerParcelHome serverHome ? serverHome.ReadTokenAsync : null);
        return await ParcelSession.ResumeAsync(opened, site, options, progress, ct, lookaside, fromPending: pending, trace: trace);
    }

    private static string Require(string? value) => value ?? throw new ArgumentException("request is missing a field");
}

/// <summary>A site state directory is served by one daemon at a time.</summary>
public sealed class SiteDaemonRunningException(string message) : InvalidOperationException(message);
