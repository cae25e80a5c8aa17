using System.Text;
using System.Text.Json.Nodes;
using Isr.Format;

namespace Isr.Format.Tests;

public class VersionRecordTests
{
    private static readonly ParcelKeys Keys = new(TestData.Secret(70));
    private const string ParcelId = "4f1c2a9e-parcel";

    private static string Tag(int seed) => new ChunkTag(TestData.RandomHash(new Random(seed))).ToString();

    private static VersionRecord Sample() => new VersionRecord
    {
        ParcelId = ParcelId,
        CommitId = "commit-0b5e",
        ParentMac = new string('a', 64),
        Number = 7,
        Parent = 6,
        Created = new DateTimeOffset(2025, 3, 14, 15, 9, 26, 535, TimeSpan.Zero),
        ChunkSize = 128 << 10,
        DiskSize = 20L << 30,
        DiskRoot = Tag(1),
        MemoryRoot = Tag(2),
        MemoryChunks = 12345,
        MemoryBytes = 4L << 30,
        DescriptorTag = Tag(3),
    }.Sign(Keys);

    [Fact]
    public void SignVerifyRoundTripThroughJson()
    {
        var signed = Sample();
        Assert.Equal(64, signed.Mac.Length);
        signed.Verify(Keys, ParcelId);
        var json = signed.ToJson();
        var back = VersionRecord.FromJson(json);
        Assert.Equal(signed, back);
        back.Verify(Keys, ParcelId);
        Assert.Contains("\"diskRoot\"", Encoding.UTF8.GetString(json));
    }

    [Fact]
    public void FirstVersionWithoutParentOrMemoryImage()
    {
        var first = (Sample() with { Number = 1, Parent = null, ParentMac = "", MemoryRoot = "", MemoryChunks = 0, MemoryBytes = 0 }).Sign(Keys);
        var back = VersionRecord.FromJson(first.ToJson());
        back.Verify(Keys, ParcelId);
        Assert.Null(back.Parent);
        Assert.False(back.HasMemoryImage);
        Assert.Equal(ChunkTag.ZeroChunk, back.MemoryRootTag);
        Assert.Equal([ChunkTag.Parse(first.DescriptorTag), ChunkTag.Parse(first.DiskRoot)], back.RootTags());
    }

    [Fact]
    public void DerivedProperties()
    {
        var v = Sample() with { ChunkSize = 4096, DiskSize = 4096 * 10 + 1 };
        Assert.Equal(11, v.DiskChunks);
        Assert.Equal(10, (v with { DiskSize = 4096 * 10 }).DiskChunks);
        Assert.True(v.HasMemoryImage);
        Assert.Equal(ChunkTag.Parse(Tag(1)), v.DiskRootTag);
        Assert.Equal([ChunkTag.Parse(Tag(3)), ChunkTag.Parse(Tag(1)), ChunkTag.Parse(Tag(2))], v.RootTags());
        Assert.Equal([ChunkTag.Parse(Tag(3)), ChunkTag.Parse(Tag(2))], (v with { DiskRoot = ChunkTag.ZeroChunk.ToString() }).RootTags());
    }

    public static TheoryData<string> Alterations() =>
        ["parcelId", "commitId", "parentMac", "parentMacEmpty", "created", "chunkSize", "diskSize", "diskRoot", "memoryRoot", "memoryRootEmpty",
         "memoryChunks", "memoryBytes", "descriptorTag", "mac", "macEmpty", "macNotHex", "macShort", "format"];

    private static VersionRecord Alter(VersionRecord v, string field) => field switch
    {
        "parcelId" => v with { ParcelId = v.ParcelId + "x" },
        "commitId" => v with { CommitId = v.CommitId + "1" },
        "parentMac" => v with { ParentMac = new string('b', 64) },
        "parentMacEmpty" => v with { ParentMac = "" },
        "created" => v with { Created = v.Created.AddMilliseconds(1) },
        "chunkSize" => v with { ChunkSize = v.ChunkSize * 2 },
        "diskSize" => v with { DiskSize = v.DiskSize + 1 },
        "diskRoot" => v with { DiskRoot = Tag(9) },
        "memoryRoot" => v with { MemoryRoot = Tag(9) },
        "memoryRootEmpty" => v with { MemoryRoot = "" },
        "memoryChunks" => v with { MemoryChunks = v.MemoryChunks - 1 },
        "memoryBytes" => v with { MemoryBytes = v.MemoryBytes + 4096 },
        "descriptorTag" => v with { DescriptorTag = Tag(9) },
        "mac" => v with { Mac = (v.Mac[0] == '0' ? "1" : "0") + v.Mac[1..] },
        "macEmpty" => v with { Mac = "" },
        "macNotHex" => v with { Mac = "zz" + v.Mac[2..] },
        "macShort" => v with { Mac = v.Mac[..62] },
        "format" => v with { Format = 2 },
        _ => throw new ArgumentException(field),
    };

    [Theory]
    [MemberData(nameof(Alterations))]
    public void AnyAlteredFieldFailsVerification(string field)
    {
        var altered = Alter(Sample(), field);
        Assert.NotEqual(Sample(), altered);
        Assert.Throws<MalformedDataException>(() => altered.Verify(Keys, altered.ParcelId));
        // Also after a trip through JSON, as a server would hand it back.
        var back = VersionRecord.FromJson(altered.ToJson());
        Assert.Throws<MalformedDataException>(() => back.Verify(Keys, back.ParcelId));
    }

