using Isr.Client.Homes;
using Isr.Format;

namespace Isr.Client.Portable;

/// <param name="VersionsCopied">Versions the target did not have, committed there in order.</param>
/// <param name="BlobsCopied">Blobs the target lacked (everything else was there: the copy is incremental).</param>
public sealed record CopyResult(string Parcel, string From, string To, int VersionsCopied, int BlobsCopied, long BytesCopied, int Versions);

/// <summary>
/// Copies a parcel between two homes through <see cref="IParcelHome"/> (`isr backup` store → server, `isr restore`
/// server → store): the versions of its main line that the target lacks, oldest first, each after the blobs it
/// references that the target lacks. Needs no keys (blob lists come from the keyring pages' plaintext tags); blobs
/// are verified against their tags on the way, and the target re-checks completeness at every commit. Both homes
/// must belong to the same user secrets (see <see cref="SameUser"/>).
/// </summary>
public static class ParcelCopy
{
    public static async Task<CopyResult> CopyAsync(IParcelHome from, IParcelHome to, string parcel, Site.SiteIdentity site,
        IProgress<double>? progress, CancellationToken ct)
    {
        var info = await from.GetParcelAsync(parcel, ct);
        var line = (await from.ListVersionsAsync(parcel, ct)).Where(v => !v.Side).ToList();
        IReadOnlyList<VersionRecord> there = [];
        try
        {
            if ((await to.GetParcelAsync(parcel, ct)).Id != info.Id)
                throw new CommitConflictException($"{to.Describe} holds another parcel named '{parcel}'");
            there = await to.ListVersionsAsync(parcel, ct);
        }
        catch (ParcelNotFoundException) { }
        var theirHead = there.LastOrDefault(v => !v.Side);
        int start = theirHead is null ? 0 : line.FindIndex(v => v.Mac == theirHead.Mac) + 1;
        if (theirHead is not null && start == 0)
            throw new CommitConflictException($"the copy of '{parcel}' at {to.Describe} has versions that {from.Describe} lacks (its head is version {theirHead.Number}): nothing copied");
        var todo = line.Skip(start).ToList();

        int blobs = 0;
        long bytes = 0;
        string? lockToken = null;
        var server = to as ServerParcelHome;
        try
        {
            for (int i = 0; i < todo.Count; i++)
            {
                var version = todo[i];
                var tags = await ReferencedAsync(from, version, ct);
                var missing = await to.Chunks.MissingAsync(tags, ct);
                await Parallel.ForEachAsync(missing, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (tag, token) =>
                {
                    var blob = await from.Chunks.GetAsync(tag, token) ?? throw new ChunkIntegrityException($"blob {tag} is missing from {from.Describe}");
                    if (!tag.Matches(blob)) throw new ChunkIntegrityException($"blob {tag} at {from.Describe} does not match its tag");
                    await to.Chunks.PutAsync(tag, blob, token);
                    Interlocked.Increment(ref blobs);
                    Interlocked.Add(ref bytes, blob.Length);
                });
                if (theirHead is null && i == 0) await to.CreateParcelAsync(info, version, ct);
                else
                {
                    if (server is not null && lockToken is null)
                        server.LockToken = lockToken = await server.AcquireLockAsync(parcel, site.Id, site.Name, ct);
                    await to.CommitAsync(parcel, version, ct);
                }
                progress?.Report((i + 1) / (double)todo.Count);
            }
        }
        finally
        {
            if (server is not null && lockToken is not null) await server.ReleaseLockAsync(parcel, lockToken, CancellationToken.None);
        }
        return new CopyResult(parcel, from.Describe, to.Describe, todo.Count, blobs, bytes, line.Count);
    }

    /// <summary>Every blob a version references: its sealed roots, pages and chunks.</summary>
    private static async Task<IReadOnlyCollection<ChunkTag>> ReferencedAsync(IParcelHome home, VersionRecord version, CancellationToken ct)
    {
        var pages = new HashSet<ChunkTag>();
        var chunks = new HashSet<ChunkTag>(version.SealedTags());
        PageLoader load = async (tag, token) =>
        {
            var page = await home.Chunks.GetAsync(tag, token) ?? throw new ChunkIntegrityException($"page {tag} is missing from {home.Describe}");
            return tag.Matches(page) ? page : throw new ChunkIntegrityException($"page {tag} at {home.Describe} does not match its tag");
        };
        foreach (var root in version.TreeRootTags())
            await ChunkListTree.CollectTagsAsync(root, load, pages, chunks, ct);
        chunks.UnionWith(pages);
        return chunks;
    }

    /// <summary>Whether two unlocked homes hold the same user secrets (so the parcel's wrapped key and chunk keys work in both).</summary>
    public static bool SameUser(UserSecrets a, UserSecrets b) => a.DomainSecret.AsSpan().SequenceEqual(b.DomainSecret);
}
