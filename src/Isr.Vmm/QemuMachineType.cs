namespace Isr.Vmm;

/// <summary>A machine type as reported by QMP <c>query-machines</c>.</summary>
/// <param name="Name">Versioned name, e.g. <c>pc-q35-7.2</c>.</param>
/// <param name="Alias">Unversioned alias that currently points at it (e.g. <c>q35</c>), if any.</param>
/// <param name="IsDefault">True for the machine QEMU uses without <c>-machine</c>.</param>
/// <param name="Deprecated">QEMU marks old machine types deprecated before removing them.</param>
public sealed record QemuMachineType(string Name, string? Alias, bool IsDefault, bool Deprecated);