    [Theory]
    [InlineData("parentMac", "\"\"")]
    [InlineData("commitId", "\"other\"")]
    [InlineData("diskSize", "1")]
    [InlineData("created", "\"2025-03-14T15:09:27.535+00:00\"")]
    [InlineData("diskRoot", "\"0000000000000000000000000000000000000000000000000000000000000000\"")]
    public void EditedJsonFailsVerification(string property, string value)
    {
        var node = JsonNode.Parse(Sample().ToJson())!.AsObject();
        Assert.True(node.ContainsKey(property));
        node[property] = JsonNode.Parse(value);
        var edited = VersionRecord.FromJson(Encoding.UTF8.GetBytes(node.ToJsonString()));
        Assert.Throws<MalformedDataException>(() => edited.Verify(Keys, ParcelId));
    }

    /// <summary>A record from a home that leaves out the optional strings (a first version's parent, a memory image, the
    /// MAC) reads as empty strings, not nulls: generated JSON code sets every init-only property, absent or not.</summary>
    [Theory]
    [InlineData("parentMac")]
    [InlineData("commitId")]
    [InlineData("memoryRoot")]
    [InlineData("mac")]
    public void AbsentOptionalStringsReadEmpty(string property)
    {
        var node = JsonNode.Parse(Sample().ToJson())!.AsObject();
        Assert.True(node.Remove(property));
        var read = VersionRecord.FromJson(Encoding.UTF8.GetBytes(node.ToJsonString()));
        Assert.Equal("", (string)typeof(VersionRecord).GetProperty(char.ToUpperInvariant(property[0]) + property[1..])!.GetValue(read)!);
        Assert.Throws<MalformedDataException>(() => read.Verify(Keys, ParcelId)); // a clear refusal, never a null dereference
    }

    /// <summary>The home numbers versions in commit order; those fields are outside the MAC by design.</summary>
    [Fact]
    public void HomeAssignedFieldsAreNotAuthenticated()
    {
        var renumbered = Sample() with { Number = 99, Parent = 98, Side = true };
        renumbered.Verify(Keys, ParcelId);
        VersionRecord.FromJson(renumbered.ToJson()).Verify(Keys, ParcelId);
    }

    [Fact]
    public void UnsignedRecordIsRejected()
    {
        var unsigned = Sample() with { Mac = "" };
        var e = Assert.Throws<MalformedDataException>(() => unsigned.Verify(Keys, ParcelId));
        Assert.Contains("not signed", e.Message);
    }

    [Fact]
    public void JsonFormattingDoesNotMatter()
    {
        var compact = JsonNode.Parse(Sample().ToJson())!.ToJsonString();
        var back = VersionRecord.FromJson(Encoding.UTF8.GetBytes(compact));
        back.Verify(Keys, ParcelId);
    }

    [Fact]
    public void OtherParcelIdIsRejected()
    {
        var e = Assert.Throws<MalformedDataException>(() => Sample().Verify(Keys, "another-parcel"));
        Assert.Contains("another parcel", e.Message);
    }

    [Fact]
    public void OtherParcelKeysAreRejected()
    {
        Assert.Throws<MalformedDataException>(() => Sample().Verify(new ParcelKeys(TestData.Secret(71)), ParcelId));
    }

    [Fact]
    public void RecordSignedForAnotherParcelCannotBeRelabelled()
    {
        var other = (Sample() with { ParcelId = "other" }).Sign(Keys);
        other.Verify(Keys, "other");
        Assert.Throws<MalformedDataException>(() => (other with { ParcelId = ParcelId }).Verify(Keys, ParcelId));
    }

    [Theory]
    [InlineData("")]
    [InlineData("{")]
    [InlineData("null")]
    [InlineData("[]")]
    [InlineData("42")]
    [InlineData("not json")]
    [InlineData("{}")]
    [InlineData("{\"parcelId\":\"p\"}")]
    [InlineData("{\"parcelId\":\"p\",\"number\":\"seven\",\"created\":\"2025-01-01T00:00:00Z\",\"chunkSize\":1,\"diskSize\":1,\"diskRoot\":\"00\",\"descriptorTag\":\"00\"}")]
    [InlineData("{\"parcelId\":\"p\",\"number\":7,\"created\":\"yesterday\",\"chunkSize\":1,\"diskSize\":1,\"diskRoot\":\"00\",\"descriptorTag\":\"00\"}")]
    [InlineData("{\"parcelId\":\"p\",\"number\":7,\"created\":\"2025-01-01T00:00:00Z\",\"chunkSize\":1,\"diskSize\":1,\"diskRoot\":\"00\"}")]
    public void MalformedJsonIsRejected(string json)
    {
        Assert.Throws<MalformedDataException>(() => VersionRecord.FromJson(Encoding.UTF8.GetBytes(json)));
    }

    [Fact]
    public void TruncatedJsonIsRejected()
    {
        var json = Sample().ToJson();
        foreach (int length in new[] { 1, json.Length / 2, json.Length - 2 })
            Assert.Throws<MalformedDataException>(() => VersionRecord.FromJson(json.AsSpan(0, length)));
    }

    [Theory]
    [InlineData("parcelId")]
    [InlineData("diskRoot")]
    [InlineData("descriptorTag")]
    [InlineData("memoryRoot")]
    [InlineData("mac")]
    public void NullForANonNullableStringIsMalformed(string property)
    {
        var node = JsonNode.Parse(Sample().ToJson())!.AsObject();
        node[property] = null;
        var json = Encoding.UTF8.GetBytes(node.ToJsonString());
        // Either parsing refuses it, or verification does; never a NullReferenceException or ArgumentNullException.
        var e = Record.Exception(() => VersionRecord.FromJson(json).Verify(Keys, ParcelId));
        Assert.IsType<MalformedDataException>(e);
    }
}
