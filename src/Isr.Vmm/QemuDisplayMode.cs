using System.Text.Json.Serialization;

namespace Isr.Vmm;

/// <summary>How this site shows the guest's display adapter. Never changes the guest's devices.</summary>
[JsonConverter(typeof(CamelCaseEnumConverter<QemuDisplayMode>))]
public enum QemuDisplayMode
{
    /// <summary><c>-display none</c>: no output anywhere.</summary>
    Headless,
    /// <summary>VNC server on a unix socket or a loopback TCP port (never on a public address).</summary>
    Vnc,
    /// <summary>A local window (<c>-display gtk</c> or <c>sdl</c>; needs QEMU's GUI modules).</summary>
    Window,
}
