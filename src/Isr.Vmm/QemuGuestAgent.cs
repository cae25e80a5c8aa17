using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Isr.Vmm;

/// <summary>The guest agent answered with an error (its "desc").</summary>
public sealed class QemuGuestAgentException(string message) : Exception(message);

/// <summary>
/// A client of qemu-guest-agent on the VM's guest-agent socket (QGA protocol: one JSON request per line). Each use
/// starts with <c>guest-sync-delimited</c>, whose answer follows a 0xFF byte, so a stale reply left for an earlier
/// client is skipped rather than taken for ours.
/// </summary>
public static class QemuGuestAgent
{
    /// <summary>Sets the guest's clock (<c>guest-set-time</c>, nanoseconds since the epoch). Throws
    /// <see cref="TimeoutException"/> when no agent answers within <paramref name="timeout"/> (none runs in the guest).</summary>
    public static async Task SetTimeAsync(string socketPath, DateTimeOffset time, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cts.Token).ConfigureAwait(false);
            await using var stream = new NetworkStream(socket, ownsSocket: false);
            int id = Random.Shared.Next(1, int.MaxValue);
            // A leading 0xFF makes the agent drop any partial request an earlier client left in its parser.
            await stream.WriteAsync(new byte[] { 0xFF }, cts.Token).ConfigureAwait(false);
            await SendAsync(stream, "guest-sync-delimited", new JsonObject { ["id"] = id }, cts.Token).ConfigureAwait(false);
            while (true)
            {
                while (await ReadByteAsync(stream, cts.Token).ConfigureAwait(false) != 0xFF) { }
                var reply = await ReadReplyAsync(stream, cts.Token).ConfigureAwait(false);
                if (reply["return"] is JsonValue v && v.TryGetValue<long>(out var echoed) && echoed == id) break;
            }
            long nanoseconds = (time - DateTimeOffset.UnixEpoch).Ticks * 100;
            await SendAsync(stream, "guest-set-time", new JsonObject { ["time"] = nanoseconds }, cts.Token).ConfigureAwait(false);
            var answer = await ReadReplyAsync(stream, cts.Token).ConfigureAwait(false);
            if (answer["error"] is JsonObject error)
                throw new QemuGuestAgentException($"the guest agent refused guest-set-time: {error["desc"]}");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"no guest agent answered within {timeout.TotalSeconds:0} s (is qemu-guest-agent running in the guest?)");
        }
    }

    private static async Task SendAsync(Stream stream, string command, JsonObject arguments, CancellationToken ct)
    {
        var line = new JsonObject { ["execute"] = command, ["arguments"] = arguments }.ToJsonString() + "\n";
        await stream.WriteAsync(Encoding.UTF8.GetBytes(line), ct).ConfigureAwait(false);
    }

    private static async Task<JsonObject> ReadReplyAsync(Stream stream, CancellationToken ct)
    {
        var line = new List<byte>();
        for (int b; (b = await ReadByteAsync(stream, ct).ConfigureAwait(false)) != '\n';)
        {
            if (line.Count > 65536) throw new QemuGuestAgentException("the guest agent sent an over-long reply");
            line.Add((byte)b);
        }
        return JsonNode.Parse(line.ToArray()) as JsonObject ?? throw new QemuGuestAgentException("the guest agent sent a reply that is not a JSON object");
    }

    private static async Task<int> ReadByteAsync(Stream stream, CancellationToken ct)
    {
        var one = new byte[1];
        if (await stream.ReadAsync(one, ct).ConfigureAwait(false) == 0) throw new IOException("the guest agent socket closed");
        return one[0];
    }
}
