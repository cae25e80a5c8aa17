using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Isr.Vmm.Tests;

/// <summary>QMP protocol handling against a scripted fake server (no QEMU needed).</summary>
public sealed class QmpClientTests : IAsyncLifetime
{
    private readonly RuntimeDirectory _dir = RuntimeDirectory.Create("qmpt");
    private Socket? _listener;
    private string _path = "";
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(30));

    public Task InitializeAsync()
    {
        _path = _dir.NewSocketPath("qmp");
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(_path));
        _listener.Listen(1);
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        _listener?.Dispose();
        _dir.Delete();
        _timeout.Dispose();
        return Task.CompletedTask;
    }

    private sealed class FakeServer(Socket socket) : IDisposable
    {
        private readonly StreamReader _reader = new(new NetworkStream(socket, ownsSocket: false), Encoding.UTF8);
        public async Task SendAsync(string json) => await socket.SendAsync(Encoding.UTF8.GetBytes(json + "\r\n"));
        public async Task<JsonElement> ReceiveAsync() => JsonSerializer.Deserialize<JsonElement>((await _reader.ReadLineAsync())!);
        public void Close() => socket.Close();
        public void Dispose() => socket.Dispose();
    }

    /// <summary>Connects a client; the fake server sends the greeting and answers qmp_capabilities.</summary>
    private async Task<(QmpClient Client, FakeServer Server)> ConnectAsync()
    {
        var accept = _listener!.AcceptAsync(_timeout.Token).AsTask();
        var connect = QmpClient.ConnectAsync(_path, _timeout.Token);
        var server = new FakeServer(await accept);
        await server.SendAsync("""{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}""");
        var caps = await server.ReceiveAsync();
        Assert.Equal("qmp_capabilities", caps.GetProperty("execute").GetString());
        await server.SendAsync($$"""{"return": {}, "id": {{caps.GetProperty("id").GetRawText()}}}""");
        return (await connect, server);
    }

    [Fact]
    public async Task Greeting_and_capabilities_negotiation()
    {
        var (client, server) = await ConnectAsync();
        await using var _ = client;
        using var __ = server;

        Assert.Equal(7, client.Greeting.GetProperty("version").GetProperty("qemu").GetProperty("major").GetInt32());
        Assert.True(client.IsConnected);
    }

    [Fact]
    public async Task Replies_are_routed_by_id_even_out_of_order_and_events_are_surfaced()
    {
        var (client, server) = await ConnectAsync();
        await using var _ = client;
        using var __ = server;
        var seen = new List<string>();
        client.EventReceived += (_, e) => { lock (seen) seen.Add(e.Name); };

        var first = client.ExecuteAsync("query-status", null, _timeout.Token);
        var second = client.ExecuteAsync("query-name", new JsonObject { ["x"] = 1 }, _timeout.Token);
        var r1 = await server.ReceiveAsync();
        var r2 = await server.ReceiveAsync();
        var byCommand = new[] { r1, r2 }.ToDictionary(r => r.GetProperty("execute").GetString()!, r => r.GetProperty("id").GetRawText());
        Assert.Equal(1, r2.GetProperty("arguments").GetProperty("x").GetInt32());

        await server.SendAsync("""{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}""");
        await server.SendAsync($$"""{"return": {"name": "vm"}, "id": {{byCommand["query-name"]}}}""");
        await server.SendAsync($$"""{"return": {"status": "paused"}, "id": {{byCommand["query-status"]}}}""");

        Assert.Equal("paused", (await first).GetProperty("status").GetString());
        Assert.Equal("vm", (await second).GetProperty("name").GetString());
        var evt = await client.Events.ReadAsync(_timeout.Token);
        Assert.Equal("STOP", evt.Name);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1700000000).AddTicks(50), evt.Timestamp);
        lock (seen) Assert.Equal(["STOP"], seen);
    }

    [Fact]
    public async Task Error_reply_becomes_typed_exception()
    {
        var (client, server) = await ConnectAsync();
        await using var _ = client;
        using var __ = server;

        var call = client.ExecuteAsync("cont", null, _timeout.Token);
        var req = await server.ReceiveAsync();
        await server.SendAsync($$"""{"error": {"class": "GenericError", "desc": "Migration is not finished"}, "id": {{req.GetProperty("id").GetRawText()}}}""");

        var e = await Assert.ThrowsAsync<QmpErrorException>(() => call);
        Assert.Equal("cont", e.Command);
        Assert.Equal("GenericError", e.ErrorClass);
        Assert.Equal("Migration is not finished", e.Description);
    }

    [Fact]
    public async Task Closing_the_connection_fails_pending_and_later_commands()
    {
        var (client, server) = await ConnectAsync();
        await using var _ = client;
        using var __ = server;

        var pending = client.ExecuteAsync("query-migrate", null, _timeout.Token);
        await server.ReceiveAsync();
        server.Close();

        await Assert.ThrowsAsync<QmpConnectionClosedException>(() => pending);
        await client.Completion.WaitAsync(_timeout.Token);
        Assert.False(client.IsConnected);
        await Assert.ThrowsAsync<QmpConnectionClosedException>(() => client.ExecuteAsync("query-status", null, _timeout.Token));
        Assert.False(await client.Events.WaitToReadAsync(_timeout.Token)); // channel completed
    }

    [Fact]
    public async Task Many_concurrent_callers_each_get_their_own_reply()
    {
        var (client, server) = await ConnectAsync();
        await using var _ = client;
        using var __ = server;

        var calls = Enumerable.Range(0, 50)
            .Select(i => Task.Run(() => client.ExecuteAsync("echo", new JsonObject { ["n"] = i }, _timeout.Token)))
            .ToArray();
        var requests = new List<JsonElement>();
        for (var i = 0; i < calls.Length; i++)
            requests.Add(await server.ReceiveAsync());
        foreach (var req in requests.AsEnumerable().Reverse())
            await server.SendAsync($$"""{"return": {"n": {{req.GetProperty("arguments").GetProperty("n").GetInt32()}}}, "id": {{req.GetProperty("id").GetRawText()}}}""");

        var results = await Task.WhenAll(calls);
        Assert.Equal(Enumerable.Range(0, 50), results.Select(r => r.GetProperty("n").GetInt32()));
    }
}
