using System.Net;
using System.Security.Cryptography;
using Isr.Format;
using Isr.Testing;

namespace Isr.Server.Tests;

/// <summary>The server's data directory on a small real file system: uploads that do not fit are 507
/// insufficient_storage, and what was committed before stays whole (fsck clean).</summary>
public sealed class DiskFullTests
{
    [Fact]
    public async Task Upload_to_a_full_disk_is_507_and_the_committed_version_stays_intact()
    {
        using var fs = new SmallFileSystem(4L << 20);
        using var server = new ServerFixture(dataDirectory: Path.Combine(fs.Path, "data"));
        var alice = await server.AddUserAsync("alice", "pw-alice");
        using var client = await server.LoginAsync(alice);
        var parcel = new TestParcel("vm1", client.Secrets!);
        var content = parcel.MakeContent(8);
        using (var upload = await client.UploadAsync(content.Blobs)) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        using (var created = await client.PostJsonAsync("/api/v1/parcels", new { parcel = parcel.Info(8), first = parcel.Record(content, 8) }))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);

        HttpResponseMessage? refused = null;
        for (int i = 0; i < 64 && refused is null; i++) // 64 × 256 KiB is four times the file system
        {
            var blob = RandomNumberGenerator.GetBytes(256 * 1024);
            var response = await client.UploadAsync([(ChunkTag.Of(blob), blob)]);
            if (response.StatusCode == HttpStatusCode.OK) response.Dispose();
            else refused = response;
        }
        Assert.NotNull(refused);
        using (refused)
        {
            Assert.Equal((HttpStatusCode)507, refused.StatusCode);
            var body = await refused.BodyAsync();
            Assert.Equal("insufficient_storage", body.GetProperty("code").GetString());
            Assert.Contains("disk is full", body.GetProperty("error").GetString());
        }
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(server.Chunks.Root, "incoming")));
        var fsck = await server.Maintenance().CheckAsync(default);
        Assert.Empty(fsck.Problems);
        Assert.True(fsck.BlobsChecked >= content.Blobs.Count);
        foreach (var (tag, blob) in content.Blobs) Assert.Equal(blob, await server.Chunks.GetAsync(tag, default));
    }
}
