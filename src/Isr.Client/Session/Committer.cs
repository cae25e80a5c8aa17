using Isr.Client.Cache;
using Isr.Client.Site;
using Isr.Format;

namespace Isr.Client.Session;

/// <summary>What a commit sends and records.</summary>
public sealed record PreparedVersion(VersionRecord Version, IReadOnlyList<ChunkTag> PageTags);

/// <summary>
/// Turns a base version plus the site's flushed changes (and a memory image) into a signed version record, writing only
/// the changed keyring pages (into the site cache). Uploading and committing are the check-in's; the home accepts the
/// record only if every blob it references is stored, so a crash mid-way leaves the old head.
/// </summary>
public static class Committer
{
    public static async Task<PreparedVersion> PrepareAsync(OpenedParcel parcel, SiteDirectory site, ChunkFetcher fetcher, VersionRecord baseVersion,
        IReadOnlyDictionary<long, ChunkRef> diskChanges, IReadOnlyList<ChunkRef>? memoryImage, ChunkTag descriptorTag,
        VersionRecord? parent, string commitId, CancellationToken ct, ChunkTag? workingSet = null)
    {
        var disk = await ChunkListTree.UpdateAsync(baseVersion.DiskRootTag, baseVersion.DiskChunks, diskChanges, fetcher.LoadPageAsync, parcel.Keys, ct);
        var memory = memoryImage is null ? null : ChunkListTree.Build(memoryImage, parcel.Keys);
        var pages = disk.NewPages.Concat(memory?.NewPages ?? []).ToList();
        foreach (var (tag, page) in pages)
            await fetcher.Space.PutDirtyAsync(tag, page, fetcher.Home, $"writing the keyring pages of the next version of '{parcel.Info.Name}'",
                "Nothing was committed; what the guest flushed is in the journal.", ct);

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
            WorkingSetTag = workingSet?.ToString(),
        }.Sign(parcel.Keys);
        return new PreparedVersion(version, pages.Select(p => p.Tag).ToList());
    }
}
