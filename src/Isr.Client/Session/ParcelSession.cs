using System.Diagnostics;
using Isr.BlockDevice;
using Isr.Client.Cache;
using Isr.Client.Disk;
using Isr.Client.Site;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Vmm;

namespace Isr.Client.Session;

/// <summary>Site choices for a resume; none of them changes what the guest sees.</summary>
public sealed record ResumeOptions
{
    public QemuDisplayMode Display { get; init; } = QemuDisplayMode.Headless;
    public string? SerialPath { get; init; }
    /// <summary>Two-way console through the FIFOs BASE.in and BASE.out (see <see cref="QemuSiteOptions.SerialPipeBase"/>).</summary>
    public string? SerialPipe { get; init; }
    /// <summary>The user's desktop (DISPLAY, XAUTHORITY…) for a window: the daemon may have been started from elsewhere.</summary>
    public IReadOnlyDictionary<string, string>? DisplayEnvironment { get; init; }
    /// <summary>Boot from the disk, discarding the memory image (after the user confirmed).</summary>
    public bool Cold { get; init; }
    /// <summary>Resume this version instead of the head (the new version will still follow the head).</summary>
    public long? Version { get; init; }
    /// <summary>When the user's command started, so resume latency covers the whole command.</summary>
    public DateTimeOffset? CommandStarted { get; init; }
    /// <summary>When the user's `isr` process started: the origin of the resume's <see cref="StepTrace"/>.</summary>
    public DateTimeOffset? ProcessStarted { get; init; }
    /// <summary>State-transfer policy: demand fetch (default) or baseline copy-in before the VM starts.</summary>
    public TransferPolicy Policy { get; init; } = TransferPolicy.Demand;
    /// <summary>Fetch ahead of the guest: the working set recorded at the previous resume (default), and optionally the rest of the disk.</summary>
    public PrefetchMode Prefetch { get; init; } = PrefetchMode.WorkingSet;
    /// <summary>The most of the working set's head fetched before `cont`, as a fraction of what the resume fetched from the
    /// home until then (the memory image, mostly). The head itself is planned from the recorded touch times and the link's
    /// rate (<see cref="Transfer.WorkingSetHead"/>): what the replay from `cont` on could not bring in before the guest needs
    /// it. So the resume takes at most that much longer on a slow link, and the guest waits that much less in its first
    /// seconds (0: the replay starts at `cont`).</summary>
    public double WorkingSetBeforeCont { get; init; } = 1.0;
    /// <summary>Upload dirty chunks in the background at this rate while the VM runs (server homes); 0: no trickle.</summary>
    public double TrickleBytesPerSecond { get; init; } = 2_000_000;
    /// <summary>Lookaside sources to ask before the home (dongle, media, jukebox URL), besides the site's configured ones.</summary>
    public IReadOnlyList<string> Lookaside { get; init; } = [];
}

public sealed record SessionStats(
    string Parcel, string State, long BaseVersion, double ResumeSeconds, bool ColdBoot, long Misses, double GuestWaitSeconds,
    long CacheBytes, long HomeBytes, long DirtyChunks, long DirtyBytes, long MemoryImageBytes, int? QemuPid,
    IReadOnlyList<string> WaitingFor, string? Vnc)
{
    /// <summary>Wall time during which at least one guest read waited on a fetch (<see cref="GuestWaitSeconds"/> sums the
    /// reads' waits, and reads wait side by side).</summary>
    public double GuestStallSeconds { get; init; }
    /// <summary>Copy-in, prefetch, working set and trickle counters (docs: SessionTransferStats).</summary>
    public SessionTransferStats? Transfers { get; init; }
    /// <summary>Blobs the session's fetcher took from lookaside sources (all sources), and each source's counters.</summary>
    public long LookasideBytes { get; init; }
    public IReadOnlyList<Lookaside.LookasideStats>? Lookaside { get; init; }
    /// <summary>Whether the guest agent set the guest's clock after the resume (null: a cold boot, which reads the clock itself).</summary>
    public string? GuestClock { get; init; }
    /// <summary>The resume's timeline (<see cref="StepTrace"/>), from the CLI's start to <c>cont</c>.</summary>
    public IReadOnlyList<TraceStep>? Trace { get; init; }
}

