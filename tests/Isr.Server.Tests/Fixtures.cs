using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Isr.Format;
using Isr.Server;
using Isr.Server.Admin;
using Isr.Server.Api;
using Isr.Storage;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Isr.Server.Tests;

public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("isr-server-test-").FullName;
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>A clock the test moves by hand.</summary>
public sealed class ManualClock : TimeProvider
{
    public DateTimeOffset Now { get; set; } = DateTimeOffset.UtcNow;
    public override DateTimeOffset GetUtcNow() => Now;
}

/// <summary>The server in memory (TestServer) over a temporary data directory, with the embedded metadata engine or
/// the PostgreSQL database <paramref name="metadata"/> names, and chunks in the data directory or where
/// <paramref name="chunks"/> (a <see cref="ChunkStoreUrl"/>) says.</summary>
/// <param name="dataDirectory">The server's data directory (e.g. on a small file system); default: a temporary directory.</param>
public sealed class ServerFixture(string? metadata = null, string? chunks = null, string? dataDirectory = null) : WebApplicationFactory<Program>
{
    public TempDir Data { get; } = new();
    public ManualClock Clock { get; } = new();
    public string? MetadataConnection => metadata;

    /// <summary>A server over a fresh database of the run's PostgreSQL (skips or fails the test without one).</summary>
    public static ServerFixture OverPostgres(PostgresServer postgres) => new(postgres.CreateDatabaseAsync().GetAwaiter().GetResult());

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseSetting("Isr:DataDirectory", dataDirectory ?? Data.Path);
        if (metadata is not null) builder.UseSetting("Isr:Metadata", metadata);
        if (chunks is not null) builder.UseSetting("Isr:Chunks", chunks);
        builder.ConfigureServices(services => services.AddSingleton<TimeProvider>(Clock));
    }

    public IMetadataStore Metadata => Services.GetRequiredService<IMetadataStore>();
    public IChunkStore ChunkStore => Services.GetRequiredService<IChunkStore>();
    public DirectoryChunkStore Chunks => (DirectoryChunkStore)ChunkStore;
    public Maintenance Maintenance(TimeProvider? clock = null) => new(Metadata, ChunkStore, clock ?? Clock);

    /// <summary>Cheap Argon2 parameters: these tests are about the server, not the KDF's cost.</summary>
    public static KdfParameters CheapKdf() => new(RandomNumberGenerator.GetBytes(16), 1024, 1, 1);

    public async Task<TestUser> AddUserAsync(string name, string password)
    {
        _ = Server; // start the host (creates the schema)
        var kdf = CheapKdf();
        var made = UserProvisioning.Create(name, password, kdf);
        await Metadata.AddUserAsync(made.User, Clock.GetUtcNow(), CancellationToken.None);
        return new TestUser(name, password, kdf, made.RecoveryKey);
    }

    public async Task<ApiClient> LoginAsync(TestUser user, string siteId = "site-a")
    {
        var client = new ApiClient(CreateClient(), user);
        using var response = await client.LoginAsync(siteId);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return client;
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) Data.Dispose();
    }
}

public sealed record TestUser(string Name, string Password, KdfParameters Kdf, byte[] RecoveryKey)
{
    public PasswordKeys Keys => PasswordKdf.Derive(Password, Kdf);
}

/// <summary>The API as a client uses it (raw HTTP: these tests pin the wire format of PROTOCOL.md).</summary>
public sealed class ApiClient(HttpClient http, TestUser user) : IDisposable
{
    public HttpClient Http => http;
    public TestUser User => user;
    public string? Token { get; private set; }
    public UserSecrets? Secrets { get; private set; }
    /// <summary>The site's hoard-only token handed out with the last login.</summary>
    public string? HoardToken { get; private set; }

    public async Task<HttpResponseMessage> LoginAsync(string siteId, byte[]? authSecret = null)
    {
        var keys = user.Keys;
        var response = await http.PostAsJsonAsync("/api/v1/login",
            new { user = user.Name, authSecret = authSecret ?? keys.AuthSecret, siteId, siteName = $"{siteId} name" });
        if (response.StatusCode == HttpStatusCode.OK)
        {
            var body = await response.Content.ReadFromJsonAsync<JsonElement>();
            Token = body.GetProperty("token").GetString();
            HoardToken = body.TryGetProperty("hoardToken", out var hoard) ? hoard.GetString() : null;
            Secrets = UserSecrets.Unwrap(keys.KeyEncryptionKey, body.GetProperty("wrappedSecrets").GetBytesFromBase64());
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        }
        return response;
    }

