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
    /// <summary>Boot from the disk, discarding the memory image (after the user confirmed).</summary>
    public bool Cold { get; init; }
    /// <summary>Resume this version instead of the head (the new version will still follow the head).</summary>
    public long? Version { get; init; }
    /// <summary>When the user's command started, so resume latency covers the whole command.</summary>
    public DateTimeOffset? CommandStarted { get; init; }
}

public sealed record SessionStats(
    string Parcel, string State, long BaseVersion, double ResumeSeconds, bool ColdBoot, long Misses, double GuestWaitSeconds,
    long CacheBytes, long HomeBytes, long DirtyChunks, long DirtyBytes, long MemoryImageBytes, int? QemuPid);

/// <summary>Outcome of a suspend or sync. <see cref="Committed"/> is null while the version waits at this site for `isr checkin`.</summary>
public sealed record SuspendResult(double Seconds, long MemoryImageBytes, long MemoryImageChunks, long MemoryImageNewBytes, CheckinResult? Committed);

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

    public string Parcel => _parcel.Name;
    public QemuVm? Vm => _vm;

    private ParcelSession(OpenedParcel parcel, SiteDirectory site, ChunkFetcher fetcher, ParcelDisk disk, VersionRecord baseVersion, ChunkTag descriptorTag)
    {
        (_parcel, _site, _fetcher, _disk, _base, _descriptorTag) = (parcel, site, fetcher, disk, baseVersion, descriptorTag);
        _parent = parcel.Head;
        Directory.CreateDirectory(site.SessionRunDirectory(parcel.Name));
        _nbd = new NbdServer(disk, "disk");
        _serving = _nbd.ServeAsync(NbdSocket, _stop.Token);
    }

    private string NbdSocket => Path.Combine(_site.SessionRunDirectory(_parcel.Name), "nbd.sock");
    private string QmpSocket => Path.Combine(_site.SessionRunDirectory(_parcel.Name), "qmp.sock");

    public static async Task<ParcelSession> ResumeAsync(OpenedParcel parcel, SiteDirectory site, ResumeOptions options,
        IProgress<string>? progress, CancellationToken ct)
    {
        long started = Stopwatch.GetTimestamp();
        var fetcher = new ChunkFetcher(site.Cache, parcel.Home.Chunks);
        var version = options.Version is long n ? parcel.Version(n) : parcel.Head;
        var descriptor = await parcel.ReadDescriptorAsync(version, fetcher, ct);
        var installation = QemuInstallation.Locate();
        var capabilities = await installation.GetCapabilitiesAsync(ct);
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
            throw new InvalidOperationException(
                $"parcel '{parcel.Name}' has {journal.Replayed.Count} changed chunks at this site that are not in version {version.Number} " +
                "(the VM stopped without a suspend); its memory image no longer matches the disk. Use 'isr resume --cold' to boot with those changes, or 'isr discard' to drop them.");
        }
        var disk = new ParcelDisk(version, parcel.Keys, parcel.Codec, fetcher, journal);
        var session = new ParcelSession(parcel, site, fetcher, disk, version, ChunkTag.Parse(version.DescriptorTag)) { _cold = cold };
        try
        {
            var siteOptions = new QemuSiteOptions
            {
                QmpSocketPath = session.QmpSocket,
                Disk = new QemuDiskBackend.Nbd(session.NbdSocket, "disk"),
                SerialLogPath = options.SerialPath,
                Display = options.Display,
            };
            progress?.Report(cold ? "booting from the disk" : $"loading the memory image ({version.MemoryBytes / 1e6:F1} MB)");
            session._vm = await QemuVm.StartAsync(descriptor, siteOptions, incoming: !cold, ct);
            if (!cold)
            {
                var chunks = ChunkListTree.ReadAllAsync(version.MemoryRootTag, version.MemoryChunks, fetcher.LoadPageAsync, parcel.Keys, ct);
                await session._vm.LoadStateAsync((stream, token) => MemoryImage.RestoreAsync(chunks, fetcher, parcel.Codec, stream, token), ct);
            }
            await session._vm.ContinueAsync(ct);
            var elapsed = options.CommandStarted is { } t ? DateTimeOffset.UtcNow - t : Stopwatch.GetElapsedTime(started);
            session._resumeSeconds = elapsed.TotalSeconds;
            site.UpdateLocal(parcel.Name, s => s with { LastResumeSeconds = elapsed.TotalSeconds, LastResumed = DateTimeOffset.UtcNow, LastSeenHead = parcel.Head.Number });
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Saves the memory image and the disk as a version prepared at this site, and quits QEMU. A store home commits it
    /// at once; a server home keeps it for `isr checkin` (the user may walk away as soon as this returns).
    /// </summary>
    public async Task<SuspendResult> SuspendAsync(IProgress<string>? progress, CancellationToken ct)
    {
        var vm = _vm ?? throw new InvalidOperationException("no VM is running");
        long started = Stopwatch.GetTimestamp();
        progress?.Report("saving the memory image");
        var (image, newBytes) = await CaptureMemoryAsync(vm, ct);
        await vm.QuitAsync();
        await _disk.FlushAsync(ct);
        await PrepareAsync(image, ct);
        await StopServingAsync();
        CheckinResult? committed = null;
        if (_parcel.Home is Homes.DirectoryParcelHome)
        {
            progress?.Report("committing a new version");
            committed = await Checkin.RunAsync(_site, _parcel.Home, _parcel.Name, releaseLock: false, null, ct);
        }
        return new SuspendResult(Stopwatch.GetElapsedTime(started).TotalSeconds, image.Sum(c => (long)c.Length), image.Count, newBytes, committed);
    }

    /// <summary>A checkpoint while the VM keeps running: pause, capture memory and freeze the dirty set, continue, then
    /// upload and commit (the lock stays).</summary>
    public async Task<SuspendResult> SyncAsync(IProgress<string>? progress, CancellationToken ct)
    {
        var vm = _vm ?? throw new InvalidOperationException("no VM is running");
        long started = Stopwatch.GetTimestamp();
        progress?.Report("capturing the memory image");
        var (image, newBytes) = await CaptureMemoryAsync(vm, ct);
        await _disk.FlushAsync(ct);
        await vm.ContinueAsync(ct);
        await PrepareAsync(image, ct);
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
                await _site.DurableCache.PutAsync(tag, blob, t);
            }, token), ct);
        return (image, newBytes);
    }

    /// <summary>Signs the next version from the frozen dirty set and the image, and records it durably as pending.</summary>
    private async Task PrepareAsync(IReadOnlyList<ChunkRef> image, CancellationToken ct)
    {
        var changes = new Dictionary<long, ChunkRef>(_disk.FlushedChanges);
        _frozenChanges = changes;
        var prepared = await Committer.PrepareAsync(_parcel, _site, _fetcher, _base, changes, image, _descriptorTag, _parent,
            Guid.NewGuid().ToString("N"), ct);
        var blobs = changes.Values.Where(c => !c.IsZeroChunk).Select(c => c.Tag).Concat(image.Select(c => c.Tag))
            .Concat(prepared.PageTags).Append(_descriptorTag).Distinct().Select(t => t.ToString()).ToList();
        new PendingCommit(prepared.Version, blobs, _base.Number).Save(_site.PendingCommitPath(_parcel.Name));
        _parent = prepared.Version;
    }

    public SessionStats Stats() => new(
        _parcel.Name, _vm is { HasExited: false } ? "running" : "stopped", _base.Number, _resumeSeconds, _cold, _disk.Misses,
        _disk.GuestWaitTime.TotalSeconds, _fetcher.Counters.CacheBytes, _fetcher.Counters.HomeBytes, _disk.DirtyChunks, _disk.DirtyBytes,
        _base.MemoryBytes, _vm?.ProcessId);

    private async Task StopServingAsync()
    {
        _stop.Cancel();
        try { await _serving; } catch (OperationCanceledException) { }
        await _nbd.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_vm != null) await _vm.DisposeAsync();
        if (!_stop.IsCancellationRequested) await StopServingAsync();
        _disk.Dispose();
    }
}

/// <summary>This site cannot run the parcel's VM as recorded (its QEMU, machine types or accelerators differ).</summary>
public sealed class SiteCannotRunException(string message) : Exception(message);
