namespace Isr.Vmm;

/// <summary>Why a QEMU process ended.</summary>
public enum QemuExitReason
{
    /// <summary>We asked it to quit (QMP <c>quit</c>).</summary>
    Quit,
    /// <summary>The guest powered itself off (SHUTDOWN event from the guest); the disk is clean, there is no memory state.</summary>
    GuestPoweredOff,
    /// <summary>We killed it.</summary>
    Killed,
    /// <summary>
    /// It ended without being asked: an error (e.g. a failed incoming migration exits QEMU),
    /// a signal from elsewhere, or a crash. The output tail usually says which.
    /// </summary>
    Crashed,
}
