using System.Text.Json;
using System.Text.Json.Serialization;

namespace Isr.Vmm;

/// <summary>
/// Everything that must be identical between the QEMU that saved a memory image and the one
/// that loads it. QEMU does not check most of it (a different <c>-cpu</c> or extra devices are
/// silently accepted and corrupt the guest), so we store it next to the image and check it.
/// The QEMU command line is derived from this plus host-only site options.
/// </summary>
public sealed record VmDescriptor
{
    public const int CurrentFormatVersion = 1;

    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>Monitor implementation; only "qemu" exists today.</summary>
    public required string Vmm { get; init; }

    /// <summary>VMM version as reported by QMP <c>query-version</c>, e.g. "7.2.22".</summary>
    public required string VmmVersion { get; init; }

    /// <summary>Resolved, versioned machine type (e.g. <c>pc-q35-7.2</c>), never an alias like <c>q35</c>.</summary>
    public required string MachineType { get; init; }

    /// <summary>"tcg" or "kvm". The vCPU state differs between them, so it is part of the contract.</summary>
    public required string Accelerator { get; init; }

    /// <summary>Named CPU model (e.g. <c>qemu64</c>); never <c>host</c> or <c>max</c>, which depend on the host.</summary>
    public required string CpuModel { get; init; }

    public required long MemoryBytes { get; init; }

    public required int CpuCount { get; init; }

    /// <summary>Guest-visible devices in command-line order.</summary>
    public required IReadOnlyList<VmDevice> Devices { get; init; }

    public string ToJson() => JsonSerializer.Serialize(this, VmDescriptorJsonContext.Default.VmDescriptor);

    public byte[] ToJsonUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, VmDescriptorJsonContext.Default.VmDescriptor);

    public static VmDescriptor FromJson(string json) =>
        Validate(JsonSerializer.Deserialize(json, VmDescriptorJsonContext.Default.VmDescriptor));

    public static VmDescriptor FromJson(ReadOnlySpan<byte> utf8Json) =>
        Validate(JsonSerializer.Deserialize(utf8Json, VmDescriptorJsonContext.Default.VmDescriptor));

    private static VmDescriptor Validate(VmDescriptor? d)
    {
        if (d is null)
            throw new InvalidDataException("VM descriptor JSON is null.");
        // A newer format may carry fields this code would silently drop; refuse rather than guess.
        if (d.FormatVersion != CurrentFormatVersion)
            throw new InvalidDataException(
                $"VM descriptor format version {d.FormatVersion} is not supported (expected {CurrentFormatVersion}).");
        // The serializer lets an explicit null through for non-nullable members; integers for undefined enum values too.
        if (d.Vmm is null || d.VmmVersion is null || d.MachineType is null || d.Accelerator is null || d.CpuModel is null || d.Devices is null)
            throw new InvalidDataException("VM descriptor has a null where a value is required.");
        foreach (var device in d.Devices)
        {
            if (device is null || device.Id is null || device.Driver is null || !Enum.IsDefined(device.Kind))
                throw new InvalidDataException("VM descriptor has a malformed device (null, no id or driver, or an unknown kind).");
        }
        return d;
    }

    // Records compare lists by reference; a descriptor's identity includes the device contents.
    public bool Equals(VmDescriptor? other) =>
        other is not null
        && FormatVersion == other.FormatVersion
        && Vmm == other.Vmm
        && VmmVersion == other.VmmVersion
        && MachineType == other.MachineType
        && Accelerator == other.Accelerator
        && CpuModel == other.CpuModel
        && MemoryBytes == other.MemoryBytes
        && CpuCount == other.CpuCount
        && Devices.SequenceEqual(other.Devices);

    public override int GetHashCode() =>
        HashCode.Combine(Vmm, VmmVersion, MachineType, Accelerator, CpuModel, MemoryBytes, CpuCount, Devices.Count);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(VmDescriptor))]
internal sealed partial class VmDescriptorJsonContext : JsonSerializerContext;
