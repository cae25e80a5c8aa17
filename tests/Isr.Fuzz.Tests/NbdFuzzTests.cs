using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using Isr.BlockDevice;

namespace Isr.Fuzz.Tests;

/// <summary>
/// The NBD server fed mutated client byte streams (a valid handshake, then requests) over a real Unix socket pair, while a
/// well-formed client works on the same <see cref="NbdServer"/> the whole time. Every change the server makes to the device
/// must be explained by a well-formed request in the input; a sentinel region no seed request touches is checked after
/// every case; the server must finish every connection within the case timeout once the client has closed its end.
/// </summary>
public sealed class NbdFuzzTests(ITestOutputHelper output)
{
    // Wire constants (NetworkBlockDevice doc/proto.md)
    private const ulong InitMagic = 0x4E42444D41474943, OptionMagic = 0x49484156454F5054, OptionReplyMagic = 0x0003E889045565A9;
    private const uint RequestMagic = 0x25609513, SimpleReplyMagic = 0x67446698;
    private const uint OptExportName = 1, OptAbort = 2, OptList = 3, OptInfo = 6, OptGo = 7, OptStructuredReply = 8, OptListMeta = 9, OptSetMeta = 10;
    private const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2, CmdFlush = 3, CmdTrim = 4, CmdWriteZeroes = 6, CmdBlockStatus = 7;
    private const ushort FlagFua = 1, FlagNoHole = 2, FlagDf = 4, FlagReqOne = 8;

    private const string Export = "fuzz";
    private const long DeviceSize = 16 << 20;
    private const int SeedRange = 1 << 20;                                   // seed requests stay below 1 MiB
    private const long SentinelStart = 4 << 20, SentinelLength = 1 << 20;   // no seed request touches it
    private const long GoodStart = 12 << 20, GoodLength = 1 << 20;           // the well-formed client's region
    private const int MaxPayload = 1 << 20;

    // ---------------------------------------------------------------- seeds

    private sealed record Part(byte[] Data, Field[] Fields);

    private sealed record Script(List<Part> Handshake, List<Part> Requests, bool Structured)
    {
        public Seed Flatten(IEnumerable<Part>? requests = null)
        {
            var bytes = new List<byte>();
            var fields = new List<Field>();
            foreach (var part in Handshake.Concat(requests ?? Requests))
            {
                fields.AddRange(part.Fields.Select(f => f with { Offset = f.Offset + bytes.Count }));
                bytes.AddRange(part.Data);
            }
            return new Seed([.. bytes], fields);
        }
    }

