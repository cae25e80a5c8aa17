namespace Isr.BlockDevice;

/// <summary>Tunables of <see cref="NbdServer"/>. The defaults suit a single QEMU client.</summary>
public sealed record NbdServerOptions
{
    /// <summary>Requests processed concurrently per connection; the reader stops reading beyond this.</summary>
    public int MaxInFlightRequests { get; init; } = 64;

    /// <summary>Payload bytes (read and write buffers) held per connection; bounds memory under pipelining.</summary>
    public long MaxInFlightBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>Largest READ/WRITE payload; advertised as the maximum block size.</summary>
    public int MaxPayloadSize { get; init; } = 32 * 1024 * 1024;

    /// <summary>Minimum block size advertised (1 = byte-granular requests are fine).</summary>
    public int MinimumBlockSize { get; init; } = 1;

    /// <summary>Optional human-readable export description (NBD_INFO_DESCRIPTION, NBD_REP_SERVER).</summary>
    public string? Description { get; init; }

    /// <summary>Advertise the export read-only and refuse writes with EPERM.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>Clients that do not finish option haggling within this time are dropped.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Diagnostics sink (connection events, protocol violations, device errors). Must be thread-safe.</summary>
    public Action<string>? Log { get; init; }
}