/// <summary>Outcome of a suspend or sync. <see cref="Committed"/> is null while the version waits at this site for `isr checkin`.</summary>
public sealed record SuspendResult(double Seconds, long MemoryImageBytes, long MemoryImageChunks, long MemoryImageNewBytes, CheckinResult? Committed,
    string? StoppedBecause = null);

/// <summary>
/// One running parcel at this site: its disk served over NBD from the parcel disk, and QEMU using it.
/// Resume: verify history, check the descriptor against this site, start NBD, start QEMU (incoming when there is a
/// memory image), stream the image in while fetching it, then <c>cont</c>. Suspend: stream the state out of QEMU into
/// the codec, quit QEMU, flush the disk, commit a new version, clear the journal.
/// </summary>
public sealed class ParcelSession : IAsyncDisposable
{
    private readonly OpenedParcel _parcel;
    private readonly SiteDirectory _site;
    private readonly ChunkFetcher _fetcher;
    private readonly ParcelDisk _disk;
    private readonly NbdServer _nbd;
    private readonly Task _serving;
    private readonly CancellationTokenSource _stop = new();
    private readonly ChunkTag _descriptorTag;
    private VersionRecord _parent;
    private VersionRecord _base;
    private Dictionary<long, ChunkRef>? _frozenChanges;
    private QemuVm? _vm;
    private double _resumeSeconds;
    private bool _cold;
    private SessionTransfers? _transfers;
    private StepTrace? _trace;
    private int _watchingStalls;
    private volatile string? _stopped;   // why the VM is gone (guest power-off, QEMU crash), null while it runs
    private volatile string? _problem;   // why the VM is paused and will not continue by itself
    private volatile string? _guestClock; // what became of setting the guest's clock after the resume
    private static readonly TimeSpan GuestAgentTimeout = TimeSpan.FromSeconds(10);

    public string Parcel => _parcel.Name;
    public QemuVm? Vm => _vm;

    private ParcelSession(OpenedParcel parcel, SiteDirectory site, ChunkFetcher fetcher, ParcelDisk disk, VersionRecord baseVersion, ChunkTag descriptorTag)
    {
        (_parcel, _site, _fetcher, _disk, _base, _descriptorTag) = (parcel, site, fetcher, disk, baseVersion, descriptorTag);
        _parent = parcel.Head;
        Directory.CreateDirectory(site.SessionRunDirectory(parcel.Name));
        _nbd = new NbdServer(disk, "disk", new NbdServerOptions { Log = m => Console.WriteLine($"{DateTimeOffset.UtcNow:O} nbd {parcel.Name}: {m}") });
        _serving = _nbd.ServeAsync(NbdSocket, _stop.Token);
    }

    /// <summary>Reported the moment the guest runs, before the session's bookkeeping and the reply.</summary>
    public const string RunningMessage = "the VM runs";

    private string NbdSocket => Path.Combine(_site.SessionRunDirectory(_parcel.Name), "nbd.sock");
    private string QmpSocket => Path.Combine(_site.SessionRunDirectory(_parcel.Name), "qmp.sock");

