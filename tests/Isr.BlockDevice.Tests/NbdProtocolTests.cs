using System.Buffers.Binary;
using System.Text;
using static Isr.BlockDevice.Tests.NbdTestClient;

namespace Isr.BlockDevice.Tests;

/// <summary>Scripted raw-socket conversations with the server, byte by byte.</summary>
public sealed class NbdProtocolTests
{
    private const long Size = 4 * 1024 * 1024;

    private static byte[] Pattern(int length, byte seed)
    {
        var data = new byte[length];
        for (int i = 0; i < length; i++) data[i] = (byte)(seed + i * 7);
        return data;
    }

    [Fact]
    public async Task Handshake_Go_AdvertisesSizeFlagsAndBlockSizes()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size, preferredBlockSize: 128 * 1024));
        await using var client = await ConnectAsync(server.SocketPath);
        Assert.Equal(3, client.HandshakeFlags); // FIXED_NEWSTYLE | NO_ZEROES

        await client.SendOptionAsync(8, []);
        Assert.Equal(ReplyAck, (await client.ReadOptionReplyAsync()).Type);
        var (size, flags, blockSize) = await client.GoAsync(TestServer.Export, 3);

        Assert.Equal(Size, size);
        // HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES, SEND_DF; no READ_ONLY, no MULTI_CONN
        Assert.Equal(1 | 4 | 8 | 32 | 64 | 128, flags);
        Assert.Equal((1u, 128u * 1024, 32u * 1024 * 1024), blockSize);
    }

    [Fact]
    public async Task Info_ReturnsNameAndDescription_AndLeavesNegotiationOpen()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size), new NbdServerOptions { Description = "test disk" });
        await using var client = await ConnectAsync(server.SocketPath);
        await client.SendOptionAsync(6, InfoRequest(TestServer.Export, 1, 2));
        var infos = new Dictionary<ushort, byte[]>();
        while (true)
        {
            var reply = await client.ReadOptionReplyAsync();
            if (reply.Type == ReplyAck) break;
            Assert.Equal(ReplyInfo, reply.Type);
            infos[BinaryPrimitives.ReadUInt16BigEndian(reply.Data)] = reply.Data[2..];
        }
        Assert.Equal(Size, (long)BinaryPrimitives.ReadUInt64BigEndian(infos[0]));
        Assert.Equal(TestServer.Export, Encoding.UTF8.GetString(infos[1]));
        Assert.Equal("test disk", Encoding.UTF8.GetString(infos[2]));

        // Still haggling: GO works afterwards.
        Assert.Equal(Size, (await client.GoAsync(TestServer.Export)).Size);
    }

    [Fact]
    public async Task Options_List_Unknown_WrongName_Abort()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        await using var client = await ConnectAsync(server.SocketPath);

        await client.SendOptionAsync(3, []);
        var entry = await client.ReadOptionReplyAsync();
        Assert.Equal(ReplyServer, entry.Type);
        Assert.Equal((uint)TestServer.Export.Length, BinaryPrimitives.ReadUInt32BigEndian(entry.Data));
        Assert.Equal(TestServer.Export, Encoding.UTF8.GetString(entry.Data, 4, TestServer.Export.Length));
        Assert.Equal(ReplyAck, (await client.ReadOptionReplyAsync()).Type);

        await client.SendOptionAsync(3, [1]); // LIST takes no data
        Assert.Equal(ErrInvalid, (await client.ReadOptionReplyAsync()).Type);

        await client.SendOptionAsync(4242, [1, 2, 3]);
        var unknown = await client.ReadOptionReplyAsync();
        Assert.Equal((4242u, ErrUnsup), (unknown.Option, unknown.Type));

        await client.SendOptionAsync(5, []); // STARTTLS: not offered
        Assert.Equal(ErrUnsup, (await client.ReadOptionReplyAsync()).Type);

        await client.SendOptionAsync(7, InfoRequest("no-such-export"));
        Assert.Equal(ErrUnknown, (await client.ReadOptionReplyAsync()).Type);

        await client.SendOptionAsync(10, MetaContextQuery(TestServer.Export, "base:allocation"));
        Assert.Equal(ErrInvalid, (await client.ReadOptionReplyAsync()).Type); // needs structured replies first

        await client.SendOptionAsync(2, []);
        Assert.Equal(ReplyAck, (await client.ReadOptionReplyAsync()).Type);
        Assert.True(await client.IsClosedByServerAsync());
    }

    [Fact]
    public async Task ListMetaContext_ReportsBaseAllocation()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        await using var client = await ConnectAsync(server.SocketPath);
        await client.SendOptionAsync(8, []);
        await client.ReadOptionReplyAsync();
        foreach (var queries in new[] { Array.Empty<string>(), ["base:"], ["base:allocation"] })
        {
            await client.SendOptionAsync(9, MetaContextQuery(TestServer.Export, queries));
            var context = await client.ReadOptionReplyAsync();
            Assert.Equal(ReplyMetaContext, context.Type);
            Assert.Equal("base:allocation", Encoding.ASCII.GetString(context.Data, 4, context.Data.Length - 4));
            Assert.Equal(ReplyAck, (await client.ReadOptionReplyAsync()).Type);
        }
        await client.SendOptionAsync(9, MetaContextQuery(TestServer.Export, "qemu:dirty-bitmap:x"));
        Assert.Equal(ReplyAck, (await client.ReadOptionReplyAsync()).Type);
    }

    [Fact]
    public async Task ExportName_Fallback_EntersTransmission_WithZeroPadding()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        await using var client = await ConnectAsync(server.SocketPath, noZeroes: false);
        await client.SendOptionAsync(1, Encoding.UTF8.GetBytes(TestServer.Export));
        byte[] reply = await client.ReadAsync(8 + 2 + 124);
        Assert.Equal(Size, (long)BinaryPrimitives.ReadUInt64BigEndian(reply));
        Assert.All(reply[10..], b => Assert.Equal(0, b));

        await client.SendRequestAsync(CmdWrite, 1, 0, 4, payload: [1, 2, 3, 4]);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync()).Error);
    }

    [Fact]
    public async Task ExportName_WithWrongName_ClosesConnection()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        await using var client = await ConnectAsync(server.SocketPath);
        await client.SendOptionAsync(1, Encoding.UTF8.GetBytes("wrong"));
        Assert.True(await client.IsClosedByServerAsync());
    }

    [Fact]
    public async Task SimpleReplies_WriteReadFlushTrimWriteZeroes_RoundTrip()
    {
        var device = new MemoryBlockDevice(Size);
        await using var server = new TestServer(device);
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export, structured: false);
        await using var _ = client;

        byte[] data = Pattern(200_000, 3);
        await client.SendRequestAsync(CmdWrite, 10, 1000, (uint)data.Length, FlagFua, data);
        Assert.Equal((10ul, 0u), ((await client.ReadSimpleReplyAsync()).Handle, (await Task.FromResult(0u))));
        Assert.True(device.FlushCount >= 1);

        await client.SendRequestAsync(CmdRead, 11, 1000, (uint)data.Length);
        var read = await client.ReadSimpleReplyAsync(data.Length);
        Assert.Equal((11ul, 0u), (read.Handle, read.Error));
        Assert.Equal(data, read.Data);

        int flushes = device.FlushCount;
        await client.SendRequestAsync(CmdFlush, 12, 0, 0);
        Assert.Equal((12ul, 0u), Pick(await client.ReadSimpleReplyAsync()));
        Assert.Equal(flushes + 1, device.FlushCount);

        await client.SendRequestAsync(CmdTrim, 13, 1000, 100);
        Assert.Equal((13ul, 0u), Pick(await client.ReadSimpleReplyAsync()));
        await client.SendRequestAsync(CmdWriteZeroes, 14, 2000, 100, 2 /* NO_HOLE */);
        Assert.Equal((14ul, 0u), Pick(await client.ReadSimpleReplyAsync()));

        await client.SendRequestAsync(CmdRead, 15, 1000, (uint)data.Length);
        read = await client.ReadSimpleReplyAsync(data.Length);
        byte[] expected = (byte[])data.Clone();
        Array.Clear(expected, 0, 100);
        Array.Clear(expected, 1000, 100);
        Assert.Equal(expected, read.Data);

        // Trimming whole pages gives the memory back.
        await client.SendRequestAsync(CmdTrim, 16, 0, (uint)Size);
        Assert.Equal((16ul, 0u), Pick(await client.ReadSimpleReplyAsync()));
        Assert.Equal(0, device.AllocatedPages);

        await client.SendRequestAsync(CmdDisc, 17, 0, 0);
        Assert.True(await client.IsClosedByServerAsync());
    }

    private static (ulong, uint) Pick((ulong Handle, uint Error, byte[] Data) reply) => (reply.Handle, reply.Error);

    [Fact]
    public async Task StructuredRead_AnswersHolesWithHoleChunks()
    {
        var device = new MemoryBlockDevice(Size);
        await using var server = new TestServer(device);
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await using var _ = client;

        // Data in the second 64 KiB page only; read three pages.
        byte[] data = Pattern(65536, 9);
        await device.WriteAsync(65536, data, false, default);
        await client.SendRequestAsync(CmdRead, 1, 0, 3 * 65536);
        var chunks = await client.ReadStructuredReplyAsync();
        Assert.Equal([2, 1, 2], chunks.Select(c => (int)c.Type));
        Assert.All(chunks, c => Assert.Equal(1ul, c.Handle));
        Assert.Equal(data, Assemble(chunks, 0, 3 * 65536)[65536..131072]);

        // A pure hole is one 12-byte hole chunk: no data crosses the wire.
        await client.SendRequestAsync(CmdRead, 2, 1024 * 1024, 1024 * 1024);
        var hole = Assert.Single(await client.ReadStructuredReplyAsync());
        Assert.Equal((ushort)2, hole.Type);
        Assert.Equal(12, hole.Payload.Length);

        // DF asks for a single content chunk: zeros travel as data.
        await client.SendRequestAsync(CmdRead, 3, 0, 3 * 65536, FlagDf);
        var single = Assert.Single(await client.ReadStructuredReplyAsync());
        Assert.Equal((ushort)1, single.Type);
        Assert.Equal(data, Assemble([single], 0, 3 * 65536)[65536..131072]);

        // Unaligned read straddling data and hole.
        await client.SendRequestAsync(CmdRead, 4, 65536 + 100, 65536);
        var mixed = await client.ReadStructuredReplyAsync();
        byte[] got = Assemble(mixed, 65536 + 100, 65536);
        Assert.Equal(data[100..], got[..(65536 - 100)]);
        Assert.All(got[(65536 - 100)..], b => Assert.Equal(0, b));

        // Zero-length read: just a NONE chunk.
        await client.SendRequestAsync(CmdRead, 5, 0, 0);
        Assert.Equal((ushort)0, Assert.Single(await client.ReadStructuredReplyAsync()).Type);
    }

    [Fact]
    public async Task BlockStatus_ReportsHolesAndData()
    {
        var device = new MemoryBlockDevice(Size);
        await using var server = new TestServer(device);
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await using var _ = client;
        await device.WriteAsync(2 * 65536, new byte[2 * 65536], false, default);

        await client.SendRequestAsync(CmdBlockStatus, 7, 0, 8 * 65536);
        var status = Assert.Single(await client.ReadStructuredReplyAsync());
        Assert.Equal((ushort)5, status.Type);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(status.Payload)); // context id from SET_META_CONTEXT
        var descriptors = Descriptors(status.Payload);
        Assert.Equal([(2u * 65536, 3u), (2u * 65536, 0u), (4u * 65536, 3u)], descriptors);

        await client.SendRequestAsync(CmdBlockStatus, 8, 0, 8 * 65536, FlagReqOne);
        Assert.Equal([(2u * 65536, 3u)], Descriptors(Assert.Single(await client.ReadStructuredReplyAsync()).Payload));
    }

    private static List<(uint, uint)> Descriptors(byte[] payload)
    {
        var list = new List<(uint, uint)>();
        for (int i = 4; i < payload.Length; i += 8)
            list.Add((BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(i)), BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(i + 4))));
        return list;
    }

    [Fact]
    public async Task BlockStatus_WithoutMetaContext_IsEinval()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        await using var client = await ConnectAsync(server.SocketPath);
        await client.SendOptionAsync(8, []);
        await client.ReadOptionReplyAsync();
        await client.GoAsync(TestServer.Export);
        await client.SendRequestAsync(CmdBlockStatus, 1, 0, 4096);
        var error = Assert.Single(await client.ReadStructuredReplyAsync());
        Assert.True((error.Type & 0x8000) != 0);
        Assert.Equal(EInval, error.Error);
    }

    [Fact]
    public async Task Pipelined_Requests_CompleteOutOfOrder()
    {
        var memory = new MemoryBlockDevice(Size);
        var device = new ControllableDevice(memory);
        await memory.WriteAsync(0, Pattern(8192, 1), false, default);
        await using var server = new TestServer(device);
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export, structured: false);
        await using var _ = client;

        var gate = device.Gate(0);
        await client.SendAsync([.. Request(CmdRead, 100, 0, 4096), .. Request(CmdRead, 200, 4096, 4096), .. Request(CmdFlush, 300, 0, 0)]);

        // The blocked read must not hold up the requests behind it.
        var first = await client.ReadSimpleReplyAsync(4096);
        var second = await client.ReadSimpleReplyAsync();
        Assert.Equal(new[] { 200ul, 300ul }.ToHashSet(), new[] { first.Handle, second.Handle }.ToHashSet());
        if (first.Handle == 300) await client.ReadAsync(4096); // (flush may win the race; then the read's data follows)

        gate.SetResult();
        var last = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal(100ul, last.Handle);
        Assert.Equal(Pattern(8192, 1)[..4096], last.Data);
    }

    [Fact]
    public async Task ManyPipelinedWritesAndReads_AllAnsweredCorrectly()
    {
        var device = new MemoryBlockDevice(Size);
        await using var server = new TestServer(device, new NbdServerOptions { MaxInFlightRequests = 4, MaxInFlightBytes = 64 * 1024 });
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await using var _ = client;

        const int Count = 200, Block = 16 * 1024;
        var sending = Task.Run(async () =>
        {
            for (int i = 0; i < Count; i++)
                await client.SendRequestAsync(CmdWrite, (ulong)i, (ulong)(i * Block), Block, payload: Pattern(Block, (byte)i));
        });
        var seen = new HashSet<ulong>();
        for (int i = 0; i < Count; i++)
        {
            var reply = await client.ReadAnyAsync();
            Assert.Equal(0xFFFF, reply.Type);
            Assert.Equal(0u, reply.Error);
            Assert.True(seen.Add(reply.Handle));
        }
        await sending;

        for (int i = 0; i < Count; i++) await client.SendRequestAsync(CmdRead, (ulong)(1000 + i), (ulong)(i * Block), Block);
        var reads = new Dictionary<ulong, List<Chunk>>();
        int done = 0;
        while (done < Count)
        {
            var chunk = await client.ReadAnyAsync();
            if (!reads.TryGetValue(chunk.Handle, out var list)) reads[chunk.Handle] = list = [];
            list.Add(chunk);
            if (chunk.Done) done++;
        }
        for (int i = 0; i < Count; i++)
            Assert.Equal(Pattern(Block, (byte)i), Assemble(reads[(ulong)(1000 + i)], i * Block, Block));
    }

    [Fact]
    public async Task InvalidRequests_GetErrorReplies_AndTheConnectionSurvives()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export, structured: false);
        await using var _ = client;

        await client.SendRequestAsync(CmdRead, 1, Size - 10, 11);
        Assert.Equal((1ul, EInval), Pick(await client.ReadSimpleReplyAsync()));
        await client.SendRequestAsync(CmdRead, 2, ulong.MaxValue - 5, 10); // offset+length overflows
        Assert.Equal((2ul, EInval), Pick(await client.ReadSimpleReplyAsync()));
        await client.SendRequestAsync(CmdRead, 3, 0, 33 * 1024 * 1024); // above the advertised maximum
        Assert.Equal((3ul, EInval), Pick(await client.ReadSimpleReplyAsync()));

        // Out-of-range write: payload is consumed, ENOSPC per spec, stream stays in sync.
        await client.SendRequestAsync(CmdWrite, 4, Size - 2, 4, payload: [9, 9, 9, 9]);
        Assert.Equal((4ul, ENoSpc), Pick(await client.ReadSimpleReplyAsync()));

        await client.SendRequestAsync(99, 5, 0, 0);
        Assert.Equal((5ul, EInval), Pick(await client.ReadSimpleReplyAsync()));
        await client.SendRequestAsync(CmdRead, 6, 0, 512, 0x40); // unknown flag
        Assert.Equal((6ul, EInval), Pick(await client.ReadSimpleReplyAsync()));
        await client.SendRequestAsync(CmdTrim, 7, Size, 1);
        Assert.Equal((7ul, EInval), Pick(await client.ReadSimpleReplyAsync()));

        await client.SendRequestAsync(CmdWrite, 8, 0, 2, payload: [5, 6]);
        Assert.Equal((8ul, 0u), Pick(await client.ReadSimpleReplyAsync()));
        await client.SendRequestAsync(CmdRead, 9, 0, 2);
        Assert.Equal(new byte[] { 5, 6 }, (await client.ReadSimpleReplyAsync(2)).Data);
    }

    [Fact]
    public async Task InvalidRead_WithStructuredReplies_GetsErrorChunkWithMessage()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size));
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await using var _ = client;
        await client.SendRequestAsync(CmdRead, 1, Size, 512);
        var chunk = Assert.Single(await client.ReadStructuredReplyAsync());
        Assert.Equal(0x8001, chunk.Type);
        Assert.Equal(EInval, chunk.Error);
        int messageLength = BinaryPrimitives.ReadUInt16BigEndian(chunk.Payload.AsSpan(4));
        Assert.Contains("beyond", Encoding.UTF8.GetString(chunk.Payload, 6, messageLength));
    }

    [Fact]
    public async Task DeviceFailures_BecomeEio_NotCrashes()
    {
        var device = new ControllableDevice(new MemoryBlockDevice(Size)) { FailAtOffset = 8192 };
        await using var server = new TestServer(device);
        var (simple, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export, structured: false);
        await using var _ = simple;
        await simple.SendRequestAsync(CmdRead, 1, 8192, 512);
        Assert.Equal((1ul, EIo), Pick(await simple.ReadSimpleReplyAsync(512)));
        await simple.SendRequestAsync(CmdWrite, 2, 8192, 3, payload: [1, 2, 3]);
        Assert.Equal((2ul, EIo), Pick(await simple.ReadSimpleReplyAsync()));
        await simple.SendRequestAsync(CmdRead, 3, 0, 512);
        Assert.Equal((3ul, 0u), Pick(await simple.ReadSimpleReplyAsync(512)));

        var (structured, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await using var __ = structured;
        await device.WriteAsync(0, new byte[65536], false, default); // make it data, so the device is read
        await structured.SendRequestAsync(CmdRead, 4, 8192, 512);
        var error = Assert.Single(await structured.ReadStructuredReplyAsync());
        Assert.Equal((0x8001, EIo), (error.Type, error.Error));
    }

    [Fact]
    public async Task ReadOnlyExport_RefusesWrites()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size), new NbdServerOptions { ReadOnly = true });
        var (client, _, flags) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export, structured: false);
        await using var _ = client;
        Assert.True((flags & 2) != 0);
        await client.SendRequestAsync(CmdWrite, 1, 0, 2, payload: [1, 2]);
        Assert.Equal((1ul, EPerm), Pick(await client.ReadSimpleReplyAsync()));
        await client.SendRequestAsync(CmdTrim, 2, 0, 2);
        Assert.Equal((2ul, EPerm), Pick(await client.ReadSimpleReplyAsync()));
    }

    [Fact]
    public async Task BadMagic_DisconnectsThatClient_OthersKeepWorking()
    {
        var device = new MemoryBlockDevice(Size);
        await using var server = new TestServer(device);
        var (good, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await using var _ = good;
        var (bad, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await using var __ = bad;

        await good.SendRequestAsync(CmdWrite, 1, 0, 3, payload: [7, 8, 9]);
        Assert.Equal(0u, (await good.ReadAnyAsync()).Error);

        await bad.SendAsync(Request(CmdRead, 1, 0, 512, magic: 0xDEADBEEF));
        Assert.True(await bad.IsClosedByServerAsync());
        Assert.Contains(server.LogLines, l => l.Contains("bad request magic"));

        await good.SendRequestAsync(CmdRead, 2, 0, 3);
        Assert.Equal(new byte[] { 7, 8, 9 }, Assemble(await good.ReadStructuredReplyAsync(), 0, 3));

        // A client that vanishes mid-request does not disturb anyone either.
        var (rude, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export);
        await rude.SendAsync(Request(CmdWrite, 1, 0, 1000)[..20]);
        await rude.DisposeAsync();

        await good.SendRequestAsync(CmdFlush, 3, 0, 0);
        Assert.Equal((3ul, 0u), ((await good.ReadAnyAsync()).Handle, 0u));
    }

    [Fact]
    public async Task Disconnect_FinishesOutstandingRequestsFirst()
    {
        var memory = new MemoryBlockDevice(Size);
        var device = new ControllableDevice(memory);
        await using var server = new TestServer(device);
        var (client, _, _) = await ConnectAndGoAsync(server.SocketPath, TestServer.Export, structured: false);
        await using var _ = client;
        var gate = device.Gate(4096);
        await client.SendAsync([.. Request(CmdRead, 1, 4096, 16), .. Request(CmdDisc, 2, 0, 0)]);
        await Task.Delay(50);
        gate.SetResult();
        var reply = await client.ReadSimpleReplyAsync(16);
        Assert.Equal((1ul, 0u), (reply.Handle, reply.Error));
        Assert.True(await client.IsClosedByServerAsync());
    }

    [Fact]
    public async Task SilentClient_IsDroppedAfterHandshakeTimeout()
    {
        await using var server = new TestServer(new MemoryBlockDevice(Size), new NbdServerOptions { HandshakeTimeout = TimeSpan.FromMilliseconds(200) });
        await using var client = await ConnectAsync(server.SocketPath);
        Assert.True(await client.IsClosedByServerAsync());
    }

    [Fact]
    public async Task StaleSocketFile_IsReplaced_LiveOneIsNot_RegularFileIsKept()
    {
        var dir = Directory.CreateTempSubdirectory("isr-nbd-").FullName;
        try
        {
            string path = Path.Combine(dir, "s.sock");
            // What a crashed server leaves behind: a path nobody listens on (.NET unlinks its own on dispose, so fake it).
            File.WriteAllBytes(path, []);

            await using var server = new NbdServer(new MemoryBlockDevice(Size), "x");
            using var cts = new CancellationTokenSource();
            var serving = server.ServeAsync(path, cts.Token);
            await using (await ConnectAsync(path)) { }

            await using var second = new NbdServer(new MemoryBlockDevice(Size), "y");
            Assert.Throws<IOException>(() => { _ = second.ServeAsync(path, CancellationToken.None); });

            cts.Cancel();
            await serving.WaitAsync(TimeSpan.FromSeconds(10));

            string file = Path.Combine(dir, "data");
            File.WriteAllText(file, "precious");
            Assert.Throws<IOException>(() => { _ = second.ServeAsync(file, CancellationToken.None); });
            Assert.Equal("precious", File.ReadAllText(file));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
