namespace Isr.Vmm;

/// <summary>The QMP connection closed (usually because QEMU exited) before a reply arrived.</summary>
public sealed class QmpConnectionClosedException(string message, Exception? inner = null)
    : IOException(message, inner);