    /// <param name="lookaside">Sources asked between the cache and the home; the session owns (and disposes) it.</param>
    /// <param name="fromPending">Disconnected: the version suspended here and not yet checked in, to continue from. The
    /// next suspend's version replaces it, following the same committed parent, so one check-in later sends it all.</param>
    public static async Task<ParcelSession> ResumeAsync(OpenedParcel parcel, SiteDirectory site, ResumeOptions options,
        IProgress<string>? progress, CancellationToken ct, Lookaside.LookasideChain? lookaside = null, PendingCommit? fromPending = null,
        StepTrace? trace = null)
    {
        Checkin.FinishJournalRebase(site, parcel.Name, parcel.Keys);
        if (fromPending is not null) ContinueFromPending(site, parcel, fromPending);
        long started = Stopwatch.GetTimestamp();
        // A running guest never gives up on the home: it pauses until the data arrives.
        var fetcher = new ChunkFetcher(site.Cache, parcel.Home.Chunks, Timeout.InfiniteTimeSpan, site.Space, lookaside is { IsEmpty: false } ? lookaside : null);
        var version = fromPending is not null ? fromPending.Version with { Number = fromPending.BaseVersion }
            : options.Version is long n ? parcel.Version(n) : parcel.Head;
        var descriptor = await parcel.ReadDescriptorAsync(version, fetcher, ct);
        trace?.Mark("descriptor read");
        var installation = QemuInstallation.Locate();
        var capabilities = await installation.GetCapabilitiesAsync(ct);
        trace?.Mark("qemu capabilities known");
        bool cold = options.Cold || !version.HasMemoryImage;
        var blocking = DescriptorCheck.Compare(descriptor, capabilities).Where(d => d.IsBlocking && (!cold || d.Field != DescriptorField.VmmVersion)).ToList();
        if (blocking.Count > 0)
            throw new SiteCannotRunException(
                $"this site cannot resume parcel '{parcel.Name}' version {version.Number}: {string.Join("; ", blocking)}" +
                (version.HasMemoryImage ? ". 'isr resume --cold' boots from the disk instead, discarding the memory image." : ""));

        var journalPath = site.JournalPath(parcel.Name);
        Directory.CreateDirectory(Path.GetDirectoryName(journalPath)!);
        var journal = DirtyJournal.Open(journalPath, version.Number, parcel.Keys);
        if (journal.Replayed.Count > 0 && version.HasMemoryImage && !options.Cold)
        {
            journal.Dispose();
            var why = site.ReadLocal(parcel.Name)?.Interrupted ?? "the VM stopped without a suspend";
            throw new InvalidOperationException(
                $"parcel '{parcel.Name}' has {journal.Replayed.Count} changed chunks at this site that are not in version {version.Number} " +
                $"({why}); its memory image no longer matches the disk. Use 'isr resume --cold' to boot with those changes; " +
                SiteRecovery.KeepOrDiscard(parcel.Name) + ".");
        }
        var disk = new ParcelDisk(version, parcel.Keys, parcel.Codec, fetcher, journal);
        var session = new ParcelSession(parcel, site, fetcher, disk, version, ChunkTag.Parse(version.DescriptorTag)) { _cold = cold, _trace = trace };
        trace?.Mark("journal opened, nbd serving");
        try
        {
            session._transfers = new SessionTransfers(parcel, site, fetcher, disk, version, options, m => Console.Error.WriteLine($"isr daemon: {m}"));
            if (options.Policy == TransferPolicy.Baseline) await session._transfers.CopyInAsync(progress, ct);
            var siteOptions = new QemuSiteOptions
            {
                QmpSocketPath = session.QmpSocket,
                Disk = new QemuDiskBackend.Nbd(session.NbdSocket, "disk"),
                SerialLogPath = options.SerialPath,
                SerialPipeBase = options.SerialPipe,
                Display = options.Display,
                IgnoreWindowClose = true,
                WindowEnvironment = options.DisplayEnvironment,
                Title = $"isr: {parcel.Name}",
            };
            progress?.Report(cold ? "booting from the disk" : $"loading the memory image ({version.MemoryBytes / 1e6:F1} MB)");
            long homeBytesBefore = fetcher.Counters.HomeBytes, restoreStarted = Stopwatch.GetTimestamp();
            await using var memoryImage = cold ? null : MemoryImage.StartRestore(
                ChunkListTree.ReadAllAsync(version.MemoryRootTag, version.MemoryChunks, fetcher.LoadPageAsync, parcel.Keys, ct), fetcher, parcel.Codec, ct);
            session._vm = await QemuVm.StartAsync(descriptor, siteOptions, incoming: !cold, ct);
            QemuRecord.Save(site, parcel.Name, session._vm.ProcessId, session.QmpSocket);
            trace?.Mark("qemu started, qmp connected");
            session._vm.EventReceived += session.OnVmEvent;
            session._vm.ProcessExited += session.OnVmExited;
            if (memoryImage is not null)
            {
                await session._vm.LoadStateAsync((stream, token) => memoryImage.WriteToAsync(stream, token, trace), ct);
                trace?.Mark("memory image loaded");
            }
            // The link's rate as the memory image came in, if enough of it came from the home to tell.
            long imageBytes = fetcher.Counters.HomeBytes - homeBytesBefore;
            double rate = imageBytes >= 1 << 20 ? imageBytes / Stopwatch.GetElapsedTime(restoreStarted).TotalSeconds : 0;
            if (await session._transfers.PrefetchWorkingSetHeadAsync(rate, (long)(fetcher.Counters.HomeBytes * options.WorkingSetBeforeCont), ct) is var (head, planned))
                trace?.Mark($"working-set head fetched ({planned} chunks planned{(rate > 0 ? $" at {rate * 8 / 1e6:F1} Mbit/s" : "")}, {head / 1e6:F1} MB)");
            await session._vm.ContinueAsync(ct);
            progress?.Report(RunningMessage);
            if (!cold) session.SetGuestClockInBackground();
            trace?.Mark("cont");
            trace?.MarkCost("daemon since the request");
            // The working set only after cont: alongside the memory image it shared the link with it and delayed the
            // resume (10 Mbit/s: 31 s against 17 s without it), while the guest needs none of it before it runs.
            session._transfers.StartWorkingSetReplay();
            session._transfers.StartBackground();
            var elapsed = options.CommandStarted is { } t ? DateTimeOffset.UtcNow - t : Stopwatch.GetElapsedTime(started);
            session._resumeSeconds = elapsed.TotalSeconds;
            site.UpdateLocal(parcel.Name, s => s with { LastResumeSeconds = elapsed.TotalSeconds, LastResumed = DateTimeOffset.UtcNow, LastSeenHead = parcel.Head.Number, Interrupted = null });
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    /// <summary>The journal holds the pending version's changes, which its keyring holds too: empty it so the session
    /// starts from that version. Refused if the journal has writes the pending version does not have.</summary>
    private static void ContinueFromPending(SiteDirectory site, OpenedParcel parcel, PendingCommit pending)
    {
        var path = site.JournalPath(parcel.Name);
        var known = pending.Blobs.ToHashSet();
        using (var journal = DirtyJournal.Open(path, pending.BaseVersion, parcel.Keys))
            if (journal.Replayed.Values.Any(c => !c.IsZeroChunk && !known.Contains(c.Tag.ToString())))
                throw new InvalidOperationException($"parcel '{parcel.Name}' has changes at this site made after its suspended version; " +
                    "check it in when the server can be reached, or use 'isr discard'");
        DirtyJournal.WriteEmpty(path, pending.BaseVersion);
    }

    /// <summary>
    /// Saves the memory image and the disk as a version prepared at this site, and quits QEMU. A store home commits it
    /// at once; a server home keeps it for `isr checkin` (the user may walk away as soon as this returns).
    /// </summary>
    public async Task<SuspendResult> SuspendAsync(IProgress<string>? progress, CancellationToken ct)
    {
        var vm = _vm ?? throw new InvalidOperationException("no VM is running");
        long started = Stopwatch.GetTimestamp();
        if (_transfers != null) await _transfers.StopAsync();
        IReadOnlyList<ChunkRef>? image = null;
        long newBytes = 0;
        if (_stopped is null) progress?.Report("saving the memory image");
        else progress?.Report($"{_stopped}: keeping the disk as a version without a memory image (the next resume boots from the disk)");
        try
        {
            if (_stopped is null) (image, newBytes) = await CaptureMemoryAsync(vm, ct);
            await _disk.FlushAsync(ct);
            await PrepareAsync(_disk.Freeze(), image, ct);
        }
        catch (SiteDiskFullException) when (_stopped is null && !vm.HasExited)
        {
            // QEMU still holds the state: quit it only once the version is durable here, so a full disk loses nothing.
            await vm.ContinueAsync(CancellationToken.None);
            throw;
        }
        if (_stopped is null)
        {
            vm.ProcessExited -= OnVmExited;
            await vm.QuitAsync();
        }
        await StopServingAsync();
        CheckinResult? committed = null;
        if (_parcel.Home is Homes.DirectoryParcelHome)
        {
            progress?.Report("committing a new version");
            committed = await Checkin.RunAsync(_site, _parcel.Home, _parcel.Name, releaseLock: false, null, ct);
        }
        return new SuspendResult(Stopwatch.GetElapsedTime(started).TotalSeconds, image?.Sum(c => (long)c.Length) ?? 0, image?.Count ?? 0, newBytes, committed,
            _stopped);
    }

    /// <summary>A checkpoint while the VM keeps running: pause, capture memory and freeze the dirty set, continue, then
    /// upload and commit (the lock stays).</summary>
    public async Task<SuspendResult> SyncAsync(IProgress<string>? progress, CancellationToken ct)
    {
        var vm = _vm is { HasExited: false } running ? running : throw new InvalidOperationException(_stopped ?? "no VM is running");
        long started = Stopwatch.GetTimestamp();
        progress?.Report("capturing the memory image");
        var (image, newBytes) = await CaptureMemoryAsync(vm, ct);
        await _disk.FlushAsync(ct);
        // The disk as it was with the memory image, taken before the guest runs on: a flush after cont belongs to the next version.
        var changes = _disk.Freeze();
        await vm.ContinueAsync(ct);
        await PrepareAsync(changes, image, ct);
        progress?.Report("uploading and committing");
        var frozen = _frozenChanges!;
        var committed = await Checkin.RunAsync(_site, _parcel.Home, _parcel.Name, releaseLock: false, null, ct,
            rebase: async version =>
            {
                await _disk.RebaseAsync(version, frozen, _site.JournalPath(_parcel.Name), ct);
                _base = version;
            });
        return new SuspendResult(Stopwatch.GetElapsedTime(started).TotalSeconds, image.Sum(c => (long)c.Length), image.Count, newBytes, committed);
    }

    private async Task<(IReadOnlyList<ChunkRef> Image, long NewBytes)> CaptureMemoryAsync(QemuVm vm, CancellationToken ct)
    {
        IReadOnlyList<ChunkRef> image = [];
        long newBytes = 0;
        await vm.SaveStateAsync(async (stream, token) =>
            image = await MemoryImage.CaptureAsync(stream, _parcel.Codec, async (tag, blob, t) =>
            {
                if (!_site.DurableCache.Contains(tag)) Interlocked.Add(ref newBytes, blob.Length);
                await _fetcher.Space.PutDirtyAsync(tag, blob, _fetcher.Home, $"saving the memory image of '{_parcel.Name}'",
                    "Nothing was committed and nothing the guest flushed is lost; the VM goes on running.", t);
            }, token), ct);
        KillPoint.Reach("session.after-memory-image");
        return (image, newBytes);
    }

    /// <summary>Signs the next version from the frozen dirty set and the image, and records it durably as pending.</summary>
    private async Task PrepareAsync((Dictionary<long, ChunkRef> Changes, long JournalBytes) frozen, IReadOnlyList<ChunkRef>? image, CancellationToken ct)
    {
        _frozenChanges = frozen.Changes;
        var workingSet = _transfers is null ? null : await _transfers.SealWorkingSetAsync(ct);
        _parent = await PrepareVersionAsync(_parcel, _site, _fetcher, _base, _parent, frozen, image, _descriptorTag, workingSet, ct);
    }

    private static async Task<VersionRecord> PrepareVersionAsync(OpenedParcel parcel, SiteDirectory site, ChunkFetcher fetcher, VersionRecord baseVersion,
        VersionRecord parent, (Dictionary<long, ChunkRef> Changes, long JournalBytes) frozen, IReadOnlyList<ChunkRef>? image, ChunkTag descriptorTag,
        ChunkTag? workingSet, CancellationToken ct)
    {
        var changes = frozen.Changes;
        var prepared = await Committer.PrepareAsync(parcel, site, fetcher, baseVersion, changes, image, descriptorTag, parent,
            Guid.NewGuid().ToString("N"), ct, workingSet);
        var blobs = changes.Values.Where(c => !c.IsZeroChunk).Select(c => c.Tag).Concat(image?.Select(c => c.Tag) ?? [])
            .Concat(prepared.PageTags).Append(descriptorTag).Concat(workingSet is { } w ? [w] : []).Distinct().Select(t => t.ToString()).ToList();
        // Continuing a version that was never checked in (disconnected): the new one replaces it and still needs its blobs.
        if (PendingCommit.Load(site.PendingCommitPath(parcel.Name)) is { } earlier && earlier.Version.Mac == baseVersion.Mac)
            blobs = blobs.Union(earlier.Blobs).ToList();
        new PendingCommit(prepared.Version, blobs, baseVersion.Number, changes.Select(c => new PendingChange(c.Key, c.Value.Tag.ToString())).ToList(),
            frozen.JournalBytes).Save(site.PendingCommitPath(parcel.Name));
        KillPoint.Reach("session.after-pending-commit");
        return prepared.Version;
    }

    /// <summary>
    /// The VM stopped without a suspend and its session is gone (the daemon was killed): prepares the disk the guest
    /// flushed, as the journal holds it, as a version without a memory image, as a suspend does after a QEMU crash.
    /// </summary>
    public static async Task<SuspendResult> KeepStoppedAsync(OpenedParcel parcel, SiteDirectory site, string why, IProgress<string>? progress, CancellationToken ct)
    {
        long started = Stopwatch.GetTimestamp();
        if (File.Exists(site.PendingCommitPath(parcel.Name)))
            throw new InvalidOperationException($"parcel '{parcel.Name}' has a version suspended at this site that is not checked in: run 'isr checkin {parcel.Name}' first");
        progress?.Report($"{why}: keeping the disk as a version without a memory image (the next resume boots from the disk)");
        var journalPath = site.JournalPath(parcel.Name);
        Checkin.FinishJournalRebase(site, parcel.Name, parcel.Keys);
        var baseVersion = parcel.Version(DirtyJournal.PeekBaseVersion(journalPath) ?? parcel.Head.Number);
        (Dictionary<long, ChunkRef>, long) frozen;
        using (var journal = DirtyJournal.Open(journalPath, baseVersion.Number, parcel.Keys)) frozen = (new(journal.Replayed), journal.Length);
        using var fetcher = new ChunkFetcher(site.Cache, parcel.Home.Chunks, space: site.Space);
        await PrepareVersionAsync(parcel, site, fetcher, baseVersion, parcel.Head, frozen, null, ChunkTag.Parse(baseVersion.DescriptorTag), null, ct);
        site.UpdateLocal(parcel.Name, s => s with { Interrupted = null });
        CheckinResult? committed = null;
        if (parcel.Home is Homes.DirectoryParcelHome)
        {
            progress?.Report("committing a new version");
            committed = await Checkin.RunAsync(site, parcel.Home, parcel.Name, releaseLock: false, null, ct);
        }
        return new SuspendResult(Stopwatch.GetElapsedTime(started).TotalSeconds, 0, 0, 0, committed, why);
    }

    public SessionStats Stats() => new(
        _parcel.Name, State, _base.Number, _resumeSeconds, _cold, _disk.Misses,
        _disk.GuestWaitTime.TotalSeconds, _fetcher.Counters.CacheBytes, _fetcher.Counters.HomeBytes, _disk.DirtyChunks, _disk.DirtyBytes,
        _base.MemoryBytes, _vm?.ProcessId,
        _fetcher.Stalls.Select(w => $"chunk {w.Tag} since {w.Since:u} ({w.Attempts} attempts): {w.LastError}").ToList(), _vm?.Vnc?.ToString())
        { GuestStallSeconds = _disk.GuestStallTime.TotalSeconds, GuestClock = _guestClock, Transfers = _transfers?.Stats(), LookasideBytes = _fetcher.Counters.LookasideBytes, Lookaside = _fetcher.Lookaside?.Stats, Trace = _trace?.Steps };

    private string State =>
        _stopped ?? _problem ?? (_fetcher.Stalls.Count > 0 ? $"paused: waiting for {_fetcher.Stalls.Count} chunks from {_parcel.Home.Describe}; continues by itself when they arrive"
            : _vm is { HasExited: false } ? "running" : "stopped");

    /// <summary>
    /// The guest's clock stood still while it was suspended: after the memory image is loaded it runs on from the
    /// moment of the suspend. A guest agent, if the guest runs one, sets it to the site's time; never waited for.
    /// </summary>
    private void SetGuestClockInBackground()
    {
        if (_vm?.GuestAgentSocketPath is not { } socket)
        {
            _guestClock = "not set: this parcel's VM has no guest agent port (it was created without one)";
            return;
        }
        _guestClock = "being set through the guest agent";
        _ = Task.Run(async () =>
        {
            try
            {
                await QemuGuestAgent.SetTimeAsync(socket, DateTimeOffset.UtcNow, GuestAgentTimeout, _stop.Token);
                _guestClock = $"set to the site's time by the guest agent at {DateTimeOffset.UtcNow:u}";
            }
            catch (Exception e) when (e is TimeoutException or IOException or System.Net.Sockets.SocketException or QemuGuestAgentException
                or System.Text.Json.JsonException)
            {
                _guestClock = $"not set: {e.Message}";
            }
            catch (OperationCanceledException) { return; }
            Console.WriteLine($"{DateTimeOffset.UtcNow:O} session {Parcel}: guest clock {_guestClock}");
        });
    }

    /// <summary>A read failed (home unreachable, or a chunk that fails verification): QEMU paused the VM (rerror=stop).
    /// Watch the fetches and continue the VM when they have landed; QEMU then retries the read.</summary>
    private void OnVmEvent(object? sender, QmpEvent e)
    {
        if (e.Name != "BLOCK_IO_ERROR" || Interlocked.Exchange(ref _watchingStalls, 1) == 1) return;
        _ = Task.Run(WatchStallsAsync);
    }

    private async Task WatchStallsAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested && _vm is { HasExited: false } vm)
            {
                await Task.Delay(500, _stop.Token);
                if (_fetcher.Failures.Count > 0)
                {
                    var (tag, why) = _fetcher.Failures.First();
                    _problem = $"paused: chunk {tag} of parcel '{_parcel.Name}' failed verification at every source ({why}); the guest was not given it";
                    continue;
                }
                if (_fetcher.Stalls.Count > 0) continue;
                if (await vm.QueryStatusAsync(_stop.Token) == "io-error") await vm.ContinueAsync(_stop.Token);
                return;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or QmpConnectionClosedException or QemuVmException) { }
        finally
        {
            Interlocked.Exchange(ref _watchingStalls, 0);
        }
    }

    private void OnVmExited(object? sender, QemuExitedEventArgs e)
    {
        _stopped = e.Reason switch
        {
            QemuExitReason.GuestPoweredOff => "the guest powered off",
            _ => $"QEMU stopped unexpectedly (exit code {e.ExitCode}): {e.OutputTail.Trim()}",
        };
        // Keep everything the guest wrote: journal it now, as a FLUSH would.
        _ = _disk.FlushAsync(CancellationToken.None).AsTask().ContinueWith(_ => { }, TaskScheduler.Default);
    }

    private async Task StopServingAsync()
    {
        _stop.Cancel();
        try { await _serving; } catch (OperationCanceledException) { }
        await _nbd.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_transfers != null) await _transfers.DisposeAsync();
        _fetcher.Dispose();
        _fetcher.Lookaside?.Dispose();
        if (_vm != null) await _vm.DisposeAsync();
        QemuRecord.Delete(_site, Parcel);
        if (!_stop.IsCancellationRequested) await StopServingAsync();
        _disk.Dispose();
    }
}

/// <summary>This site cannot run the parcel's VM as recorded (its QEMU, machine types or accelerators differ).</summary>
public sealed class SiteCannotRunException(string message) : Exception(message);
