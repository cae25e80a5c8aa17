using Isr.Client.Cache;
using Isr.Client.Site;
using Isr.Client.Transfer;
using Isr.Format;

namespace Isr.Client.Session;

/// <summary>What a commit sends and records.</summary>
public sealed record CommitResult(VersionRecord Version, int ChunksUploaded, long BytesUploaded, int PagesWritten);

/// <summary>
/// Turns a base version plus the site's flushed changes (and a memory image) into a new version at the home:
/// writes only the changed keyring pages and uploads only blobs the home lacks. The caller then hands the signed record
/// to the home, which accepts it only if every blob it references is stored, so a crash mid-way leaves the old head.
/// </summary>
public static class Committer
{
    public static async Task<CommitResult> PrepareAsync(OpenedParcel parcel, SiteDirectory site, ChunkFetcher fetcher, VersionRecord baseVersion,
        IReadOnlyDictionary<long, ChunkRef> diskChanges, IReadOnlyList<ChunkRef>? memoryImage, ChunkTag descriptorTag,
        VersionRecord? parent, string commitId, IProgress<long>? progress, CancellationToken ct)
    {
        var disk = await ChunkListTree.UpdateAsync(baseVersion.DiskRootTag, baseVersion.DiskChunks, diskChanges, fetcher.LoadPageAsync, parcel.Keys, ct);
        var memory = memoryImage is null ? null : ChunkListTree.Build(memoryImage, parcel.Keys);
        var pages = disk.NewPages.Concat(memory?.NewPages ?? []).ToList();
        foreach (var (tag, page) in pages) await site.DurableCache.PutAsync(tag, page, ct);

        var tags = new HashSet<ChunkTag>(diskChanges.Values.Where(c => !c.IsZeroChunk).Select(c => c.Tag));
        if (memoryImage != null) tags.UnionWith(memoryImage.Select(c => c.Tag));
        tags.UnionWith(pages.Select(p => p.Tag));
        tags.Add(descriptorTag);
        var (count, bytes) = await Uploader.UploadMissingAsync(site.Cache, parcel.Home.Chunks, tags, progress, ct);

        var version = new VersionRecord
        {
            ParcelId = parcel.Info.Id,
            CommitId = commitId,
            ParentMac = parent?.Mac ?? "",
            Created = DateTimeOffset.UtcNow,
            ChunkSize = baseVersion.ChunkSize,
            DiskSize = baseVersion.DiskSize,
            DiskRoot = disk.Root.ToString(),
            MemoryRoot = memory?.Root.ToString() ?? "",
            MemoryChunks = memoryImage?.Count ?? 0,
            MemoryBytes = memoryImage?.Sum(c => (long)c.Length) ?? 0,
            DescriptorTag = descriptorTag.ToString(),
        }.Sign(parcel.Keys);
        return new CommitResult(version, count, bytes, pages.Count);
    }
}