    private static byte[] U16(ushort v) { var b = new byte[2]; BinaryPrimitives.WriteUInt16BigEndian(b, v); return b; }
    private static byte[] U32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); return b; }
    private static byte[] U64(ulong v) { var b = new byte[8]; BinaryPrimitives.WriteUInt64BigEndian(b, v); return b; }

    private static Part Option(uint option, byte[] data) =>
        new([.. U64(OptionMagic), .. U32(option), .. U32((uint)data.Length), .. data], [new Field(8, 4, true), new Field(12, 4, true)]);

    private static byte[] Str(string s) { var b = Encoding.UTF8.GetBytes(s); return [.. U32((uint)b.Length), .. b]; }

    private static byte[] MetaQuery(string export, params string[] queries) =>
        [.. Str(export), .. U32((uint)queries.Length), .. queries.SelectMany(Str)];

    private static byte[] InfoRequest(string export, params ushort[] infos) =>
        [.. Str(export), .. U16((ushort)infos.Length), .. infos.SelectMany(U16)];

    private static Part Request(ushort flags, ushort type, ulong handle, ulong offset, uint length, byte[]? payload = null) =>
        new([.. U32(RequestMagic), .. U16(flags), .. U16(type), .. U64(handle), .. U64(offset), .. U32(length), .. payload ?? []],
            [new Field(0, 4, true), new Field(4, 2, true), new Field(6, 2, true), new Field(16, 8, true), new Field(24, 4, true)]);

    private static Script BuildScript(Random rng)
    {
        bool noZeroes = rng.Next(4) != 0;
        var handshake = new List<Part> { new(U32(noZeroes ? 3u : 1u), [new Field(0, 4, true)]) };
        bool structured = false, meta = false;
        if (rng.Next(4) == 0) handshake.Add(Option(OptList, []));
        if (rng.Next(5) == 0) handshake.Add(Option(0x42, Encoding.ASCII.GetBytes("unknown")));
        if (rng.Next(3) != 0)
        {
            handshake.Add(Option(OptStructuredReply, []));
            structured = true;
            if (rng.Next(3) == 0) handshake.Add(Option(OptListMeta, MetaQuery(Export, "base:")));
            if (rng.Next(3) != 0)
            {
                handshake.Add(Option(OptSetMeta, MetaQuery(rng.Next(2) == 0 ? "" : Export, "base:allocation")));
                meta = true;
            }
        }
        if (rng.Next(4) == 0) handshake.Add(Option(OptInfo, InfoRequest(Export, 1, 2, 3)));
        int end = rng.Next(10);
        if (end == 0) handshake.Add(Option(OptAbort, []));
        else if (end <= 2) handshake.Add(Option(OptExportName, Encoding.UTF8.GetBytes(rng.Next(2) == 0 ? "" : Export)));
        else handshake.Add(Option(OptGo, InfoRequest(rng.Next(3) == 0 ? "" : Export, rng.Next(2) == 0 ? [] : [1, 3])));

        var requests = new List<Part>();
        int count = 1 + rng.Next(12);
        for (int i = 0; i < count; i++)
        {
            ulong handle = (ulong)rng.NextInt64();
            uint length = (uint)rng.Next(1, rng.Next(4) == 0 ? 65536 : 4096);
            ulong offset = (ulong)rng.Next(SeedRange - (int)length);
            ushort fua = rng.Next(4) == 0 ? FlagFua : (ushort)0;
            requests.Add(rng.Next(9) switch
            {
                0 or 1 => Request((ushort)(fua | (structured && rng.Next(2) == 0 ? FlagDf : 0)), CmdRead, handle, offset, length),
                2 or 3 => Request(fua, CmdWrite, handle, offset, length, Crypto.Bytes(rng, (int)length)),
                4 => Request(0, CmdFlush, handle, 0, 0),
                5 => Request(fua, CmdTrim, handle, offset, length),
                6 => Request((ushort)(fua | (rng.Next(2) == 0 ? FlagNoHole : 0)), CmdWriteZeroes, handle, offset, length),
                7 when meta => Request(rng.Next(2) == 0 ? FlagReqOne : (ushort)0, CmdBlockStatus, handle, offset, length),
                _ => Request(0, CmdRead, handle, offset, 0),
            });
        }
        if (rng.Next(2) == 0) requests.Add(Request(0, CmdDisc, (ulong)rng.NextInt64(), 0, 0));
        return new Script(handshake, requests, structured);
    }

    /// <summary>The requests the issue names: bad magic, huge lengths, offsets past the end, unknown commands and flags, truncated payloads.</summary>
    private static Part Malformed(Random rng)
    {
        ulong handle = (ulong)rng.NextInt64();
        ulong[] offsets = [DeviceSize, DeviceSize - 1, DeviceSize + 1, (ulong)long.MaxValue, ulong.MaxValue, ulong.MaxValue - 511, 1UL << 63, SentinelStart - 1];
        uint[] lengths = [uint.MaxValue, int.MaxValue, 0x80000000, MaxPayload + 1, (uint)DeviceSize, 2, 0];
        ushort[] types = [CmdRead, CmdWrite, CmdTrim, CmdWriteZeroes, CmdBlockStatus, CmdFlush];
        return rng.Next(7) switch
        {
            0 => new Part([.. U32(0xDEADBEEF), .. Request(0, CmdRead, handle, 0, 512).Data[4..]], []),
            1 => Request(0, types[rng.Next(types.Length)], handle, (ulong)rng.Next(SeedRange), lengths[rng.Next(lengths.Length)]),
            2 => Request(0, types[rng.Next(types.Length)], handle, offsets[rng.Next(offsets.Length)], (uint)rng.Next(1, 8192)),
            3 => Request(0, (ushort)new[] { 5, 8, 9, 0x100, 0x7FFF, 0xFFFF }[rng.Next(6)], handle, 0, 512),
            4 => Request((ushort)(1 << rng.Next(16) | (rng.Next(2) == 0 ? 0xFFFF : 0)), types[rng.Next(types.Length)], handle, 0, 512),
            5 => Request(0, CmdWrite, handle, (ulong)rng.Next(SeedRange - 4096), 4096, Crypto.Bytes(rng, rng.Next(4096))), // short payload
            _ => Request(0, CmdWrite, handle, offsets[rng.Next(offsets.Length)], (uint)rng.Next(1, 4096), Crypto.Bytes(rng, rng.Next(4096))),
        };
    }

    private static Seed MakeInput(Random rng, List<Script> scripts, List<Seed> pool)
    {
        var script = scripts[rng.Next(scripts.Count)];
        Seed seed;
        if (rng.Next(10) < 4)
        {
            // Structural: interleave with another script's requests, duplicate, drop, swap, add malformed requests.
            var requests = new List<Part>(script.Requests);
            int ops = 1 + rng.Next(4);
            for (int i = 0; i < ops; i++)
            {
                switch (rng.Next(5))
                {
                    case 0:
                        var other = scripts[rng.Next(scripts.Count)].Requests;
                        requests.Insert(rng.Next(requests.Count + 1), other[rng.Next(other.Count)]);
                        break;
                    case 1 when requests.Count > 0:
                        requests.Insert(rng.Next(requests.Count + 1), requests[rng.Next(requests.Count)]);
                        break;
                    case 2 when requests.Count > 0:
                        requests.RemoveAt(rng.Next(requests.Count));
                        break;
                    case 3 when requests.Count > 1:
                        int a = rng.Next(requests.Count), b = rng.Next(requests.Count);
                        (requests[a], requests[b]) = (requests[b], requests[a]);
                        break;
                    default:
                        requests.Insert(rng.Next(requests.Count + 1), Malformed(rng));
                        break;
                }
            }
            seed = script.Flatten(requests);
            if (rng.Next(2) == 0) return seed;
        }
        else seed = script.Flatten();
        return new Seed(Mutator.Mutate(rng, seed, pool, maxLength: 4 << 20), seed.Fields);
    }

    // ---------------------------------------------------------------- the device, watched

    private enum OpKind { Write, WriteZeroes, Trim }

    private sealed record Op(OpKind Kind, long Offset, long Length, byte[]? Data, bool Fua);

    /// <summary>Records every change per connection (the label flows from the test into the connection's threads).</summary>
    private sealed class WatchedDevice(MemoryBlockDevice inner) : IBlockDevice
    {
        public static readonly AsyncLocal<string?> Label = new();
        public MemoryBlockDevice Inner => inner;
        public readonly ConcurrentDictionary<string, ConcurrentQueue<Op>> Ops = new();
        public readonly ConcurrentQueue<string> Violations = new();
        private long _goodRegionIntrusions;
        public long GoodRegionIntrusions => Interlocked.Read(ref _goodRegionIntrusions);

        public long Size => inner.Size;
        public int PreferredBlockSize => inner.PreferredBlockSize;

        private void Check(string what, long offset, long length)
        {
            if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
                Violations.Enqueue($"{Label.Value ?? "?"}: {what} {offset}+{length} outside the device reached the device");
        }

        private void Record(Op op)
        {
            Check(op.Kind.ToString(), op.Offset, op.Length);
            string label = Label.Value ?? "?";
            if (label == "?") Violations.Enqueue($"a {op.Kind} at {op.Offset}+{op.Length} from no known connection");
            if (label != "good" && op.Offset < GoodStart + GoodLength && op.Offset + op.Length > GoodStart) Interlocked.Increment(ref _goodRegionIntrusions);
            Ops.GetOrAdd(label, _ => new()).Enqueue(op);
        }

        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct)
        {
            Check("read", offset, buffer.Length);
            return inner.ReadAsync(offset, buffer, ct);
        }

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken ct)
        {
            Record(new Op(OpKind.Write, offset, data.Length, data.ToArray(), fua));
            return inner.WriteAsync(offset, data, fua, ct);
        }

        public ValueTask WriteZeroesAsync(long offset, long length, bool fua, CancellationToken ct)
        {
            Record(new Op(OpKind.WriteZeroes, offset, length, null, fua));
            return inner.WriteZeroesAsync(offset, length, fua, ct);
        }

        public ValueTask TrimAsync(long offset, long length, CancellationToken ct)
        {
            Record(new Op(OpKind.Trim, offset, length, null, false));
            return inner.TrimAsync(offset, length, ct);
        }

        public ValueTask FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);

        public ValueTask<IReadOnlyList<Extent>> MapAsync(long offset, long length, CancellationToken ct)
        {
            Check("map", offset, length);
            return inner.MapAsync(offset, length, ct);
        }
    }

    /// <summary>Is <paramref name="op"/> what some well-formed request header in the input asks for (with its exact payload)?</summary>
    private static bool Explained(Op op, byte[] input)
    {
        ushort type = op.Kind switch { OpKind.Write => CmdWrite, OpKind.Trim => CmdTrim, _ => CmdWriteZeroes };
        ushort allowed = op.Kind == OpKind.WriteZeroes ? (ushort)(FlagFua | FlagNoHole) : FlagFua;
        for (int i = 0; i + 28 <= input.Length; i++)
        {
            var h = input.AsSpan(i);
            if (BinaryPrimitives.ReadUInt32BigEndian(h) != RequestMagic || BinaryPrimitives.ReadUInt16BigEndian(h[6..]) != type) continue;
            ushort flags = BinaryPrimitives.ReadUInt16BigEndian(h[4..]);
            if ((flags & ~allowed) != 0) continue;
            if (op.Kind != OpKind.Trim && op.Fua != ((flags & FlagFua) != 0)) continue;
            if (BinaryPrimitives.ReadUInt64BigEndian(h[16..]) != (ulong)op.Offset || BinaryPrimitives.ReadUInt32BigEndian(h[24..]) != (ulong)op.Length) continue;
            if (op.Kind == OpKind.Write && (i + 28 + op.Length > input.Length || !h.Slice(28, (int)op.Length).SequenceEqual(op.Data))) continue;
            return true;
        }
        return false;
    }

    // ---------------------------------------------------------------- socket pairs

    private sealed class SocketPairs : IDisposable
    {
        private readonly Socket _listener = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("isr-fuzz-nbd-");
        private readonly UnixDomainSocketEndPoint _endpoint;

        public SocketPairs()
        {
            _endpoint = new UnixDomainSocketEndPoint(Path.Combine(_dir.FullName, "s"));
            _listener.Bind(_endpoint);
            _listener.Listen(16);
        }

        public async Task<(Socket Client, Socket Server)> CreateAsync()
        {
            var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            var accept = _listener.AcceptAsync();
            await client.ConnectAsync(_endpoint);
            return (client, await accept);
        }

        public void Dispose()
        {
            _listener.Dispose();
            _dir.Delete(recursive: true);
        }
    }

    // ---------------------------------------------------------------- the well-formed client

    private sealed class GoodClient(Socket socket, WatchedDevice device, int seed)
    {
        private readonly NetworkStream _stream = new(socket, ownsSocket: true);
        public long Rounds;
        public string? Failure;

        private async Task<byte[]> ReadAsync(int count, CancellationToken ct)
        {
            var b = new byte[count];
            await _stream.ReadExactlyAsync(b, ct);
            return b;
        }

        public async Task HandshakeAsync(CancellationToken ct)
        {
            var greeting = await ReadAsync(18, ct);
            if (BinaryPrimitives.ReadUInt64BigEndian(greeting) != InitMagic) throw new FuzzFailure("good client: bad greeting");
            await _stream.WriteAsync(U32(3), ct);
            await _stream.WriteAsync(Option(OptGo, InfoRequest(Export)).Data, ct);
            while (true)
            {
                var header = await ReadAsync(20, ct);
                if (BinaryPrimitives.ReadUInt64BigEndian(header) != OptionReplyMagic) throw new FuzzFailure("good client: bad option reply");
                uint type = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
                await ReadAsync((int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16)), ct);
                if (type == 1) return;
                if ((type & 0x80000000) != 0) throw new FuzzFailure($"good client: GO refused ({type:x})");
            }
        }

        private async Task<byte[]> CallAsync(ushort type, ulong handle, long offset, int length, byte[]? payload, int replyPayload, CancellationToken ct)
        {
            await _stream.WriteAsync(Request(0, type, handle, (ulong)offset, (uint)length, payload).Data, ct);
            var reply = await ReadAsync(16, ct);
            if (BinaryPrimitives.ReadUInt32BigEndian(reply) != SimpleReplyMagic) throw new FuzzFailure("good client: bad reply magic");
            if (BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(4)) != 0) throw new FuzzFailure($"good client: command {type} failed with error {BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(4))}");
            if (BinaryPrimitives.ReadUInt64BigEndian(reply.AsSpan(8)) != handle) throw new FuzzFailure("good client: reply for another handle");
            return replyPayload > 0 ? await ReadAsync(replyPayload, ct) : [];
        }

        public async Task RunAsync(CancellationToken stop)
        {
            var rng = new Random(seed);
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
                    var ct = timeout.Token;
                    int length = rng.Next(1, 65536);
                    long offset = GoodStart + rng.Next((int)GoodLength - length);
                    var data = Crypto.Bytes(rng, length);
                    long intrusions = device.GoodRegionIntrusions;
                    ulong handle = (ulong)rng.NextInt64();
                    await CallAsync(CmdWrite, handle, offset, length, data, 0, ct);
                    if (rng.Next(4) == 0) await CallAsync(CmdFlush, handle + 1, 0, 0, null, 0, ct);
                    var back = await CallAsync(CmdRead, handle + 2, offset, length, null, length, ct);
                    if (!back.AsSpan().SequenceEqual(data) && device.GoodRegionIntrusions == intrusions)
                        throw new FuzzFailure($"good client: read back other data than it wrote at {offset}+{length}");
                    Interlocked.Increment(ref Rounds);
                    await Task.Delay(rng.Next(3), CancellationToken.None);
                }
                await _stream.WriteAsync(Request(0, CmdDisc, 0, 0, 0).Data, CancellationToken.None);
            }
            catch (Exception e)
            {
                Failure = $"{e.GetType().Name}: {e.Message}";
            }
            finally
            {
                await _stream.DisposeAsync();
            }
        }
    }

    // ---------------------------------------------------------------- the target

    [Fact]
    public async Task NbdServer_ServeConnection_with_mutated_clients()
    {
        var setup = new Random(FuzzConfig.TargetSeed("nbd-seeds"));
        var scripts = Enumerable.Range(0, 40).Select(_ => BuildScript(setup)).ToList();
        var pool = scripts.Select(s => s.Flatten()).ToList();
        var sentinel = Crypto.Bytes(setup, (int)SentinelLength);

        var device = new WatchedDevice(new MemoryBlockDevice(DeviceSize, 4096));
        await device.Inner.WriteAsync(SentinelStart, sentinel, false, CancellationToken.None);
        var logs = new ConcurrentQueue<(string Label, string Line)>();
        var server = new NbdServer(device, Export, new NbdServerOptions
        {
            MaxPayloadSize = MaxPayload,
            HandshakeTimeout = TimeSpan.FromSeconds(20),
            Description = "fuzzed",
            Log = line => logs.Enqueue((WatchedDevice.Label.Value ?? "?", line)),
        });
        using var pairs = new SocketPairs();

        // The well-formed client, served by the same server for the whole run.
        var (goodSocket, goodServerSide) = await pairs.CreateAsync();
        Task goodServed;
        WatchedDevice.Label.Value = "good";
        goodServed = server.ServeConnectionAsync(new NetworkStream(goodServerSide, ownsSocket: true), CancellationToken.None);
        WatchedDevice.Label.Value = null;
        var good = new GoodClient(goodSocket, device, setup.Next());
        using (var handshakeTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(20)))
            await good.HandshakeAsync(handshakeTimeout.Token);
        using var stopGood = new CancellationTokenSource();
        var goodRun = Task.Run(() => good.RunAsync(stopGood.Token));

        long bytesIn = 0;
        var runner = new FuzzRunner(output, "nbd") { CaseTimeout = TimeSpan.FromSeconds(15) };
        try
        {
            runner.Run((rng, k, ctx) =>
            {
                var seed = MakeInput(rng, scripts, pool);
                ctx.Input = seed.Data;
                int ending = rng.Next(11);
                ctx.Note = ending switch
                {
                    < 7 => "client half-closes after sending",
                    < 9 => "client sends in small pieces, then half-closes",
                    9 => "client closes abruptly mid-stream",
                    _ => "client stays connected; the connection's token is cancelled",
                };
                string label = $"case{k}";
                string outcome = RunCaseAsync(server, pairs, device, seed.Data, rng, label, ending).GetAwaiter().GetResult();
                Interlocked.Add(ref bytesIn, seed.Data.Length);

                if (good.Failure is { } gf) throw new FuzzFailure($"the concurrent well-formed client failed: {gf}");
                if (device.Violations.TryPeek(out var violation)) throw new FuzzFailure(violation);
                bool attached = false;
                foreach (var (l, line) in logs)
                {
                    if (l != label) continue;
                    if (line.Contains("failed unexpectedly") || line.Contains("request handler failed"))
                        throw new FuzzFailure($"server bug logged: {line}");
                    attached |= line.Contains("client attached");
                }
                logs.Clear();
                outcome = (attached ? "reached transmission" : "ended in the handshake") + ending switch
                {
                    9 => ", client reset the connection",
                    10 => ", cancelled while the client stayed connected",
                    _ => "",
                };

                // Every change must come from a well-formed request in the input.
                var ops = device.Ops.TryRemove(label, out var q) ? q.ToList() : [];
                foreach (var op in ops)
                    if (!Explained(op, seed.Data))
                        throw new FuzzFailure($"the device saw a {op.Kind} at {op.Offset}+{op.Length} that no well-formed request in the input asks for");

                // The sentinel changes only where this case's (explained) requests wrote.
                var now = new byte[SentinelLength];
                device.Inner.ReadAsync(SentinelStart, now, CancellationToken.None).AsTask().GetAwaiter().GetResult();
                if (!now.AsSpan().SequenceEqual(sentinel))
                {
                    for (int i = 0; i < now.Length; i++)
                    {
                        if (now[i] == sentinel[i]) continue;
                        long at = SentinelStart + i;
                        bool covered = ops.Any(op => at >= op.Offset && at < op.Offset + op.Length &&
                            (op.Data is null ? now[i] == 0 : op.Data[at - op.Offset] == now[i]));
                        if (!covered) throw new FuzzFailure($"sentinel byte at {at} changed without a request covering it");
                    }
                    device.Inner.WriteAsync(SentinelStart, sentinel, false, CancellationToken.None).AsTask().GetAwaiter().GetResult();
                    outcome += ", wrote into the sentinel (well-formed request)";
                }
                return outcome;
            });
        }
        finally
        {
            stopGood.Cancel();
            await goodRun.WaitAsync(TimeSpan.FromSeconds(30));
            await goodServed.WaitAsync(TimeSpan.FromSeconds(30));
            await server.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }
        output.WriteLine($"[nbd] {Interlocked.Read(ref bytesIn)} bytes sent by fuzzed clients; the well-formed client completed {good.Rounds} write/read rounds concurrently");
        Assert.Null(good.Failure);
        Assert.True(good.Rounds > 0, "the well-formed client made no progress");
    }

    private static async Task<string> RunCaseAsync(NbdServer server, SocketPairs pairs, WatchedDevice device, byte[] input, Random rng, string label, int ending)
    {
        var (client, serverSide) = await pairs.CreateAsync();
        var serverStream = new NetworkStream(serverSide, ownsSocket: true);
        WatchedDevice.Label.Value = label;
        Task served;
        using var cancel = new CancellationTokenSource();
        try
        {
            served = server.ServeConnectionAsync(serverStream, cancel.Token);
        }
        finally
        {
            WatchedDevice.Label.Value = null;
        }

        long received = 0;
        var drain = Task.Run(async () =>
        {
            var buffer = new byte[64 * 1024];
            try
            {
                int n;
                while ((n = await client.ReceiveAsync(buffer, SocketFlags.None)) > 0) received += n;
            }
            catch (SocketException) { }
            catch (ObjectDisposedException) { }
        });

        int pieceSeed = rng.Next();
        int abruptAt = input.Length == 0 ? 0 : rng.Next(input.Length);
        var send = Task.Run(async () =>
        {
            var pieces = new Random(pieceSeed);
            try
            {
                int at = 0;
                int limit = ending == 9 ? abruptAt : input.Length;
                while (at < limit)
                {
                    int n = ending is 7 or 8 && at < 1024 ? Math.Min(limit - at, 1 + pieces.Next(40)) : limit - at;
                    at += await client.SendAsync(input.AsMemory(at, n), SocketFlags.None);
                    if (ending is 7 or 8 && at < 1024) await Task.Yield();
                }
                if (ending == 9)
                {
                    client.LingerState = new LingerOption(true, 0); // reset, not a clean end of stream
                    client.Close();
                }
                else if (ending != 10) client.Shutdown(SocketShutdown.Send);
            }
            catch (SocketException) { } // the server hung up first: allowed
            catch (ObjectDisposedException) { }
        });

        if (ending == 10)
        {
            // The client keeps its end open (the server may be blocked in a read): only the token can end this connection.
            await Task.WhenAny(send, Task.Delay(TimeSpan.FromSeconds(5)));
            await Task.Delay(rng.Next(20));
            cancel.Cancel();
        }
        // The server must be done soon after the client's end is closed or the token fires (and never throw).
        var finished = await Task.WhenAny(served, Task.Delay(TimeSpan.FromSeconds(10)));
        if (finished != served)
        {
            throw new FuzzFailure(ending == 10
                ? "the server did not finish the connection within 10 s of its token being cancelled (hang)"
                : "the server did not finish the connection within 10 s of the client closing its end (hang)");
        }
        if (!served.IsCompletedSuccessfully) throw new FuzzFailure($"ServeConnectionAsync faulted: {served.Exception}");
        await serverStream.DisposeAsync();
        await send.WaitAsync(TimeSpan.FromSeconds(10));
        client.Dispose();
        await drain.WaitAsync(TimeSpan.FromSeconds(10));
        return received == 0 ? "no reply" : "served";
    }
}
