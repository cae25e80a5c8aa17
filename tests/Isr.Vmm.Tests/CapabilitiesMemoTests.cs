using System.Text.Json;

namespace Isr.Vmm.Tests;

/// <summary>The on-disk memo of the QEMU probe: recalled only for the same binary and host, never a broken file.</summary>
public sealed class CapabilitiesMemoTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("isr-memo-").FullName;
    private string Memos => Path.Combine(_dir, "memos");

    private static readonly SiteCapabilities Sample = new()
    {
        Vmm = "qemu", VmmVersion = "7.2.9", Package = "Debian test",
        MachineTypes = [new QemuMachineType("pc-i440fx-7.2", "pc", true, false)],
        Accelerators = ["tcg"], CpuModels = ["qemu64"], DeviceTypes = ["virtio-blk-pci"], DisplayBackends = ["none"],
    };

    private string FakeBinary(string content)
    {
        var path = Path.Combine(_dir, "qemu-system-x86_64");
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void A_kept_answer_is_recalled_whole_for_the_same_binary()
    {
        var binary = FakeBinary("v1");
        Assert.Null(CapabilitiesMemo.Recall(Memos, binary));
        CapabilitiesMemo.Keep(Memos, binary, Sample);
        var recalled = CapabilitiesMemo.Recall(Memos, binary);
        Assert.NotNull(recalled);
        Assert.Equal(JsonSerializer.Serialize(Sample), JsonSerializer.Serialize(recalled));
    }

    [Fact]
    public void A_changed_binary_misses()
    {
        var binary = FakeBinary("v1");
        CapabilitiesMemo.Keep(Memos, binary, Sample);
        FakeBinary("version two, longer");
        Assert.Null(CapabilitiesMemo.Recall(Memos, binary));
    }

    [Fact]
    public void A_broken_memo_is_ignored()
    {
        var binary = FakeBinary("v1");
        CapabilitiesMemo.Keep(Memos, binary, Sample);
        foreach (var file in Directory.GetFiles(Memos)) File.WriteAllText(file, "{ not json");
        Assert.Null(CapabilitiesMemo.Recall(Memos, binary));
    }

    [Fact]
    public void No_directory_means_no_memo()
    {
        var binary = FakeBinary("v1");
        CapabilitiesMemo.Keep(null, binary, Sample);
        Assert.Null(CapabilitiesMemo.Recall(null, binary));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