    public Task<HttpResponseMessage> PostJsonAsync(string path, object body, string? lockToken = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body, options: ApiJson.Options) };
        if (lockToken is not null) request.Headers.Add("Isr-Lock-Token", lockToken);
        return http.SendAsync(request);
    }

    public async Task<HttpResponseMessage> UploadAsync(IEnumerable<(ChunkTag Tag, byte[] Blob)> blobs)
    {
        var content = new ByteArrayContent(Frames(blobs));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        return await http.PostAsync("/api/v1/chunks/upload", content);
    }

    public async Task<List<ChunkTag>> MissingAsync(IEnumerable<ChunkTag> tags)
    {
        using var response = await http.PostAsync("/api/v1/chunks/missing", Binary(Tags(tags)));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return ParseTags(await response.Content.ReadAsByteArrayAsync());
    }

    /// <summary>Downloads; null for a blob the server reports absent.</summary>
    public async Task<List<(ChunkTag Tag, byte[]? Blob)>> DownloadAsync(IEnumerable<ChunkTag> tags)
    {
        using var response = await http.PostAsync("/api/v1/chunks/download", Binary(Tags(tags)));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var bytes = await response.Content.ReadAsByteArrayAsync();
        var result = new List<(ChunkTag, byte[]?)>();
        for (int at = 0; at < bytes.Length;)
        {
            var tag = new ChunkTag(new Hash32(bytes.AsSpan(at, 32)));
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 32));
            at += 36;
            if (length == 0xFFFFFFFF) { result.Add((tag, null)); continue; }
            result.Add((tag, bytes.AsSpan(at, (int)length).ToArray()));
            at += (int)length;
        }
        return result;
    }

    public async Task<(string Token, JsonElement Body)> LockAsync(string parcel, string siteId)
    {
        using var response = await PostJsonAsync($"/api/v1/parcels/{parcel}/lock", new { siteId, siteName = $"{siteId} name" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        return (body.GetProperty("token").GetString()!, body);
    }

    public static byte[] Frames(IEnumerable<(ChunkTag Tag, byte[] Blob)> blobs)
    {
        using var stream = new MemoryStream();
        foreach (var (tag, blob) in blobs)
        {
            var header = new byte[36];
            tag.Hash.WriteTo(header);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(32), (uint)blob.Length);
            stream.Write(header);
            stream.Write(blob);
        }
        return stream.ToArray();
    }

    public static byte[] Tags(IEnumerable<ChunkTag> tags) => tags.SelectMany(t => t.Hash.ToArray()).ToArray();

    public static List<ChunkTag> ParseTags(byte[] bytes) =>
        Enumerable.Range(0, bytes.Length / 32).Select(i => new ChunkTag(new Hash32(bytes.AsSpan(i * 32, 32)))).ToList();

    public static ByteArrayContent Binary(byte[] bytes)
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        return content;
    }

    public void Dispose() => http.Dispose();
}

/// <summary>A parcel built with Isr.Format like a client would: encrypted chunks, a keyring tree, a sealed descriptor,
/// and signed version records.</summary>
public sealed class TestParcel
{
    public const int ChunkSize = 4096;
    public string Name { get; }
    public string Id { get; } = Guid.NewGuid().ToString("N");
    public ParcelKeys Keys { get; } = ParcelKeys.Generate();
    public UserSecrets Secrets { get; }
    private readonly ChunkCodec _codec;
    private readonly Random _rng;

    public TestParcel(string name, UserSecrets secrets, int seed = 1)
    {
        Name = name;
        Secrets = secrets;
        _codec = new ChunkCodec(secrets.DomainSecret);
        _rng = new Random(seed);
    }

    public long DiskSize(int chunks) => (long)chunks * ChunkSize;

    /// <summary>One version's content: every blob it needs, and its record (unsigned until <see cref="Record"/>).</summary>
    public sealed record Content(List<(ChunkTag Tag, byte[] Blob)> Blobs, ChunkTag DiskRoot, ChunkTag Descriptor, List<ChunkTag> ChunkTags, List<ChunkTag> PageTags);

    /// <summary>A disk of <paramref name="chunks"/> chunks (every 5th a zero chunk), fresh random content.</summary>
    public Content MakeContent(int chunks)
    {
        var blobs = new List<(ChunkTag, byte[])>();
        var refs = new List<ChunkRef>();
        var chunkTags = new List<ChunkTag>();
        for (int i = 0; i < chunks; i++)
        {
            if (i % 5 == 4) { refs.Add(ChunkRef.Zero(ChunkSize)); continue; }
            var plain = new byte[ChunkSize];
            _rng.NextBytes(plain);
            var (r, blob) = _codec.Encode(plain);
            refs.Add(r);
            blobs.Add((r.Tag, blob));
            chunkTags.Add(r.Tag);
        }
        var tree = ChunkListTree.Build(refs, Keys);
        blobs.AddRange(tree.NewPages);
        var descriptor = SealedBox.Seal(Keys.MetadataKey, System.Text.Encoding.UTF8.GetBytes($"descriptor {Guid.NewGuid()}"), "test descriptor");
        var descriptorTag = ChunkTag.Of(descriptor);
        blobs.Add((descriptorTag, descriptor));
        return new Content(blobs, tree.Root, descriptorTag, chunkTags, tree.NewPages.Select(p => p.Tag).ToList());
    }

    public VersionRecord Record(Content content, int chunks, string parentMac = "", string? commitId = null) => new VersionRecord
    {
        ParcelId = Id,
        CommitId = commitId ?? Guid.NewGuid().ToString("N"),
        ParentMac = parentMac,
        Created = DateTimeOffset.UtcNow,
        ChunkSize = ChunkSize,
        DiskSize = DiskSize(chunks),
        DiskRoot = content.DiskRoot.ToString(),
        DescriptorTag = content.Descriptor.ToString(),
    }.Sign(Keys);

    public object Info(int chunks) => new
    {
        name = Name, id = Id, chunkSize = ChunkSize, diskSize = DiskSize(chunks),
        wrappedKey = Secrets.WrapParcelKey(Keys, Id), created = DateTimeOffset.UtcNow,
    };
}

public static class Json
{
    /// <summary>The JSON body; may be read more than once.</summary>
    public static async Task<JsonElement> BodyAsync(this HttpResponseMessage response)
    {
        await response.Content.LoadIntoBufferAsync();
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
    }

    public static async Task<string> ErrorCodeAsync(this HttpResponseMessage response)
    {
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        var body = await response.BodyAsync();
        Assert.True(body.TryGetProperty("error", out var error) && error.GetString() is { Length: > 0 }, "error body lacks 'error'");
        return body.GetProperty("code").GetString()!;
    }

    public static VersionRecord Version(this JsonElement body) =>
        VersionRecord.FromJson(System.Text.Encoding.UTF8.GetBytes(body.GetProperty("version").GetRawText()));
}
