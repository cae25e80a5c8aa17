namespace Isr.Vmm;

/// <summary>
/// Finds why saved VM state must not be loaded somewhere. QEMU itself accepts many mismatches
/// (another -cpu, extra devices) and the guest then misbehaves, so we check before resuming.
/// </summary>
public static class DescriptorCheck
{
    /// <summary>
    /// Can <paramref name="wanted"/> be resumed with the QEMU described by <paramref name="site"/>?
    /// No <see cref="DifferenceSeverity.Blocking"/> entries means yes.
    /// </summary>
    public static IReadOnlyList<DescriptorDifference> Compare(VmDescriptor wanted, SiteCapabilities site)
    {
        ArgumentNullException.ThrowIfNull(wanted);
        ArgumentNullException.ThrowIfNull(site);
        var diffs = new List<DescriptorDifference>();
        var here = $"{site.Vmm} {site.VmmVersion}";

        if (wanted.FormatVersion != VmDescriptor.CurrentFormatVersion)
            diffs.Add(Blocking(DescriptorField.FormatVersion,
                $"descriptor format version {wanted.FormatVersion} is not supported (this software writes {VmDescriptor.CurrentFormatVersion})"));
        if (wanted.Vmm != site.Vmm)
        {
            diffs.Add(Blocking(DescriptorField.Vmm, $"the VM was suspended under {wanted.Vmm}; this site runs {site.Vmm}"));
            return diffs; // Nothing else is comparable across VMMs.
        }

        AddVersionDifference(diffs, wanted.VmmVersion, site.VmmVersion, "here");

        var machine = site.MachineTypes.FirstOrDefault(m => m.Name == wanted.MachineType);
        if (machine is null)
        {
            var asAlias = site.MachineTypes.FirstOrDefault(m => m.Alias == wanted.MachineType);
            diffs.Add(Blocking(DescriptorField.MachineType, asAlias is null
                ? $"machine type {wanted.MachineType} is not provided by {here} here"
                : $"machine type {wanted.MachineType} is an alias (here for {asAlias.Name}); a descriptor must name a versioned machine type"));
        }

        if (!site.Accelerators.Contains(wanted.Accelerator))
            diffs.Add(Blocking(DescriptorField.Accelerator,
                $"accelerator {wanted.Accelerator} not available here ({string.Join(", ", site.Accelerators)} only)"));

        if (IsHostDependentCpu(wanted.CpuModel))
            diffs.Add(Blocking(DescriptorField.CpuModel,
                $"CPU model {wanted.CpuModel} depends on the host, so saved state is not portable"));
        else if (!site.CpuModels.Contains(wanted.CpuModel))
            diffs.Add(Blocking(DescriptorField.CpuModel, $"CPU model {wanted.CpuModel} is not provided by {here} here"));

        if (site.DeviceTypes.Count > 0)
        {
            foreach (var device in wanted.Devices.Where(d => !site.DeviceTypes.Contains(d.Driver)))
                diffs.Add(Blocking(DescriptorField.Devices, $"device {device.Driver} ({device.Id}) is not provided by {here} here"));
        }

        return diffs;
    }

    /// <summary>
    /// Differences between two descriptors, e.g. the running VM's and the one stored with a memory
    /// image. Any difference other than a QEMU point release means the image is not for this VM.
    /// </summary>
    public static IReadOnlyList<DescriptorDifference> Compare(VmDescriptor a, VmDescriptor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var diffs = new List<DescriptorDifference>();
        if (a.FormatVersion != b.FormatVersion)
            diffs.Add(Blocking(DescriptorField.FormatVersion, $"descriptor format version {a.FormatVersion} vs {b.FormatVersion}"));
        if (a.Vmm != b.Vmm)
            diffs.Add(Blocking(DescriptorField.Vmm, $"VMM {a.Vmm} vs {b.Vmm}"));
        else
            AddVersionDifference(diffs, a.VmmVersion, b.VmmVersion, "");
        if (a.MachineType != b.MachineType)
            diffs.Add(Blocking(DescriptorField.MachineType, $"machine type {a.MachineType} vs {b.MachineType}"));
        if (a.Accelerator != b.Accelerator)
            diffs.Add(Blocking(DescriptorField.Accelerator, $"accelerator {a.Accelerator} vs {b.Accelerator}"));
        if (a.CpuModel != b.CpuModel)
            diffs.Add(Blocking(DescriptorField.CpuModel, $"CPU model {a.CpuModel} vs {b.CpuModel}"));
        if (a.MemoryBytes != b.MemoryBytes)
            diffs.Add(Blocking(DescriptorField.Memory, $"RAM {FormatBytes(a.MemoryBytes)} vs {FormatBytes(b.MemoryBytes)}"));
        if (a.CpuCount != b.CpuCount)
            diffs.Add(Blocking(DescriptorField.CpuCount, $"{a.CpuCount} vs {b.CpuCount} vCPUs"));

        var count = Math.Max(a.Devices.Count, b.Devices.Count);
        for (var i = 0; i < count; i++)
        {
            var da = i < a.Devices.Count ? a.Devices[i] : null;
            var db = i < b.Devices.Count ? b.Devices[i] : null;
            if (da == db)
                continue;
            diffs.Add(Blocking(DescriptorField.Devices, $"device #{i + 1}: {Describe(da)} vs {Describe(db)}"));
        }
        return diffs;
    }

    /// <summary>True if nothing blocks a resume.</summary>
    public static bool IsResumable(IEnumerable<DescriptorDifference> differences) => !differences.Any(d => d.IsBlocking);

    // "host" mirrors the physical CPU and "max" everything the accelerator can do: both change between hosts.
    private static bool IsHostDependentCpu(string model) => model is "host" or "max";

    // The migration stream format is only promised within a release series; a different
    // major.minor may be refused by QEMU or, worse, load subtly differently. A stable point
    // release (7.2.1 → 7.2.22) keeps the format.
    private static void AddVersionDifference(List<DescriptorDifference> diffs, string a, string b, string where)
    {
        if (a == b)
            return;
        var suffix = where.Length > 0 ? $" {where}" : "";
        if (MajorMinor(a) != MajorMinor(b))
            diffs.Add(Blocking(DescriptorField.VmmVersion, $"QEMU version {a} vs {b}{suffix} differs: migration stream may be incompatible"));
        else
            diffs.Add(new DescriptorDifference(DescriptorField.VmmVersion, DifferenceSeverity.Warning,
                $"QEMU version {a} vs {b}{suffix}: same release series, state should load"));
    }

    private static string MajorMinor(string version)
    {
        var parts = version.Split('.');
        return parts.Length >= 2 ? parts[0] + "." + parts[1] : version;
    }

    private static string Describe(VmDevice? d) => d is null
        ? "(none)"
        : $"{d.Driver} '{d.Id}'" + (d.PciSlot is int s ? $" at PCI slot 0x{s:x}" : "") + (d.MacAddress is { } mac ? $" mac {mac}" : "");

    private static string FormatBytes(long bytes) =>
        bytes % (1024 * 1024) == 0 ? $"{bytes / (1024 * 1024)} MiB" : $"{bytes} bytes";

    private static DescriptorDifference Blocking(DescriptorField field, string message) =>
        new(field, DifferenceSeverity.Blocking, message);
}
