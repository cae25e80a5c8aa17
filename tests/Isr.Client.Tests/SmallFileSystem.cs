using System.Diagnostics;

namespace Isr.Testing;

/// <summary>
/// A real, small file system (tmpfs with size=) mounted for one test, so that ENOSPC comes from the kernel, not a fake.
/// Mounting needs root (CI runs as root); without it the test fails and says so, it does not skip.
/// </summary>
public sealed class SmallFileSystem : IDisposable
{
    public string Path { get; }

    /// <param name="at">An empty directory to mount on (made if needed); default: a new temporary directory.</param>
    public SmallFileSystem(long bytes, string? at = null)
    {
        Path = at is null ? Directory.CreateTempSubdirectory("isr-smallfs-").FullName : Directory.CreateDirectory(at).FullName;
        var (code, error) = Run("mount", "-t", "tmpfs", "-o", $"size={bytes},mode=0700", "tmpfs", Path);
        if (code != 0)
        {
            Directory.Delete(Path);
            throw new InvalidOperationException($"SMALL FILE SYSTEM UNAVAILABLE: 'mount -t tmpfs' failed ({error.Trim()}); these disk-full tests need root");
        }
    }

    /// <summary>Fills the file system with one file until fewer than <paramref name="leave"/> bytes are free; returns the file.</summary>
    public string Fill(long leave)
    {
        var filler = System.IO.Path.Combine(Path, "filler");
        using var file = new FileStream(filler, FileMode.Create);
        var block = new byte[4096];
        try
        {
            while (new DriveInfo(Path).AvailableFreeSpace > leave) file.Write(block);
            file.Flush();
        }
        catch (IOException) { } // full already
        return filler;
    }

    private static (int, string) Run(params string[] args)
    {
        var start = new ProcessStartInfo(args[0]) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args[1..]) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromSeconds(30))) { process.Kill(); return (-1, "timed out"); }
        return (process.ExitCode, error);
    }

    public void Dispose()
    {
        Run("umount", Path);
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
