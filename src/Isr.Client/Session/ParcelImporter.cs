using System.Diagnostics;
using System.Text.Json;
using Isr.BlockDevice;
using Isr.Client.Cache;
using Isr.Client.Disk;
using Isr.Client.Homes;
using Isr.Client.Site;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Vmm;

namespace Isr.Client.Session;

/// <summary>
/// Imports an existing VM image (raw, qcow2, vmdk… anything qemu-img reads) as a new parcel. qemu-img writes the image
/// into a parcel disk over an all-zero base through our own NBD server, so the plaintext never touches the site's disk:
/// chunks are encrypted as they arrive, zero areas are skipped, and the first version is committed like any other.
/// </summary>
public static class ParcelImporter
{
    public const int DefaultChunkSize = 64 << 10;

    public static async Task<VersionRecord> ImportAsync(IParcelHome home, UserSecrets secrets, SiteDirectory site, string name,
        string imagePath, int chunkSize, VmDescriptor descriptor, IProgress<double>? progress, CancellationToken ct)
    {
        DirectoryParcelHome.ValidName(name);
        if (chunkSize < 4096 || chunkSize > (4 << 20) || !int.IsPow2(chunkSize)) throw new ArgumentException("chunk size must be a power of two from 4 KiB to 4 MiB");
        if (!File.Exists(imagePath)) throw new FileNotFoundException($"no image at {imagePath}");
        if ((await home.ListParcelsAsync(ct)).Any(p => p.Name == name)) throw new CommitConflictException($"parcel '{name}' already exists in {home.Describe}");
        long size = await VirtualSizeAsync(imagePath, ct);

        var keys = ParcelKeys.Generate();
        var id = Guid.NewGuid().ToString("N");
        var info = new ParcelInfo(name, id, chunkSize, size, secrets.WrapParcelKey(keys, id), DateTimeOffset.UtcNow);
        var parcel = new OpenedParcel { Home = home, Info = info, Keys = keys, Codec = new ChunkCodec(secrets.DomainSecret), Versions = [] };
        var fetcher = new ChunkFetcher(site.Cache, home.Chunks);

        // The all-zero base: its pages are shared by every untouched range of the first version.
        long chunks = (size + chunkSize - 1) / chunkSize;
        var zeroRefs = Enumerable.Range(0, (int)chunks).Select(i => ChunkRef.Zero((int)Math.Min(chunkSize, size - (long)i * chunkSize))).ToList();
        var zeroTree = ChunkListTree.Build(zeroRefs, keys);
        foreach (var (tag, page) in zeroTree.NewPages) await site.DurableCache.PutAsync(tag, page, ct);
        var zeroBase = new VersionRecord
        {
            ParcelId = info.Id, Number = 0, Created = info.Created, ChunkSize = chunkSize, DiskSize = size,
            DiskRoot = zeroTree.Root.ToString(), DescriptorTag = "",
        };

        var journalPath = Path.Combine(site.ParcelDirectory(name), "import.journal");
        Directory.CreateDirectory(Path.GetDirectoryName(journalPath)!);
        File.Delete(journalPath);
        var (descriptorTag, descriptorBlob) = OpenedParcel.SealDescriptor(descriptor, keys, info.Id);
        await site.DurableCache.PutAsync(descriptorTag, descriptorBlob, ct);
        using (var disk = new ParcelDisk(zeroBase, keys, parcel.Codec, fetcher, DirtyJournal.Open(journalPath, 0, keys)))
        {
            await WriteImageAsync(disk, imagePath, site.SessionRunDirectory(name), progress, ct);
            await disk.FlushAsync(ct);
            var prepared = await Committer.PrepareAsync(parcel, site, fetcher, zeroBase, disk.FlushedChanges, null, descriptorTag, parent: null,
                Guid.NewGuid().ToString("N"), ct);
            var blobs = disk.FlushedChanges.Values.Where(c => !c.IsZeroChunk).Select(c => c.Tag)
                .Concat(prepared.PageTags).Concat(zeroTree.NewPages.Select(p => p.Tag)).Append(descriptorTag).ToHashSet();
            await Uploader.UploadMissingAsync(site.Cache, home.Chunks, blobs, null, ct);
            var first = await home.CreateParcelAsync(info, prepared.Version, ct);
            File.Delete(journalPath);
            site.UpdateLocal(name, s => s with { LastSeenHead = first.Number });
            return first;
        }
    }

    private static async Task WriteImageAsync(ParcelDisk disk, string imagePath, string runDirectory, IProgress<double>? progress, CancellationToken ct)
    {
        Directory.CreateDirectory(runDirectory);
        var socket = Path.Combine(runDirectory, "import.sock");
        await using var server = new NbdServer(disk, "import");
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var serving = server.ServeAsync(socket, stop.Token);
        try
        {
            // -n: write into our existing export; --target-is-zero: skip zero areas (never stored); -W: out-of-order writes.
            await ExternalTool.RunAsync("qemu-img",
                ["convert", "-p", "-n", "--target-is-zero", "-W", "-m", "8", "-O", "raw", imagePath, $"nbd+unix:///import?socket={socket}"],
                line => { if (TryParseProgress(line) is double p) progress?.Report(p); }, ct);
        }
        finally
        {
            stop.Cancel();
            try { await serving; } catch (OperationCanceledException) { }
        }
    }

    private static double? TryParseProgress(string line)
    {
        int open = line.LastIndexOf('('), slash = line.IndexOf("/100%", StringComparison.Ordinal);
        return open >= 0 && slash > open && double.TryParse(line[(open + 1)..slash], System.Globalization.CultureInfo.InvariantCulture, out var p) ? p / 100 : null;
    }

    public static async Task<long> VirtualSizeAsync(string imagePath, CancellationToken ct)
    {
        var json = await ExternalTool.RunAsync("qemu-img", ["info", "--output=json", imagePath], null, ct);
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("virtual-size").GetInt64();
    }
}

/// <summary>Runs a helper program (qemu-img) with a timeout-free cancellation, returning stdout; a failure carries its stderr.</summary>
public static class ExternalTool
{
    public static async Task<string> RunAsync(string program, IReadOnlyList<string> args, Action<string>? onOutputChunk, CancellationToken ct)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {program}");
        using var kill = ct.Register(() => { try { process.Kill(true); } catch (InvalidOperationException) { } });
        var stderr = process.StandardError.ReadToEndAsync(ct);
        var stdout = new System.Text.StringBuilder();
        var buffer = new char[4096];
        int n;
        while ((n = await process.StandardOutput.ReadAsync(buffer, ct)) > 0)
        {
            var text = new string(buffer, 0, n);
            stdout.Append(text);
            onOutputChunk?.Invoke(text);
        }
        await process.WaitForExitAsync(ct);
        if (process.ExitCode != 0) throw new InvalidOperationException($"{program} failed ({process.ExitCode}): {(await stderr).Trim()}");
        return stdout.ToString();
    }
}
