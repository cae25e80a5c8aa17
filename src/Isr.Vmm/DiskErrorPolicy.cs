namespace Isr.Vmm;

/// <summary>What QEMU does when the disk backend (e.g. a chunk fetch behind NBD) fails.</summary>
public enum DiskErrorPolicy
{
    /// <summary>Pause the VM (BLOCK_IO_ERROR + STOP events) and retry the request on <c>cont</c>; the guest never sees the error.</summary>
    Stop,
    /// <summary>Pass the I/O error to the guest.</summary>
    Report,
}
