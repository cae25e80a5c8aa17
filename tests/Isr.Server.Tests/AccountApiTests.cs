using System.Net;
using System.Net.Http.Json;
using System.Text;
using Isr.Format;

namespace Isr.Server.Tests;

public class AccountApiTests : IDisposable
{
    private readonly ServerFixture _server;

    public AccountApiTests() : this(new ServerFixture()) { }
    protected AccountApiTests(ServerFixture server) => _server = server;
    public void Dispose() => _server.Dispose();

    [SkippableFact]
    public async Task Prelogin_returns_the_users_parameters_and_stable_fake_ones_for_unknown_users()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var http = _server.CreateClient();
        var known = await (await http.PostAsJsonAsync("/api/v1/prelogin", new { user = "alice" })).BodyAsync();
        Assert.Equal(Convert.ToBase64String(alice.Kdf.Salt), known.GetProperty("kdf").GetProperty("salt").GetString());
        Assert.Equal(alice.Kdf.MemoryKiB, known.GetProperty("kdf").GetProperty("memoryKiB").GetInt32());
        var fake1 = await (await http.PostAsJsonAsync("/api/v1/prelogin", new { user = "mallory" })).BodyAsync();
        var fake2 = await (await http.PostAsJsonAsync("/api/v1/prelogin", new { user = "mallory" })).BodyAsync();
        Assert.Equal(fake1.GetRawText(), fake2.GetRawText());
        Assert.Equal(16, fake1.GetProperty("kdf").GetProperty("salt").GetBytesFromBase64().Length);
    }

    [SkippableFact]
    public async Task Login_gives_a_token_and_the_wrapped_secrets_that_the_password_unwraps()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var client = await _server.LoginAsync(alice);
        Assert.NotNull(client.Secrets);
        Assert.Equal(43, client.Token!.Length); // 32 bytes, base64url without padding
        using var parcels = await client.Http.GetAsync("/api/v1/parcels");
        Assert.Equal(HttpStatusCode.OK, parcels.StatusCode);
        Assert.Equal(0, (await parcels.BodyAsync()).GetArrayLength());
    }

    [SkippableFact]
    public async Task Wrong_auth_secret_or_unknown_user_is_401_wrong_password()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var client = new ApiClient(_server.CreateClient(), alice);
        using var wrong = await client.LoginAsync("s", authSecret: new byte[32]);
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal("wrong_password", await wrong.ErrorCodeAsync());
        using var unknown = await new ApiClient(_server.CreateClient(), alice with { Name = "nobody" }).LoginAsync("s");
        Assert.Equal(HttpStatusCode.Unauthorized, unknown.StatusCode);
        Assert.Equal("wrong_password", await unknown.ErrorCodeAsync());
    }

    [SkippableFact]
    public async Task Disabled_user_is_403_user_disabled_at_login_and_on_existing_sessions()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var client = await _server.LoginAsync(alice);
        Assert.True(await _server.Metadata.DisableUserAsync("alice", CancellationToken.None));
        using var relogin = await new ApiClient(_server.CreateClient(), alice).LoginAsync("s");
        Assert.Equal(HttpStatusCode.Forbidden, relogin.StatusCode);
        Assert.Equal("user_disabled", await relogin.ErrorCodeAsync());
        // disabling revoked the old sessions
        using var old = await client.Http.GetAsync("/api/v1/parcels");
        Assert.Equal(HttpStatusCode.Unauthorized, old.StatusCode);
    }

    [SkippableFact]
    public async Task Logout_revokes_the_token_and_missing_or_bogus_tokens_are_401()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var client = await _server.LoginAsync(alice);
        using var logout = await client.Http.PostAsync("/api/v1/logout", null);
        Assert.Equal(HttpStatusCode.NoContent, logout.StatusCode);
        using var after = await client.Http.GetAsync("/api/v1/parcels");
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
        Assert.Equal("unauthorized", await after.ErrorCodeAsync());
        using var anonymous = _server.CreateClient();
        using var none = await anonymous.GetAsync("/api/v1/parcels");
        Assert.Equal("unauthorized", await none.ErrorCodeAsync());
        anonymous.DefaultRequestHeaders.Authorization = new("Bearer", "bogus");
        using var bogus = await anonymous.GetAsync("/api/v1/parcels");
        Assert.Equal("unauthorized", await bogus.ErrorCodeAsync());
    }

    [SkippableFact]
    public async Task Sessions_expire()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var client = await _server.LoginAsync(alice);
        _server.Clock.Now += TimeSpan.FromDays(31);
        using var expired = await client.Http.GetAsync("/api/v1/parcels");
        Assert.Equal(HttpStatusCode.Unauthorized, expired.StatusCode);
    }

    [SkippableFact]
    public async Task Password_change_rewraps_and_recovery_blob_opens_with_the_recovery_key()
    {
        var alice = await _server.AddUserAsync("alice", "pw-alice");
        using var client = await _server.LoginAsync(alice);
        var recovery = await (await client.Http.GetAsync("/api/v1/account/recovery")).BodyAsync();
        var recovered = UserSecrets.Unwrap(alice.RecoveryKey, recovery.GetProperty("wrappedSecrets").GetBytesFromBase64());
        Assert.Equal(client.Secrets!.DomainSecret, recovered.DomainSecret);

        var newKdf = ServerFixture.CheapKdf();
        var newKeys = PasswordKdf.Derive("pw-new", newKdf);
        using var change = await client.Http.PutAsJsonAsync("/api/v1/account/password", new
        {
            authSecret = alice.Keys.AuthSecret, newAuthSecret = newKeys.AuthSecret, kdf = newKdf,
            wrappedSecrets = client.Secrets.Wrap(newKeys.KeyEncryptionKey),
        }, Isr.Server.Api.ApiJson.Options);
        Assert.Equal(HttpStatusCode.NoContent, change.StatusCode);
        using var oldLogin = await new ApiClient(_server.CreateClient(), alice).LoginAsync("s");
        Assert.Equal(HttpStatusCode.Unauthorized, oldLogin.StatusCode);
        using var newClient = await _server.LoginAsync(alice with { Password = "pw-new", Kdf = newKdf });
        Assert.Equal(client.Secrets.DomainSecret, newClient.Secrets!.DomainSecret);
    }

    [SkippableTheory]
    [InlineData("/api/v1/login", "{\"user\": ")]
    [InlineData("/api/v1/login", "[1,2,3]")]
    [InlineData("/api/v1/login", "{\"user\":\"a\",\"authSecret\":\"not base64!\"}")]
    [InlineData("/api/v1/login", "{\"authSecret\":\"AAAA\"}")]
    [InlineData("/api/v1/prelogin", "")]
    [InlineData("/api/v1/prelogin", "null")]
    public async Task Malformed_json_is_a_clean_400(string path, string body)
    {
        using var http = _server.CreateClient();
        using var response = await http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("bad_request", await response.ErrorCodeAsync());
        Assert.DoesNotContain("   at ", await response.Content.ReadAsStringAsync());
    }

    [SkippableFact]
    public async Task Unknown_endpoints_answer_json_errors()
    {
        using var http = _server.CreateClient();
        using var response = await http.GetAsync("/api/v1/nothing-here");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("not_found", await response.ErrorCodeAsync());
    }
}

/// <summary>The same tests with the metadata in PostgreSQL.</summary>
[Collection(PostgresCollection.Name)]
public sealed class AccountApiTestsOverPostgres(PostgresServer postgres) : AccountApiTests(ServerFixture.OverPostgres(postgres));
