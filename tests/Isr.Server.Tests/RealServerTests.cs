using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Isr.Format;

namespace Isr.Server.Tests;

/// <summary>The built <c>isr-server</c> as a process: init, user add, run on a free port; a client pinning the printed
/// fingerprint logs in over HTTP/2.</summary>
public sealed class RealServerTests : IDisposable
{
    private readonly TempDir _dir = new();
    private ServerProcess? _server;

    private static Task<(int Code, string Out, string Err)> RunToEndAsync(params string[] args) => ServerProcess.RunToEndAsync(args);

    [Fact]
    public async Task Init_user_add_run_and_login_over_pinned_http2()
    {
        var data = Path.Combine(_dir.Path, "data");
        var init = await ServerProcess.RunToEndAsync("init", "--data", data);
        Assert.True(init.Code == 0, init.Err);
        var fingerprint = init.Out.Split('\n').Single(l => l.StartsWith("fingerprint: "))["fingerprint: ".Length..].Trim();
        Assert.Matches("^[0-9a-f]{64}$", fingerprint);
        Assert.Equal(2, (await ServerProcess.RunToEndAsync("init", "--data", data)).Code); // never over an existing one

        var passwordFile = Path.Combine(_dir.Path, "pw");
        await File.WriteAllTextAsync(passwordFile, "s3cret pass\n");
        var add = await ServerProcess.RunToEndAsync("user", "add", "carol", "--password-file", passwordFile, "--data", data);
        Assert.True(add.Code == 0, add.Err);
        var recoveryLine = add.Out.Split('\n').Single(l => l.StartsWith("recovery key: "));
        var recoveryKey = Convert.FromHexString(recoveryLine["recovery key: ".Length..].Trim().Replace("-", ""));
        Assert.Equal(32, recoveryKey.Length);
        Assert.Contains("keep", add.Out, StringComparison.OrdinalIgnoreCase);
        var list = await ServerProcess.RunToEndAsync("user", "list", "--json", "--data", data);
        Assert.Equal("carol", JsonDocument.Parse(list.Out).RootElement[0].GetProperty("name").GetString());

        _server = await ServerProcess.StartAsync(data);
        Assert.Equal(fingerprint, _server.Fingerprint);
        using var http = _server.Client();
        using var prelogin = await http.PostAsJsonAsync("/api/v1/prelogin", new { user = "carol" });
        Assert.Equal(HttpVersion.Version20, prelogin.Version);
        var kdfJson = (await prelogin.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("kdf");
        var kdf = new KdfParameters(kdfJson.GetProperty("salt").GetBytesFromBase64(), kdfJson.GetProperty("memoryKiB").GetInt32(),
            kdfJson.GetProperty("iterations").GetInt32(), kdfJson.GetProperty("parallelism").GetInt32());
        var keys = PasswordKdf.Derive("s3cret pass", kdf);
        using var login = await http.PostAsJsonAsync("/api/v1/login", new { user = "carol", authSecret = keys.AuthSecret, siteId = "s1", siteName = "test" });
        Assert.Equal(HttpStatusCode.OK, login.StatusCode);
        var body = await login.Content.ReadFromJsonAsync<JsonElement>();
        var secrets = UserSecrets.Unwrap(keys.KeyEncryptionKey, body.GetProperty("wrappedSecrets").GetBytesFromBase64());
        http.DefaultRequestHeaders.Authorization = new("Bearer", body.GetProperty("token").GetString());
        using var parcels = await http.GetAsync("/api/v1/parcels");
        Assert.Equal(HttpStatusCode.OK, parcels.StatusCode);
        using var recovery = await http.GetAsync("/api/v1/account/recovery");
        var recoveryBlob = (await recovery.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("wrappedSecrets").GetBytesFromBase64();
        var recovered = UserSecrets.Unwrap(recoveryKey, recoveryBlob);
        Assert.Equal(secrets.DomainSecret, recovered.DomainSecret);

        // a 40 MiB upload (over Kestrel's default 30 MB body limit) streams through; then it downloads whole
        var rng = new Random(5);
        var big = Enumerable.Range(0, 4).Select(_ => { var b = new byte[10 << 20]; rng.NextBytes(b); return (ChunkTag.Of(b), b); }).ToList();
        using (var upload = await http.PostAsync("/api/v1/chunks/upload", ApiClient.Binary(ApiClient.Frames(big))))
        {
            Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
            Assert.Equal(4, (await upload.BodyAsync()).GetProperty("stored").GetInt32());
        }
        using (var download = await http.PostAsync("/api/v1/chunks/download", ApiClient.Binary(ApiClient.Tags(big.Select(b => b.Item1)))))
            Assert.Equal(4 * (36 + (10 << 20)), (await download.Content.ReadAsByteArrayAsync()).Length);
        var tooBig = Enumerable.Range(0, 7).Select(_ => { var b = new byte[10 << 20]; rng.NextBytes(b); return (ChunkTag.Of(b), b); }).ToList();
        using (var rejected = await http.PostAsync("/api/v1/chunks/upload", ApiClient.Binary(ApiClient.Frames(tooBig))))
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, rejected.StatusCode);

        // a client pinning another fingerprint refuses the server
        using var wrongHandler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, _, _, _) => false };
        using var wrong = new HttpClient(wrongHandler) { BaseAddress = http.BaseAddress };
        await Assert.ThrowsAsync<HttpRequestException>(() => wrong.GetAsync("/api/v1/parcels"));

