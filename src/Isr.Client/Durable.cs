namespace Isr.Client;

/// <summary>Crash-safe small-file writes: write a temporary file, fsync, rename over the target.</summary>
public static class Durable
{
    /// <param name="replace">false: fail with <see cref="IOException"/> if <paramref name="path"/> exists (link, not rename).</param>
    public static void WriteFileAtomically(string path, ReadOnlySpan<byte> content, bool replace = true)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var temp = $"{path}.{Environment.ProcessId}.tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            file.Write(content);
            file.Flush(flushToDisk: true);
        }
        try
        {
            File.Move(temp, path, overwrite: replace);
        }
        finally
        {
            File.Delete(temp);
        }
    }
}
