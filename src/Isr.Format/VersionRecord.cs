using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Isr.Format;

/// <summary>
/// One version of a parcel: roots of its disk keyring and memory-image chunk list, and its sealed VM descriptor.
/// Readable without keys (a server lists and checks the tags), authenticated with the parcel's version MAC key so a
/// server cannot alter or swap it unnoticed. Versions chain by MAC (<see cref="ParentMac"/>), like commits by hash:
/// the home assigns <see cref="Number"/>, <see cref="Parent"/> and <see cref="Side"/> in commit order, outside the MAC.
/// docs/FORMAT.md, "Version record".
/// </summary>
public sealed record VersionRecord
{
    // The optional strings below read as "" when a record leaves them out: generated JSON code assigns every init-only
    // property, absent ones as null, where a reflection reader kept the initializer.
    public const int CurrentFormat = 1;
    public int Format { get; init; } = CurrentFormat;
    public required string ParcelId { get; init; }
    /// <summary>Client-generated, persisted before upload: a retried commit is recognised and never makes two versions.</summary>
    public string CommitId { get; init => field = value ?? ""; } = "";
    /// <summary>MAC of the version this one was made from; empty for a parcel's first version.</summary>
    public string ParentMac { get; init => field = value ?? ""; } = "";
    /// <summary>Commit order, assigned by the home (not authenticated).</summary>
    public long Number { get; init; }
    /// <summary>Number of the parent version, assigned by the home (not authenticated).</summary>
    public long? Parent { get; init; }
    /// <summary>Kept but not the head: committed under a broken lock or from an outdated parent (not authenticated).</summary>
    public bool Side { get; init; }
    public required DateTimeOffset Created { get; init; }
    public required int ChunkSize { get; init; }
    public required long DiskSize { get; init; }
    public required string DiskRoot { get; init; }
    /// <summary>Empty when the version has no memory image (the VM was shut down; resume boots from the disk).</summary>
    public string MemoryRoot { get; init => field = value ?? ""; } = "";
    public long MemoryChunks { get; init; }
    public long MemoryBytes { get; init; }
    public required string DescriptorTag { get; init; }
    /// <summary>Optional: a sealed blob listing the disk chunks the guest touched first after the resume this version was
    /// made from, in order (working-set prefetch at the next resume). Null or empty: none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? WorkingSetTag { get; init; }
    public string Mac { get; init => field = value ?? ""; } = "";

    [JsonIgnore] public long DiskChunks => (DiskSize + ChunkSize - 1) / ChunkSize;
    [JsonIgnore] public bool HasMemoryImage => MemoryRoot.Length > 0;
    [JsonIgnore] public ChunkTag DiskRootTag => ChunkTag.Parse(DiskRoot);
    [JsonIgnore] public ChunkTag MemoryRootTag => HasMemoryImage ? ChunkTag.Parse(MemoryRoot) : ChunkTag.ZeroChunk;
    [JsonIgnore] public bool HasWorkingSet => !string.IsNullOrEmpty(WorkingSetTag);

    /// <summary>Tags of the roots this version names directly: the sealed blobs (<see cref="SealedTags"/>) and the two trees (<see cref="TreeRootTags"/>).</summary>
    public IEnumerable<ChunkTag> RootTags() => SealedTags().Concat(TreeRootTags());

    /// <summary>Blobs this version names directly that are sealed metadata, not keyring pages: the descriptor and the working set.</summary>
    public IEnumerable<ChunkTag> SealedTags()
    {
        yield return ChunkTag.Parse(DescriptorTag);
        if (HasWorkingSet) yield return ChunkTag.Parse(WorkingSetTag!);
    }

    /// <summary>Roots of the page trees (disk keyring, memory chunk list) that this version names.</summary>
    public IEnumerable<ChunkTag> TreeRootTags()
    {
        if (DiskRootTag is { IsZeroChunk: false } disk) yield return disk;
        if (HasMemoryImage) yield return MemoryRootTag;
    }

    public VersionRecord Sign(ParcelKeys keys) => this with { Mac = Convert.ToHexStringLower(ComputeMac(keys)) };

    /// <exception cref="MalformedDataException">the record was altered, or belongs to another parcel</exception>
    public void Verify(ParcelKeys keys, string parcelId)
    {
        if (Mac.Length == 0) throw new MalformedDataException($"version {Number} is not signed");
        if (Format != CurrentFormat) throw new MalformedDataException($"version record format {Format} is not supported");
        byte[] mac;
        try { mac = Convert.FromHexString(Mac); }
        catch (System.FormatException) { throw new MalformedDataException($"version {Number} has a malformed MAC"); }
        if (!CryptographicOperations.FixedTimeEquals(mac, ComputeMac(keys)))
            throw new MalformedDataException($"version {Number} does not authenticate: altered, or not of this parcel");
        if (ParcelId != parcelId) throw new MalformedDataException($"version {Number} belongs to another parcel");
    }

    /// <summary>MAC over a canonical binary encoding (independent of JSON formatting).</summary>
    private byte[] ComputeMac(ParcelKeys keys)
    {
        var b = new List<byte>();
        void Str(string s) { var bytes = Encoding.UTF8.GetBytes(s); Long(bytes.Length); b.AddRange(bytes); }
        void Long(long v) { Span<byte> x = stackalloc byte[8]; BinaryPrimitives.WriteInt64LittleEndian(x, v); b.AddRange(x.ToArray()); }
        Long(Format); Str(ParcelId); Str(CommitId); Str(ParentMac); Long(Created.UtcTicks);
        Long(ChunkSize); Long(DiskSize); Str(DiskRoot); Str(MemoryRoot); Long(MemoryChunks); Long(MemoryBytes); Str(DescriptorTag);
        if (HasWorkingSet) Str(WorkingSetTag!); // optional, last: records without one keep their MAC
        return HMACSHA256.HashData(keys.VersionMacKey, b.ToArray());
    }

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, VersionRecordJsonContext.Default.VersionRecord);

    public static VersionRecord FromJson(ReadOnlySpan<byte> json)
    {
        try
        {
            return JsonSerializer.Deserialize(json, VersionRecordJsonContext.Default.VersionRecord) ?? throw new MalformedDataException("empty version record");
        }
        catch (JsonException e)
        {
            throw new MalformedDataException($"malformed version record: {e.Message}");
        }
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, RespectNullableAnnotations = true)]
[JsonSerializable(typeof(VersionRecord))]
internal sealed partial class VersionRecordJsonContext : JsonSerializerContext;
