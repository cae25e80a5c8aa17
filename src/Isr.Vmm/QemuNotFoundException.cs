namespace Isr.Vmm;

/// <summary>The QEMU binary is missing; the message says how to fix it.</summary>
public sealed class QemuNotFoundException(string message) : FileNotFoundException(message);
