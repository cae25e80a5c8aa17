using Isr.Client.Cache;
using Isr.Client.Disk;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Storage;

namespace Isr.EndToEnd.Tests;

/// <summary>Test-side access to a stored parcel: decrypts a version's whole disk into a raw file to inspect it offline.</summary>
public static class ParcelInspector
{
    public static Task<string> ExportDiskAsync(string store, string parcelName, string password, string workDirectory) =>
        ExportDiskAsync(new DirectoryParcelHome(store), parcelName, password, workDirectory);

    public static async Task<string> ExportDiskAsync(IParcelHome home, string parcelName, string password, string workDirectory)
    {
        var parcel = await OpenedParcel.OpenAsync(home, await home.UnlockAsync(password, default), parcelName, default);
        var fetcher = new ChunkFetcher(new DirectoryChunkStore(Path.Combine(workDirectory, "cache"), durable: false), home.Chunks);
        using var disk = new ParcelDisk(parcel.Head, parcel.Keys, parcel.Codec, fetcher,
            DirtyJournal.Open(Path.Combine(workDirectory, "inspect.journal"), parcel.Head.Number, parcel.Keys));
        var image = Path.Combine(workDirectory, $"{parcelName}-v{parcel.Head.Number}.raw");
        await using var file = File.Create(image);
        var buffer = new byte[1 << 20];
        for (long offset = 0; offset < disk.Size; offset += buffer.Length)
        {
            int n = (int)Math.Min(buffer.Length, disk.Size - offset);
            await disk.ReadAsync(offset, buffer.AsMemory(0, n), default);
            await file.WriteAsync(buffer.AsMemory(0, n));
        }
        return image;
    }

    /// <summary>A file from the test guest's ext4 data partition, read without mounting.</summary>
    public static async Task<string> ReadGuestFileAsync(string image, string path)
    {
        var (code, stdout, stderr) = await TestEnvironment.RunAsync("bash",
            [Path.Combine(TestEnvironment.RepoRoot, "scripts", "guest", "read-file.sh"), image, path], null, TimeSpan.FromMinutes(1));
        Assert.True(code == 0, $"read-file.sh {path} failed: {stderr}");
        return stdout;
    }

    /// <summary>Files under <paramref name="root"/> that contain <paramref name="needle"/>.</summary>
    public static IReadOnlyList<string> FilesContaining(string root, string needle) => FilesContaining(root, System.Text.Encoding.ASCII.GetBytes(needle));

    public static IReadOnlyList<string> FilesContaining(string root, byte[] pattern)
    {
        return Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Where(f => { try { return File.ReadAllBytes(f).AsSpan().IndexOf(pattern) >= 0; } catch (IOException) { return false; } })
            .ToList();
    }
}
