namespace Isr.Vmm;

/// <summary>
/// Where the guest's disk blocks come from at this site. Host-side only: the guest sees the same
/// virtio-blk device whatever the backend.
/// </summary>
public abstract record QemuDiskBackend
{
    private protected QemuDiskBackend()
    {
    }

    /// <summary>Our NBD server on a unix socket (the normal ISR case).</summary>
    /// <param name="SocketPath">Absolute path of the NBD server's unix socket.</param>
    /// <param name="ExportName">NBD export name.</param>
    public sealed record Nbd(string SocketPath, string ExportName) : QemuDiskBackend;

    /// <summary>A raw image file opened directly by QEMU (local debugging, tests).</summary>
    public sealed record RawFile(string Path) : QemuDiskBackend;

    /// <summary>A disk of the given size that reads zeros and discards writes (tests without storage).</summary>
    public sealed record Null(long SizeBytes) : QemuDiskBackend;
}
