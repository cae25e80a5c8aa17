using System.Text.Json;
using System.Text.Json.Serialization;
using Isr.Client.Transfer;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Lookaside;

/// <summary>What a dongle says about one parcel written to it (keyless: the version record is authenticated, not secret).</summary>
public sealed record DongleParcel(string Parcel, string ParcelId, long Version, string CommitId, DateTimeOffset Written, int Blobs);

/// <param name="Written">Blobs copied to the dongle by this run.</param>
/// <param name="AlreadyThere">Blobs the dongle held already (not rewritten).</param>
/// <param name="Bytes">Bytes copied by this run.</param>
public sealed record DongleWriteResult(string Path, string Parcel, long Version, int Blobs, int Written, int AlreadyThere, long Bytes);

/// <summary>
/// A removable medium holding ciphertext blobs of parcels, to be read at a resume where the network is poor (a
/// lookaside source, so only a hint). Self-describing and written incrementally: blobs already on it are not rewritten.
/// <code>
/// DIR/isr-dongle.json   {"format":"isr-dongle-1", "parcels":[{parcel, parcelId, version, commitId, written, blobs}]}
/// DIR/index             "ISRD" ‖ u8 1, then 32-byte tags appended (a torn last tag is ignored)
/// DIR/chunks/ab/cd/…    the blobs (DirectoryChunkStore layout)
/// </code>
/// It holds only ciphertext blobs and keyless metadata: the same that the parcel's server holds.
/// </summary>
public sealed class Dongle
{
    public const string Format = "isr-dongle-1";
    private static readonly byte[] IndexHeader = "ISRD\u0001"u8.ToArray();
    /// <summary>What isr-dongle.json holds (internal for <see cref="DongleJsonContext"/>).</summary>
    internal sealed record Manifest(string Format, string Description, List<DongleParcel> Parcels);

    public string Root { get; }
    private string ManifestPath => System.IO.Path.Combine(Root, "isr-dongle.json");
    private string IndexPath => System.IO.Path.Combine(Root, "index");
    private string ChunksPath => System.IO.Path.Combine(Root, "chunks");

    private Dongle(string root) => Root = System.IO.Path.GetFullPath(root);

    public static bool IsDongle(string path) => File.Exists(System.IO.Path.Combine(path, "isr-dongle.json"));

    /// <summary>An existing dongle (throws <see cref="InvalidDataException"/> when PATH is not one), or a new one in an empty or absent directory.</summary>
    public static Dongle Open(string path, bool create = false)
    {
        var dongle = new Dongle(path);
        if (IsDongle(path))
        {
            dongle.ReadManifest();
            return dongle;
        }
        if (!create) throw new InvalidDataException($"{path} is not an isr dongle (no isr-dongle.json)");
        if (Directory.Exists(path) && Directory.EnumerateFileSystemEntries(path).Any())
            throw new InvalidDataException($"{path} is neither an isr dongle nor empty: refusing to write into it");
        Directory.CreateDirectory(path);
        File.WriteAllBytes(dongle.IndexPath, IndexHeader);
        dongle.WriteManifest(new Manifest(Format, "Ciphertext blobs of isr parcels by tag, for `isr resume --lookaside`", []));
        return dongle;
    }

    public IReadOnlyList<DongleParcel> Parcels => ReadManifest().Parcels;

    private Manifest ReadManifest()
    {
        Manifest? manifest;
        try { manifest = JsonSerializer.Deserialize(File.ReadAllBytes(ManifestPath), DongleJsonContext.Default.Manifest); }
        catch (JsonException e) { throw new InvalidDataException($"{ManifestPath} is malformed: {e.Message}"); }
        if (manifest?.Format != Format) throw new InvalidDataException($"{Root} is a dongle of an unknown format '{manifest?.Format}' (this isr reads {Format})");
        return manifest;
    }

    private void WriteManifest(Manifest manifest) => Durable.WriteFileAtomically(ManifestPath, JsonSerializer.SerializeToUtf8Bytes(manifest, DongleJsonContext.Default.Manifest));

    /// <summary>The tags the index lists (a torn last entry, or a missing index, gives fewer: they are only hints).</summary>
    public HashSet<ChunkTag> ReadIndex()
    {
        var tags = new HashSet<ChunkTag>();
        if (!File.Exists(IndexPath)) return tags;
        var bytes = File.ReadAllBytes(IndexPath);
        if (bytes.Length < IndexHeader.Length || !bytes.AsSpan(0, IndexHeader.Length).SequenceEqual(IndexHeader)) return tags;
        for (int at = IndexHeader.Length; at + Hash32.Size <= bytes.Length; at += Hash32.Size)
            tags.Add(new ChunkTag(new Hash32(bytes.AsSpan(at, Hash32.Size))));
        return tags;
    }

