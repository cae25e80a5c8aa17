using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Isr.BlockDevice.Tests;

/// <summary>A deliberately dumb, scripted NBD client: every byte on the wire is spelled out by the test.</summary>
internal sealed class NbdTestClient : IAsyncDisposable
{
    public const uint ReplyAck = 1, ReplyServer = 2, ReplyInfo = 3, ReplyMetaContext = 4;
    public const uint ErrUnsup = 0x80000001, ErrInvalid = 0x80000003, ErrUnknown = 0x80000006;
    public const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2, CmdFlush = 3, CmdTrim = 4, CmdWriteZeroes = 6, CmdBlockStatus = 7;
    public const ushort FlagFua = 1, FlagDf = 4, FlagReqOne = 8;
    public const uint EPerm = 1, EIo = 5, EInval = 22, ENoSpc = 28;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private NbdTestClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public ushort HandshakeFlags { get; private set; }

    public static async Task<NbdTestClient> ConnectAsync(string socketPath, bool noZeroes = true)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath));
        var client = new NbdTestClient(socket);
        byte[] greeting = await client.ReadAsync(18);
        Assert.Equal(0x4E42444D41474943UL, BinaryPrimitives.ReadUInt64BigEndian(greeting));
        Assert.Equal(0x49484156454F5054UL, BinaryPrimitives.ReadUInt64BigEndian(greeting.AsSpan(8)));
        client.HandshakeFlags = BinaryPrimitives.ReadUInt16BigEndian(greeting.AsSpan(16));
        await client.SendAsync(U32(noZeroes ? 3u : 1u));
        return client;
    }

    /// <summary>Full modern negotiation: structured replies, base:allocation, GO.</summary>
    public static async Task<(NbdTestClient Client, long Size, ushort Flags)> ConnectAndGoAsync(string socketPath, string export, bool structured = true)
    {
        var client = await ConnectAsync(socketPath);
        if (structured)
        {
            await client.SendOptionAsync(8, []);
            Assert.Equal(ReplyAck, (await client.ReadOptionReplyAsync()).Type);
            await client.SendOptionAsync(10, MetaContextQuery(export, "base:allocation"));
            var context = await client.ReadOptionReplyAsync();
            Assert.Equal(ReplyMetaContext, context.Type);
            Assert.Equal("base:allocation", Encoding.ASCII.GetString(context.Data, 4, context.Data.Length - 4));
            Assert.Equal(ReplyAck, (await client.ReadOptionReplyAsync()).Type);
        }
        var (size, flags, _) = await client.GoAsync(export);
        return (client, size, flags);
    }

    /// <summary>Sends NBD_OPT_GO; returns size, transmission flags and the block size triple, or throws on an error reply.</summary>
    public async Task<(long Size, ushort Flags, (uint Min, uint Preferred, uint Max) BlockSize)> GoAsync(string export, params ushort[] infos)
    {
        await SendOptionAsync(7, InfoRequest(export, infos));
        long size = -1;
        ushort flags = 0;
        (uint, uint, uint) blockSize = default;
        while (true)
        {
            var reply = await ReadOptionReplyAsync();
            if (reply.Type == ReplyAck) break;
            Assert.Equal(ReplyInfo, reply.Type);
            ushort info = BinaryPrimitives.ReadUInt16BigEndian(reply.Data);
            if (info == 0)
            {
                size = (long)BinaryPrimitives.ReadUInt64BigEndian(reply.Data.AsSpan(2));
                flags = BinaryPrimitives.ReadUInt16BigEndian(reply.Data.AsSpan(10));
            }
            else if (info == 3)
            {
                blockSize = (BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(2)),
                    BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(6)),
                    BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(10)));
            }
        }
        return (size, flags, blockSize);
    }

    public static byte[] InfoRequest(string export, params ushort[] infos)
    {
        byte[] name = Encoding.UTF8.GetBytes(export);
        var data = new byte[4 + name.Length + 2 + 2 * infos.Length];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(4 + name.Length), (ushort)infos.Length);
        for (int i = 0; i < infos.Length; i++)
            BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6 + name.Length + 2 * i), infos[i]);
        return data;
    }

    public static byte[] MetaContextQuery(string export, params string[] queries)
    {
        var ms = new MemoryStream();
        void Str(string s) { var b = Encoding.UTF8.GetBytes(s); ms.Write(U32((uint)b.Length)); ms.Write(b); }
        Str(export);
        ms.Write(U32((uint)queries.Length));
        foreach (var q in queries) Str(q);
        return ms.ToArray();
    }

    public Task SendOptionAsync(uint option, byte[] data)
    {
        var message = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, 0x49484156454F5054);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), (uint)data.Length);
        data.CopyTo(message, 16);
        return SendAsync(message);
    }

    public async Task<(uint Option, uint Type, byte[] Data)> ReadOptionReplyAsync()
    {
        byte[] header = await ReadAsync(20);
        Assert.Equal(0x0003E889045565A9UL, BinaryPrimitives.ReadUInt64BigEndian(header));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        return (BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), await ReadAsync((int)length));
    }

    public static byte[] Request(ushort type, ulong handle, ulong offset, uint length, ushort flags = 0, byte[]? payload = null, uint magic = 0x25609513)
    {
        var message = new byte[28 + (payload?.Length ?? 0)];
        BinaryPrimitives.WriteUInt32BigEndian(message, magic);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(message.AsSpan(8), handle);
        BinaryPrimitives.WriteUInt64BigEndian(message.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(24), length);
        payload?.CopyTo(message, 28);
        return message;
    }

    public Task SendRequestAsync(ushort type, ulong handle, ulong offset, uint length, ushort flags = 0, byte[]? payload = null) =>
        SendAsync(Request(type, handle, offset, length, flags, payload));

    /// <summary>Reads a simple reply; <paramref name="dataLength"/> bytes of payload follow it only on success.</summary>
    public async Task<(ulong Handle, uint Error, byte[] Data)> ReadSimpleReplyAsync(int dataLength = 0)
    {
        byte[] header = await ReadAsync(16);
        Assert.Equal(0x67446698u, BinaryPrimitives.ReadUInt32BigEndian(header));
        uint error = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(4));
        ulong handle = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8));
        return (handle, error, error == 0 && dataLength > 0 ? await ReadAsync(dataLength) : []);
    }

    public sealed record Chunk(ushort Flags, ushort Type, ulong Handle, byte[] Payload)
    {
        public bool Done => (Flags & 1) != 0;
        public uint Error => BinaryPrimitives.ReadUInt32BigEndian(Payload);
        public ulong Offset => BinaryPrimitives.ReadUInt64BigEndian(Payload);
    }

    /// <summary>Reads one reply message of either kind; simple replies are returned as a chunk of type 0xFFFF.</summary>
    public async Task<Chunk> ReadAnyAsync()
    {
        byte[] magic = await ReadAsync(4);
        uint value = BinaryPrimitives.ReadUInt32BigEndian(magic);
        if (value == 0x67446698)
        {
            byte[] rest = await ReadAsync(12);
            return new Chunk(1, 0xFFFF, BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)), rest[..4]);
        }
        Assert.Equal(0x668E33EFu, value);
        byte[] header = await ReadAsync(16);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
        return new Chunk(BinaryPrimitives.ReadUInt16BigEndian(header), BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(2)),
            BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(4)), await ReadAsync((int)length));
    }

    /// <summary>Reads the chunks of one structured reply (assumes no interleaving with other handles).</summary>
    public async Task<List<Chunk>> ReadStructuredReplyAsync()
    {
        var chunks = new List<Chunk>();
        Chunk chunk;
        do
        {
            chunk = await ReadAnyAsync();
            Assert.NotEqual(0xFFFF, chunk.Type);
            chunks.Add(chunk);
        } while (!chunk.Done);
        return chunks;
    }

    /// <summary>Reassembles a structured read reply into bytes, checking that chunks cover the range exactly once.</summary>
    public static byte[] Assemble(List<Chunk> chunks, long offset, int length)
    {
        var data = new byte[length];
        var covered = new bool[length];
        foreach (var c in chunks)
        {
            int start, count;
            if (c.Type == 1) { start = (int)((long)c.Offset - offset); count = c.Payload.Length - 8; c.Payload.AsSpan(8).CopyTo(data.AsSpan(start)); }
            else if (c.Type == 2) { start = (int)((long)c.Offset - offset); count = (int)BinaryPrimitives.ReadUInt32BigEndian(c.Payload.AsSpan(8)); }
            else if (c.Type == 0) continue;
            else throw new Xunit.Sdk.XunitException($"unexpected chunk type {c.Type} (error {c.Error})");
            for (int i = start; i < start + count; i++)
            {
                Assert.False(covered[i], $"byte {i} covered twice");
                covered[i] = true;
            }
        }
        Assert.All(covered, Assert.True);
        return data;
    }

    public async Task SendAsync(byte[] data)
    {
        using var cts = new CancellationTokenSource(Timeout);
        await _stream.WriteAsync(data, cts.Token);
    }

    public async Task<byte[]> ReadAsync(int count)
    {
        var data = new byte[count];
        using var cts = new CancellationTokenSource(Timeout);
        await _stream.ReadExactlyAsync(data, cts.Token);
        return data;
    }

    /// <summary>True once the server has closed the connection (reads hit end of stream).</summary>
    public async Task<bool> IsClosedByServerAsync()
    {
        var buffer = new byte[256];
        using var cts = new CancellationTokenSource(Timeout);
        try
        {
            while (true)
            {
                if (await _stream.ReadAsync(buffer, cts.Token) == 0) return true;
            }
        }
        catch (IOException)
        {
            return true;
        }
    }

    public static byte[] U32(uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        return b;
    }

    public ValueTask DisposeAsync()
    {
        _stream.Dispose();
        return ValueTask.CompletedTask;
    }
}
