namespace Isr.Bench.Nbd;

/// <summary>The raw images both servers serve: incompressible dense data, and a sparse file with 10% data.</summary>
internal static class Images
{
    public const long Size = 256L * 1024 * 1024;
    private const int Block = 1024 * 1024;

    public static string CreateDense(string directory) => Create(Path.Combine(directory, "dense.raw"), _ => true);

    /// <summary>Every tenth MiB holds data; the rest are holes (SEEK_HOLE sees them).</summary>
    public static string CreateSparse(string directory) => Create(Path.Combine(directory, "sparse.raw"), i => i % 10 == 0);

    private static string Create(string path, Func<int, bool> hasData)
    {
        var random = new Random(1234);
        var buffer = new byte[Block];
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write);
        file.SetLength(Size);
        for (int i = 0; i < Size / Block; i++)
        {
            if (!hasData(i)) continue;
            random.NextBytes(buffer);
            file.Position = (long)i * Block;
            file.Write(buffer);
        }
        return path;
    }

    /// <summary>A private copy keeping holes, so write runs start from the same state for both servers.</summary>
    public static async Task<string> CopyAsync(string source, string destination)
    {
        await Tool.RunAsync("cp", ["--sparse=always", source, destination], TimeSpan.FromSeconds(60));
        return destination;
    }

    /// <summary>Pulls the file into the page cache so neither server pays for the first read from disk.</summary>
    public static void Warm(string path)
    {
        var buffer = new byte[Block];
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        while (file.Read(buffer) > 0) { }
    }
}
