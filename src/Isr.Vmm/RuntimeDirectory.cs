namespace Isr.Vmm;

/// <summary>
/// A private (0700) directory for a QEMU's unix sockets. Kept short under /tmp because socket
/// paths are limited to ~107 bytes, and private so other local users cannot reach QMP or the
/// migration stream.
/// </summary>
internal sealed class RuntimeDirectory
{
    private RuntimeDirectory(string path) => Path = path;

    public string Path { get; }

    public static RuntimeDirectory Create(string purpose)
    {
        var root = OperatingSystem.IsWindows() ? System.IO.Path.GetTempPath() : "/tmp";
        var path = System.IO.Path.Combine(root, $"isr-{purpose}-{Guid.NewGuid():N}"[..(purpose.Length + 21)]); // 16 random hex digits
        if (OperatingSystem.IsWindows())
            Directory.CreateDirectory(path);
        else
            Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return new RuntimeDirectory(path);
    }

    /// <summary>A fresh socket path inside the directory.</summary>
    public string NewSocketPath(string name) =>
        System.IO.Path.Combine(Path, $"{name}-{Guid.NewGuid():N}"[..(name.Length + 9)] + ".sock"); // 8 random hex digits

    public void Delete()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort: a leftover empty socket directory in /tmp is harmless.
        }
    }
}