    public DirectoryChunkStore Chunks => new(ChunksPath);

    /// <summary>
    /// Copies the blobs a resume of <paramref name="version"/> needs first, from <paramref name="get"/> (the site cache,
    /// then the home): its sealed metadata, every page, the memory image, and the disk chunks not in
    /// <paramref name="since"/> (the version it was made from; all disk chunks when null). Blobs listed already are skipped.
    /// </summary>
    public async Task<DongleWriteResult> WriteAsync(string parcel, string parcelId, VersionRecord version, VersionRecord? since,
        Hoarder lister, Func<ChunkTag, CancellationToken, Task<byte[]>> get, IProgress<(int Done, int Total)>? progress, CancellationToken ct)
    {
        var blobs = await lister.ListAsync(version, ct);
        var old = since is null ? [] : (await lister.ListAsync(since, ct)).DiskChunks.ToHashSet();
        var wanted = blobs.Sealed.Concat(blobs.Pages).Concat(blobs.MemoryChunks).Concat(blobs.DiskChunks.Where(t => !old.Contains(t)))
            .Where(t => !t.IsZeroChunk).Distinct().ToList();
        var present = ReadIndex();
        var store = Chunks;
        int written = 0, done = 0;
        long bytes = 0;
        await using (var index = new FileStream(IndexPath, FileMode.Append, FileAccess.Write))
        {
            foreach (var tag in wanted)
            {
                progress?.Report((done++, wanted.Count));
                if (present.Contains(tag) && store.Contains(tag)) continue;
                var blob = await get(tag, ct);
                if (!tag.Matches(blob)) throw new ChunkIntegrityException($"chunk {tag} does not match its tag: not written to the dongle");
                await store.PutAsync(tag, blob, ct);
                index.Write(tag.Hash.ToArray());
                written++;
                bytes += blob.Length;
            }
            index.Flush(flushToDisk: true);
        }
        progress?.Report((wanted.Count, wanted.Count));
        var manifest = ReadManifest();
        manifest.Parcels.RemoveAll(p => p.ParcelId == parcelId);
        manifest.Parcels.Add(new DongleParcel(parcel, parcelId, version.Number, version.CommitId, DateTimeOffset.UtcNow, wanted.Count));
        WriteManifest(manifest);
        return new DongleWriteResult(Root, parcel, version.Number, wanted.Count, written, wanted.Count - written, bytes);
    }
}

/// <summary>A dongle as a lookaside source: "don't have" is answered from the index in memory, without touching the medium.</summary>
public sealed class DongleSource(Dongle dongle) : ILookasideSource
{
    private readonly HashSet<ChunkTag> _index = dongle.ReadIndex();
    private readonly DirectoryChunkStore _chunks = dongle.Chunks;

    public string Name => $"dongle {dongle.Root}";

    public async ValueTask<byte[]?> TryGetAsync(ChunkTag tag, CancellationToken ct) =>
        _index.Contains(tag) ? await _chunks.GetAsync(tag, ct) : null;

    public void Dispose() { }
}

/// <summary>
/// Writes a parcel's latest state to a dongle: the version suspended here and not yet checked in, else the home's head.
/// A suspended version needs no server: its own blobs are all at this site, and the version it follows is in the
/// history saved here at the last connected resume, so the dongle can be written disconnected.
/// </summary>
public static class DongleWriter
{
    public static async Task<DongleWriteResult> WriteParcelAsync(Site.SiteDirectory site, Homes.IParcelHome home, string parcel, string path,
        IProgress<(int Done, int Total)>? progress, CancellationToken ct)
    {
        var dongle = Dongle.Open(path, create: true);
        var hoarder = new Hoarder(site.Cache, home.Chunks);
        var pending = Session.PendingCommit.Load(site.PendingCommitPath(parcel));
        var versions = pending is not null && Homes.OfflineHome.SavedVersions(site, parcel) is { } saved ? saved : await home.ListVersionsAsync(parcel, ct);
        var version = pending?.Version ?? versions.Last(v => !v.Side);
        long? sinceNumber = pending is not null ? pending.BaseVersion : version.Parent;
        var since = sinceNumber is long n ? versions.FirstOrDefault(v => v.Number == n) : null;
        async Task<byte[]> Get(ChunkTag tag, CancellationToken token) =>
            await site.Cache.GetAsync(tag, token) is { } cached && tag.Matches(cached) ? cached : await hoarder.FetchAsync(tag, token);
        return await dongle.WriteAsync(parcel, version.ParcelId, version, since, hoarder, Get, progress, ct);
    }
}

/// <summary>A dongle's manifest, indented for a reader.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(Dongle.Manifest))]
internal sealed partial class DongleJsonContext : JsonSerializerContext;
