using System.Text.Json;
using Isr.Format;

namespace Isr.Client.Session;

/// <summary>
/// A version prepared at this site but not yet committed at the home: the signed record (its commit id fixed before
/// any upload) and the blobs to send, all of which are in the site cache as ciphertext. Written durably at suspend,
/// removed after the commit; a retry after a crash sends the same commit id, so it never makes two versions.
/// <see cref="Changes"/> (chunk index and ciphertext tag, no keys) and <see cref="JournalBytes"/> (the journal's length
/// when they were frozen) tell the check-in whether the guest flushed more after (a sync whose daemon was killed).
/// </summary>
public sealed record PendingCommit(VersionRecord Version, IReadOnlyList<string> Blobs, long BaseVersion, IReadOnlyList<PendingChange>? Changes = null,
    long? JournalBytes = null)
{
    public IReadOnlyCollection<ChunkTag> BlobTags => Blobs.Select(ChunkTag.Parse).ToList();

    public void Save(string path) => Durable.WriteFileAtomically(path, JsonSerializer.SerializeToUtf8Bytes(this, Site.ParcelStateJsonContext.Default.PendingCommit));

    public static PendingCommit? Load(string path) =>
        File.Exists(path) ? JsonSerializer.Deserialize(File.ReadAllBytes(path), Site.ParcelStateJsonContext.Default.PendingCommit) : null;
}

/// <summary>One disk chunk a pending version changes: its index and the tag of its ciphertext.</summary>
public sealed record PendingChange(long Index, string Tag);
