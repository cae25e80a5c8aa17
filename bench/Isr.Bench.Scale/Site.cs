using System.Buffers.Binary;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Isr.Client.Homes;
using Isr.Format;

namespace Isr.Bench.Scale;

public sealed record SiteWorkload(int ChunkSize, int ChunksPerCommit, int DownloadsPerCycle);

/// <summary>Totals over all sites of one run.</summary>
public sealed class LoadTotals
{
    public readonly Latency Missing = new("missing"), Upload = new("upload"), Commit = new("commit"), Download = new("download");
    private long _uploaded, _downloaded, _commits, _errors;
    public long UploadedBytes => Interlocked.Read(ref _uploaded);
    public long DownloadedBytes => Interlocked.Read(ref _downloaded);
    public long Commits => Interlocked.Read(ref _commits);
    public long Errors => Interlocked.Read(ref _errors);
    public string? FirstError { get; private set; }

    public void AddUploaded(long bytes) => Interlocked.Add(ref _uploaded, bytes);
    public void AddDownloaded(long bytes) => Interlocked.Add(ref _downloaded, bytes);
    public void AddCommit() => Interlocked.Increment(ref _commits);
    public void AddError(Exception e)
    {
        if (Interlocked.Increment(ref _errors) == 1) FirstError = $"{e.GetType().Name}: {e.Message}";
    }
}

/// <summary>
/// One simulated site, through the real client library (<see cref="ServerParcelHome"/>): it logs in, creates a parcel
/// and locks it, then repeats a check-in cycle — ask which of K fresh chunks are missing, upload them in one batch,
/// commit a version whose keyring tree references them — and after each cycle downloads D chunks it stored earlier
/// (a resume's demand fetches) in one batch request. Blobs are random bytes of the chunk size: the server only ever
/// sees ciphertext, so its work is the same as for encrypted chunks.
/// </summary>
public sealed class Site(int index, string url, string fingerprint, string user, string password, SiteWorkload work, LoadTotals totals)
{
    private readonly List<ChunkTag> _stored = [];
    private readonly Random _rng = new(index);

    public async Task RunAsync(DateTime until, CancellationToken ct)
    {
        var siteId = $"site-{index}";
        var (login, _) = await ServerParcelHome.LoginAsync(url, user, password, fingerprint, _ => false, siteId, siteId, ct);
        using var home = new ServerParcelHome(login);
        var secrets = await home.UnlockAsync(password, ct);
        var keys = ParcelKeys.Generate();
        var parcelId = Guid.NewGuid().ToString("N");
        const string name = "bench";
        var chunks = (IBatchChunkStore)home.Chunks;

        var first = MakeVersion(keys, parcelId, parentMac: "");
        await chunks.PutBatchAsync(first.Blobs, ct);
        var head = await home.CreateParcelAsync(new ParcelInfo(name, parcelId, work.ChunkSize, first.DiskSize,
            secrets.WrapParcelKey(keys, parcelId), DateTimeOffset.UtcNow), first.Record, ct);
        _stored.AddRange(first.ChunkTags);
        home.LockToken = await home.AcquireLockAsync(name, siteId, siteId, ct);

        for (long cycle = 0; DateTime.UtcNow < until && cycle < 1_000_000; cycle++)
        {
            try
            {
                var next = MakeVersion(keys, parcelId, head.Mac);
                var missing = await totals.Missing.TimeAsync(async () => await chunks.MissingAsync(next.Blobs.Select(b => b.Tag).ToList(), ct));
                var wanted = missing.ToHashSet();
                var upload = next.Blobs.Where(b => wanted.Contains(b.Tag)).ToList();
                await totals.Upload.TimeAsync(async () => { await chunks.PutBatchAsync(upload, ct); return 0; });
                totals.AddUploaded(upload.Sum(b => (long)b.Blob.Length));
                head = await totals.Commit.TimeAsync(async () => await home.CommitAsync(name, next.Record, ct));
                totals.AddCommit();
                _stored.AddRange(next.ChunkTags);

                var fetch = Enumerable.Range(0, work.DownloadsPerCycle).Select(_ => _stored[_rng.Next(_stored.Count)]).ToList();
                totals.AddDownloaded(await totals.Download.TimeAsync(() => DownloadAsync(home.Connection, fetch, ct)));
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                totals.AddError(e);
            }
        }
    }

    private sealed record Version(VersionRecord Record, List<(ChunkTag Tag, byte[] Blob)> Blobs, List<ChunkTag> ChunkTags, long DiskSize);

    private Version MakeVersion(ParcelKeys keys, string parcelId, string parentMac)
    {
        var blobs = new List<(ChunkTag, byte[])>();
        var refs = new List<ChunkRef>();
        for (int i = 0; i < work.ChunksPerCommit; i++)
        {
            var blob = new byte[work.ChunkSize];
            _rng.NextBytes(blob);
            var tag = ChunkTag.Of(blob);
            refs.Add(new ChunkRef(tag, default, work.ChunkSize));
            blobs.Add((tag, blob));
        }
        var chunkTags = blobs.Select(b => b.Item1).ToList();
        var tree = ChunkListTree.Build(refs, keys);
        blobs.AddRange(tree.NewPages);
        var descriptor = SealedBox.Seal(keys.MetadataKey, RandomNumberGenerator.GetBytes(200), "isr bench descriptor");
        var descriptorTag = ChunkTag.Of(descriptor);
        blobs.Add((descriptorTag, descriptor));
        long diskSize = (long)work.ChunksPerCommit * work.ChunkSize;
        var record = new VersionRecord
        {
            ParcelId = parcelId, CommitId = Guid.NewGuid().ToString("N"), ParentMac = parentMac, Created = DateTimeOffset.UtcNow,
            ChunkSize = work.ChunkSize, DiskSize = diskSize, DiskRoot = tree.Root.ToString(), DescriptorTag = descriptorTag.ToString(),
        }.Sign(keys);
        return new Version(record, blobs, chunkTags, diskSize);
    }

    /// <summary>POST /chunks/download; every frame must be present and match its tag. Returns the blob bytes.</summary>
    private static async Task<long> DownloadAsync(ServerConnection server, List<ChunkTag> tags, CancellationToken ct)
    {
        var body = new byte[tags.Count * 32];
        for (int i = 0; i < tags.Count; i++) tags[i].Hash.WriteTo(body.AsSpan(i * 32));
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        using var response = await server.SendAsync(HttpMethod.Post, "api/v1/chunks/download", content, ct);
        var bytes = await response.Content.ReadAsByteArrayAsync(ct);
        long total = 0;
        int at = 0;
        foreach (var tag in tags)
        {
            var got = new ChunkTag(new Hash32(bytes.AsSpan(at, 32)));
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 32));
            if (got != tag || length == uint.MaxValue) throw new InvalidDataException($"download: frame for {tag} is absent or out of order");
            if (!tag.Matches(bytes.AsSpan(at + 36, (int)length))) throw new InvalidDataException($"download: blob {tag} does not match its tag");
            at += 36 + (int)length;
            total += length;
        }
        return total;
    }
}
