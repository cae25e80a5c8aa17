using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Isr.Format;

namespace Isr.Server.Tests;

/// <summary>Read tokens (they read the user's blobs and nothing else) and the jukebox as a cache in front of the real server.</summary>
public sealed class JukeboxUpstreamTests : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    private static async Task<string> ReadTokenAsync(HttpClient http)
    {
        using var response = await http.PostAsync("/api/v1/session/read-token", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
    }

    private static (ChunkTag Tag, byte[] Blob) Blob(int seed)
    {
        var blob = new byte[5000];
        new Random(seed).NextBytes(blob);
        return (ChunkTag.Of(blob), blob);
    }

    [Fact]
    public async Task A_read_token_reads_the_users_blobs_only_and_dies_with_its_session()
    {
        using var server = new ServerFixture();
        using var alice = await server.LoginAsync(await server.AddUserAsync("alice", "pw-alice"));
        using var bob = await server.LoginAsync(await server.AddUserAsync("bob", "pw-bob"));
        var (tag, blob) = Blob(1);
        using (var upload = await alice.UploadAsync([(tag, blob)])) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        var token = await ReadTokenAsync(alice.Http);
        Assert.StartsWith("isr-read.", token);

        HttpRequestMessage As(string bearer, HttpMethod method, string path) => new(method, path) { Headers = { Authorization = new("Bearer", bearer) } };
        using var anonymous = server.CreateClient();
        using (var read = await anonymous.SendAsync(As(token, HttpMethod.Get, $"/api/v1/chunks/{tag}")))
            Assert.Equal(blob, await read.Content.ReadAsByteArrayAsync());
        // Nothing else: not the parcel list, not uploads, not another read token.
        foreach (var (method, path) in new[] { (HttpMethod.Get, "/api/v1/parcels"), (HttpMethod.Post, "/api/v1/chunks/upload"), (HttpMethod.Post, "/api/v1/session/read-token") })
        {
            using var refused = await anonymous.SendAsync(As(token, method, path));
            Assert.Equal((HttpStatusCode.Forbidden, "read_token"), (refused.StatusCode, await refused.ErrorCodeAsync()));
        }
        // Bob's read token does not read Alice's blob; a forged MAC names no session.
        using (var other = await anonymous.SendAsync(As(await ReadTokenAsync(bob.Http), HttpMethod.Get, $"/api/v1/chunks/{tag}")))
            Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        var forged = token[..^4] + (token[^4..] == "AAAA" ? "BBBB" : "AAAA");
        using (var bad = await anonymous.SendAsync(As(forged, HttpMethod.Get, $"/api/v1/chunks/{tag}")))
            Assert.Equal(HttpStatusCode.Unauthorized, bad.StatusCode);
        // Logging out ends it.
        using (var logout = await alice.Http.PostAsync("/api/v1/logout", null)) Assert.Equal(HttpStatusCode.NoContent, logout.StatusCode);
        using (var after = await anonymous.SendAsync(As(token, HttpMethod.Get, $"/api/v1/chunks/{tag}")))
            Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
    }

    /// <summary>Real processes: isr-server, and isr-server jukebox --upstream in front of it.</summary>
    [Fact]
    public async Task A_jukebox_with_an_upstream_fetches_misses_with_the_read_token_keeps_them_and_serves_them_when_the_server_is_gone()
    {
        var data = Path.Combine(_dir.Path, "data");
        await ServerProcess.InitWithUserAsync(data, "alice", "alice pass 1");
        var server = await ServerProcess.StartAsync(data);
        var cache = Path.Combine(_dir.Path, "jukebox");
        var (jukebox, url) = await ServerProcess.StartJukeboxAsync(cache, "--upstream", $"https://127.0.0.1:{server.Port}", "--upstream-fingerprint", server.Fingerprint);
        try
        {
            using var alice = await server.LoginAsync("alice", "alice pass 1");
            var (tag, blob) = Blob(2);
            var (absent, _) = Blob(3);
            using (var upload = await alice.UploadAsync([(tag, blob)])) Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
            var token = await ReadTokenAsync(alice.Http);
            using var lan = new HttpClient { BaseAddress = url };
            async Task<HttpResponseMessage> Get(ChunkTag t, string? bearer)
            {
                var request = new HttpRequestMessage(HttpMethod.Get, $"chunks/{t}");
                if (bearer is not null) request.Headers.Authorization = new("Bearer", bearer);
                return await lan.SendAsync(request);
            }

            using (var noToken = await Get(tag, null)) Assert.Equal(HttpStatusCode.NotFound, noToken.StatusCode); // a miss, and nothing to ask upstream with
            using (var missing = await Get(absent, token)) Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode); // upstream has not got it either
            using (var fetched = await Get(tag, token)) Assert.Equal(blob, await fetched.Content.ReadAsByteArrayAsync());
            Assert.Single(Directory.EnumerateFiles(cache, tag.ToString(), SearchOption.AllDirectories)); // kept

            server.Dispose(); // the real server goes away: the kept blob is still served, to anyone on the LAN
            using (var kept = await Get(tag, null)) Assert.Equal(blob, await kept.Content.ReadAsByteArrayAsync());
            using (var down = await Get(absent, token)) Assert.Equal(HttpStatusCode.BadGateway, down.StatusCode); // a failure, not "don't have"
        }
        finally
        {
            jukebox.Kill(entireProcessTree: true);
            await jukebox.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            server.Dispose();
        }
    }
}
