using Isr.Client.Cache;
using Isr.Client.Homes;
using Isr.Format;
using Isr.Vmm;

namespace Isr.Client.Session;

/// <summary>A parcel with its keys unwrapped and its version history verified: the starting point of every operation on it.</summary>
public sealed class OpenedParcel
{
    private const string DescriptorContext = "isr vm descriptor v1";

    public required IParcelHome Home { get; init; }
    public required ParcelInfo Info { get; init; }
    public required ParcelKeys Keys { get; init; }
    public required ChunkCodec Codec { get; init; }
    public required IReadOnlyList<VersionRecord> Versions { get; init; }
    /// <summary>The newest version that is not a side version.</summary>
    public VersionRecord Head => Versions.Last(v => !v.Side);
    public string Name => Info.Name;

    /// <summary>Unwraps the parcel key and verifies every version record's MAC (a server or store cannot alter them unnoticed).</summary>
    public static async Task<OpenedParcel> OpenAsync(IParcelHome home, UserSecrets secrets, string name, CancellationToken ct)
    {
        // Both questions at once: each is a round trip to a server home, and a resume waits for them.
        var infoTask = home.GetParcelAsync(name, ct).AsTask();
        var versionsTask = home.ListVersionsAsync(name, ct).AsTask();
        var info = await infoTask;
        var keys = secrets.UnwrapParcelKey(info.WrappedKey, info.Id);
        var versions = await versionsTask;
        if (versions.Count == 0) throw new MalformedDataException($"parcel '{name}' has no versions");
        var byMac = new Dictionary<string, VersionRecord>();
        foreach (var version in versions)
        {
            version.Verify(keys, info.Id);
            // The chain is authenticated: each version names its parent's MAC, which the home cannot forge.
            if (version.ParentMac.Length > 0 && !byMac.ContainsKey(version.ParentMac))
                throw new MalformedDataException($"version {version.Number} of '{name}' names a parent that is not in its history");
            byMac[version.Mac] = version;
        }
        return new OpenedParcel { Home = home, Info = info, Keys = keys, Codec = new ChunkCodec(secrets.DomainSecret), Versions = versions };
    }

    public VersionRecord Version(long number) =>
        Versions.FirstOrDefault(v => v.Number == number) ?? throw new ParcelNotFoundException($"parcel '{Name}' has no version {number}");

    public async Task<VmDescriptor> ReadDescriptorAsync(VersionRecord version, ChunkFetcher fetcher, CancellationToken ct)
    {
        var blob = await fetcher.GetAsync(ChunkTag.Parse(version.DescriptorTag), ct);
        var json = SealedBox.Open(Keys.MetadataKey, blob, DescriptorContext, System.Text.Encoding.UTF8.GetBytes(Info.Id));
        try
        {
            return VmDescriptor.FromJson(json);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException)
        {
            throw new MalformedDataException($"the VM descriptor of version {version.Number} is malformed: {e.Message}");
        }
    }

    /// <summary>Seals a descriptor for storage; returns its tag and blob.</summary>
    public static (ChunkTag Tag, byte[] Blob) SealDescriptor(VmDescriptor descriptor, ParcelKeys keys, string parcelId)
    {
        var blob = SealedBox.Seal(keys.MetadataKey, descriptor.ToJsonUtf8(), DescriptorContext, System.Text.Encoding.UTF8.GetBytes(parcelId));
        return (ChunkTag.Of(blob), blob);
    }
}
