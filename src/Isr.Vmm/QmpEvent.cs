using System.Text.Json;

namespace Isr.Vmm;

/// <summary>An asynchronous QMP event (STOP, RESUME, SHUTDOWN, BLOCK_IO_ERROR, MIGRATION, ...).</summary>
/// <param name="Name">Event name as sent by QEMU, e.g. "SHUTDOWN".</param>
/// <param name="Data">The event's "data" member, or an undefined element if it had none.</param>
/// <param name="Timestamp">QEMU's timestamp for the event.</param>
public sealed record QmpEvent(string Name, JsonElement Data, DateTimeOffset Timestamp);