        var stats = await ServerProcess.RunToEndAsync("stats", "--json", "--data", data);
        Assert.True(stats.Code == 0, stats.Err);
        var fsck = await ServerProcess.RunToEndAsync("fsck", "--data", data);
        Assert.Equal(0, fsck.Code);
    }

    /// <summary>The server stores a request's first frames while its later ones arrive, so that it answers soon after
    /// the last byte: a client's requests in flight then keep the link busy (stored only after the whole request, they
    /// ended together and the link idled while the server stored them).</summary>
    [Fact]
    public async Task An_uploads_first_frames_are_stored_while_the_rest_of_its_body_arrives()
    {
        var data = Path.Combine(_dir.Path, "data");
        await ServerProcess.InitWithUserAsync(data, "dave", "pass word 1");
        _server = await ServerProcess.StartAsync(data);
        using var client = await _server.LoginAsync("dave", "pass word 1");
        var rng = new Random(7);
        var blobs = Enumerable.Range(0, 40).Select(_ => { var b = new byte[64 << 10]; rng.NextBytes(b); return (ChunkTag.Of(b), b); }).ToList();

        var rest = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var upload = client.Http.PostAsync("/api/v1/chunks/upload", new TwoPartContent(ApiClient.Frames(blobs.Take(24)), rest.Task, ApiClient.Frames(blobs.Skip(24))));
        bool held = false;
        for (var waited = System.Diagnostics.Stopwatch.StartNew(); !held && waited.Elapsed < TimeSpan.FromSeconds(30) && !upload.IsCompleted;)
        {
            held = (await client.MissingAsync([blobs[0].Item1])).Count == 0;
            if (!held) await Task.Delay(50);
        }
        Assert.True(held, "nothing was stored before the request's body ended");
        Assert.False(upload.IsCompleted);

        rest.SetResult();
        using var response = await upload;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(40, (await response.BodyAsync()).GetProperty("stored").GetInt32());
        Assert.Empty(await client.MissingAsync(blobs.Select(b => b.Item1)));
    }

    /// <summary>A request body sent in two parts, the second once <paramref name="between"/> completes.</summary>
    private sealed class TwoPartContent(byte[] first, Task between, byte[] second) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.WriteAsync(first);
            await stream.FlushAsync();
            await between;
            await stream.WriteAsync(second);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    public void Dispose()
    {
        _server?.Dispose();
        _dir.Dispose();
    }
}
