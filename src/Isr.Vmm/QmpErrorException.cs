namespace Isr.Vmm;

/// <summary>QEMU answered a QMP command with an error response.</summary>
public sealed class QmpErrorException(string command, string errorClass, string description)
    : Exception($"QMP command '{command}' failed: {errorClass}: {description}")
{
    public string Command { get; } = command;

    /// <summary>QMP error class, e.g. "GenericError", "CommandNotFound", "DeviceNotActive".</summary>
    public string ErrorClass { get; } = errorClass;

    public string Description { get; } = description;
}
