using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Isr.Format;
using Isr.Server.Admin;
using Isr.Server.Api;
using Isr.Server.Blobs;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Isr.Fuzz.Tests;

/// <summary>The server's binary framing (directly) and its API (in memory, over a temporary data directory) under mutated
/// bodies: a 2xx for what is still valid, otherwise a 4xx with a JSON <c>{error, code}</c> body, never a 5xx; and the server
/// keeps serving valid requests.</summary>
public sealed class ServerFuzzTests(ITestOutputHelper output)
{
    // ---------------------------------------------------------------- Framing, directly

    /// <summary>Returns at most a few bytes per read, like a slow network.</summary>
    private sealed class TrickleStream(byte[] data, Random rng) : Stream
    {
        private int _position;
        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = Math.Min(Math.Min(count, 1 + rng.Next(7)), data.Length - _position);
            Array.Copy(data, _position, buffer, offset, n);
            _position += n;
            return n;
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private static byte[] Frames(IEnumerable<(ChunkTag Tag, byte[] Blob)> blobs)
    {
        using var stream = new MemoryStream();
        var header = new byte[Framing.HeaderSize];
        foreach (var (tag, blob) in blobs)
        {
            Framing.WriteHeader(header, tag, (uint)blob.Length);
            stream.Write(header);
            stream.Write(blob);
        }
        return stream.ToArray();
    }

    private static List<Field> FrameFields(IEnumerable<(ChunkTag Tag, byte[] Blob)> blobs)
    {
        var fields = new List<Field>();
        int at = 0;
        foreach (var (_, blob) in blobs)
        {
            fields.Add(new Field(at + 32, 4, false));
            at += Framing.HeaderSize + blob.Length;
        }
        return fields;
    }

    [Fact]
    public void Framing_ReadTags_ReadHeader_ParseTag()
    {
        var setup = new Random(FuzzConfig.TargetSeed("framing-seeds"));
        var blobs = Enumerable.Range(0, 6).Select(i => Crypto.Bytes(setup, setup.Next(0, 3000))).Select(b => (ChunkTag.Of(b), b)).ToList();
        var seeds = new List<Seed>
        {
            new(Framing.EncodeTags(blobs.Select(b => b.Item1))),
            new(Framing.EncodeTags(blobs.Take(1).Select(b => b.Item1))),
            new(Frames(blobs), FrameFields(blobs)),
            new(Frames(blobs.Take(2)), FrameFields(blobs.Take(2))),
            new(Encoding.ASCII.GetBytes(blobs[0].Item1.ToString())),
        };

        new FuzzRunner(output, "framing").Run((rng, k, ctx) =>
        {
            byte[] input = Mutator.Mutate(rng, seeds[rng.Next(seeds.Count)], seeds);
            ctx.Input = input;
            Stream Body() => rng.Next(2) == 0 ? new MemoryStream(input) : new TrickleStream(input, rng);
            switch (rng.Next(3))
            {
                case 0:
                {
                    int max = rng.Next(4) == 0 ? rng.Next(0, 8) : 65536;
                    ctx.Note = $"ReadTagsAsync(max {max})";
                    try
                    {
                        var tags = Framing.ReadTagsAsync(Body(), max, CancellationToken.None).GetAwaiter().GetResult();
                        if (input.Length % 32 != 0 || tags.Count != input.Length / 32 || tags.Count > max)
                            throw new FuzzFailure($"accepted {tags.Count} tags from {input.Length} bytes (max {max})");
                        if (!Framing.EncodeTags(tags).AsSpan().SequenceEqual(input)) throw new FuzzFailure("tags do not round-trip");
                        return "ReadTags ok";
                    }
                    catch (ApiException e) when (e.Status == 400) { return "ReadTags: 400"; }
                }
                case 1:
                {
                    ctx.Note = "ReadHeaderAsync loop";
                    var body = Body();
                    var header = new byte[Framing.HeaderSize];
                    int frames = 0;
                    try
                    {
                        while (Framing.ReadHeaderAsync(body, header, CancellationToken.None).GetAwaiter().GetResult() is var (tag, length))
                        {
                            frames++;
                            if (length == Framing.Absent || length > 1 << 20) return "ReadHeader: oversized frame";
                            var blob = new byte[length];
                            if (body.ReadAtLeast(blob, (int)length, throwOnEndOfStream: false) < length) return "ReadHeader: truncated blob";
                            _ = tag.Matches(blob);
                        }
                        return $"ReadHeader: clean end after frames";
                    }
                    catch (ApiException e) when (e.Status == 400) { return "ReadHeader: 400"; }
                }
                default:
                {
                    string text = Encoding.UTF8.GetString(input);
                    ctx.Note = "ParseTag";
                    try
                    {
                        var tag = Framing.ParseTag(text, "fuzz");
                        if (text.Length != 64 || text.Any(c => c is not (>= '0' and <= '9' or >= 'a' and <= 'f')) || tag.ToString() != text)
                            throw new FuzzFailure($"ParseTag accepted '{text}'");
                        return "ParseTag ok";
                    }
                    catch (ApiException e) when (e.Status == 400) { return "ParseTag: 400"; }
                }
            }
        });
    }

    // ---------------------------------------------------------------- the API

    private sealed class Factory : WebApplicationFactory<Program>
    {
        public DirectoryInfo Data { get; } = Directory.CreateTempSubdirectory("isr-fuzz-server-");
        public ConcurrentQueue<string> Errors { get; } = new();

        protected override void ConfigureWebHost(IWebHostBuilder builder)
        {
            builder.UseSetting("Isr:DataDirectory", Data.FullName);
            builder.ConfigureLogging(logging =>
            {
                logging.ClearProviders();
                logging.AddProvider(new ErrorCollector(Errors));
            });
        }

        protected override void Dispose(bool disposing)
        {
            base.Dispose(disposing);
            if (disposing)
            {
                try { Data.Delete(recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
        }
    }

    private sealed class ErrorCollector(ConcurrentQueue<string> errors) : ILoggerProvider, ILogger
    {
        public ILogger CreateLogger(string categoryName) => this;
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error && errors.Count < 100) errors.Enqueue($"{logLevel}: {formatter(state, exception)} {exception}");
        }
        public void Dispose() { }
    }

    private sealed record Endpoint(string Name, HttpMethod Method, Func<Random, string> Path, bool Json, bool Authenticated, bool LockToken, List<Seed> Seeds);

    [Fact]
    public async Task Api_rejects_mutated_bodies_with_json_4xx()
    {
        var setup = new Random(FuzzConfig.TargetSeed("api-seeds"));
        using var factory = new Factory();
        _ = factory.Server;
        var metadata = factory.Services.GetRequiredService<IMetadataStore>();
        const string userName = "fuzzer", password = "correct horse";
        var kdf = new KdfParameters(Crypto.Bytes(setup, 16), 1024, 1, 1);
        await metadata.AddUserAsync(UserProvisioning.Create(userName, password, kdf).User, DateTimeOffset.UtcNow, CancellationToken.None);
        var passwordKeys = PasswordKdf.Derive(password, kdf);

        using var http = factory.CreateClient();
        using var login = await http.PostAsJsonAsync("/api/v1/login", new { user = userName, authSecret = passwordKeys.AuthSecret, siteId = "site-a", siteName = "A" });
        Assert.Equal(HttpStatusCode.OK, login.StatusCode);
        var loginBody = await login.Content.ReadFromJsonAsync<JsonElement>();
        string token = loginBody.GetProperty("token").GetString()!;
        var secrets = UserSecrets.Unwrap(passwordKeys.KeyEncryptionKey, loginBody.GetProperty("wrappedSecrets").GetBytesFromBase64());
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);

        // A parcel with a first version, its lock, and content for three more versions (uploaded, so commits are complete).
        var keys = Crypto.Keys(setup);
        var codec = new ChunkCodec(secrets.DomainSecret);
        string parcelId = Convert.ToHexStringLower(Crypto.Bytes(setup, 16));
        const string parcelName = "fuzz-parcel";
        const int chunkSize = 4096;
        (List<(ChunkTag Tag, byte[] Blob)> Blobs, VersionRecord Record) MakeVersion(string parentMac, int chunks)
        {
            var blobs = new List<(ChunkTag, byte[])>();
            var refs = new List<ChunkRef>();
            for (int i = 0; i < chunks; i++)
            {
                var (r, blob) = codec.Encode(Crypto.Bytes(setup, chunkSize));
                refs.Add(r);
                blobs.Add((r.Tag, blob));
            }
            var tree = ChunkListTree.Build(refs, keys);
            blobs.AddRange(tree.NewPages);
            var descriptor = Crypto.Seal(setup, keys.MetadataKey, Encoding.UTF8.GetBytes("descriptor"), "test descriptor");
            blobs.Add((ChunkTag.Of(descriptor), descriptor));
            var record = new VersionRecord
            {
                ParcelId = parcelId, CommitId = Convert.ToHexStringLower(Crypto.Bytes(setup, 16)), ParentMac = parentMac,
                Created = DateTimeOffset.UnixEpoch.AddDays(20000 + setup.Next(1000)), ChunkSize = chunkSize, DiskSize = (long)chunks * chunkSize,
                DiskRoot = tree.Root.ToString(), DescriptorTag = ChunkTag.Of(descriptor).ToString(),
            }.Sign(keys);
            return (blobs, record);
        }
        async Task UploadAsync(IEnumerable<(ChunkTag, byte[])> blobs)
        {
            using var response = await http.PostAsync("/api/v1/chunks/upload", Binary(Frames(blobs)));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        var first = MakeVersion("", 5);
        await UploadAsync(first.Blobs);
        using (var created = await PostJsonAsync(http, "/api/v1/parcels", new
        {
            parcel = new { name = parcelName, id = parcelId, chunkSize, diskSize = 5L * chunkSize, wrappedKey = secrets.WrapParcelKey(keys, parcelId), created = DateTimeOffset.UtcNow },
            first = first.Record,
        }))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        string lockToken;
        using (var locked = await PostJsonAsync(http, $"/api/v1/parcels/{parcelName}/lock", new { siteId = "site-a", siteName = "A" }))
        {
            Assert.Equal(HttpStatusCode.OK, locked.StatusCode);
            lockToken = (await locked.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
        }
        var next = Enumerable.Range(0, 3).Select(i => MakeVersion(first.Record.Mac, 3 + i)).ToList();
        foreach (var v in next) await UploadAsync(v.Blobs);
        var fresh = Enumerable.Range(0, 8).Select(_ => Crypto.Bytes(setup, setup.Next(1, 5000))).Select(b => (ChunkTag.Of(b), b)).ToList();

        var allBlobs = first.Blobs.Concat(next.SelectMany(v => v.Blobs)).ToList();
        var json = (object o) => JsonSerializer.SerializeToUtf8Bytes(o, ApiJson.Options);
        var endpoints = new List<Endpoint>
        {
            new("upload", HttpMethod.Post, _ => "/api/v1/chunks/upload", false, true, false,
            [
                new(Frames(fresh.Take(3)), FrameFields(fresh.Take(3))), new(Frames(fresh.Skip(3)), FrameFields(fresh.Skip(3))),
                new(Frames(allBlobs.Take(4)), FrameFields(allBlobs.Take(4))), new([]),
            ]),
            new("missing", HttpMethod.Post, _ => "/api/v1/chunks/missing", false, true, false,
            [
                new(Framing.EncodeTags(allBlobs.Take(10).Select(b => b.Tag))), new(Framing.EncodeTags(fresh.Select(b => b.Item1))),
                new(Framing.EncodeTags([ChunkTag.ZeroChunk])),
            ]),
            new("login", HttpMethod.Post, _ => "/api/v1/login", true, false, false,
            [
                new(json(new { user = userName, authSecret = passwordKeys.AuthSecret, siteId = "site-b", siteName = "B" })),
                new(json(new { user = userName, authSecret = Crypto.Bytes(setup, 32) })),
                new(json(new { user = "nobody", authSecret = passwordKeys.AuthSecret, siteId = "x" })),
            ]),
            new("prelogin", HttpMethod.Post, _ => "/api/v1/prelogin", true, false, false,
                [new(json(new { user = userName })), new(json(new { user = "nobody" }))]),
            new("lock-checkin", HttpMethod.Put, _ => $"/api/v1/parcels/{parcelName}/lock/checkin", true, true, true,
                [new(json(new { sent = 40, total = 120 })), new(json(new { sent = 0 }))]),
            new("versions", HttpMethod.Post,
                rng => rng.Next(20) == 0 ? $"/api/v1/parcels/{Uri.EscapeDataString(Mutator.RandomText(rng, 80))}/versions" : $"/api/v1/parcels/{parcelName}/versions",
                true, true, true,
                [.. next.Select(v => new Seed(json(new { version = v.Record, commitId = v.Record.CommitId }))),
                 .. next.Select(v => new Seed(json(new { version = v.Record })))]),
        };

        long healthChecks = 0;
        async Task HealthyAsync()
        {
            using var list = await http.GetAsync("/api/v1/parcels");
            if (list.StatusCode != HttpStatusCode.OK) throw new FuzzFailure($"GET /parcels answered {(int)list.StatusCode} after fuzzing");
            using var missing = await http.PostAsync("/api/v1/chunks/missing", Binary(Framing.EncodeTags(allBlobs.Take(3).Select(b => b.Tag))));
            if (missing.StatusCode != HttpStatusCode.OK || (await missing.Content.ReadAsByteArrayAsync()).Length != 0)
                throw new FuzzFailure($"a valid missing request answered {(int)missing.StatusCode} after fuzzing");
            Interlocked.Increment(ref healthChecks);
        }

        using var raw = factory.CreateClient(); // no default headers: each case decides what it sends
        var uploadedTags = new ConcurrentDictionary<ChunkTag, byte>();
        new FuzzRunner(output, "api") { CaseTimeout = TimeSpan.FromSeconds(20) }.Run((rng, k, ctx) =>
        {
            var endpoint = endpoints[rng.Next(endpoints.Count)];
            var seed = endpoint.Seeds[rng.Next(endpoint.Seeds.Count)];
            byte[] body = endpoint.Json && rng.Next(4) != 0
                ? JsonMutator.Mutate(rng, seed.Data, endpoint.Seeds)
                : Mutator.Mutate(rng, seed, endpoint.Seeds);
            ctx.Input = body;
            string path = endpoint.Path(rng);
            var request = new HttpRequestMessage(endpoint.Method, path) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue(endpoint.Json ? "application/json" : "application/octet-stream");
            if (endpoint.Authenticated && rng.Next(30) != 0) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            if (endpoint.LockToken && rng.Next(10) != 0) request.Headers.Add("Isr-Lock-Token", rng.Next(20) == 0 ? lockToken + "x" : lockToken);
            ctx.Note = $"{endpoint.Method} {path}";
            if (endpoint.Name == "upload")
                foreach (var tag in HeaderTags(body)) if (uploadedTags.Count < 5000) uploadedTags.TryAdd(tag, 0);

            string outcome = SendAsync(raw, request, endpoint.Name).GetAwaiter().GetResult();
            if (factory.Errors.TryDequeue(out var error)) throw new FuzzFailure($"the server logged an error: {error}");
            if (k % 100 == 99) HealthyAsync().GetAwaiter().GetResult();
            return outcome;
        });

        await HealthyAsync();
        // Whatever got stored through mutated uploads matches its tag.
        var candidates = uploadedTags.Keys.Where(t => !t.IsZeroChunk).Take(2000).ToList();
        using var held = await http.PostAsync("/api/v1/chunks/missing", Binary(Framing.EncodeTags(candidates)));
        Assert.Equal(HttpStatusCode.OK, held.StatusCode);
        var missingTags = ParseTags(await held.Content.ReadAsByteArrayAsync()).ToHashSet();
        int verified = 0;
        foreach (var tag in candidates.Where(t => !missingTags.Contains(t)))
        {
            using var get = await http.GetAsync($"/api/v1/chunks/{tag}");
            Assert.Equal(HttpStatusCode.OK, get.StatusCode);
            Assert.True(tag.Matches(await get.Content.ReadAsByteArrayAsync()), $"stored blob {tag} does not match its tag");
            verified++;
        }
        output.WriteLine($"[api] {healthChecks} health checks passed; {verified} blobs stored through fuzzed uploads all match their tags");
    }

    private static async Task<string> SendAsync(HttpClient http, HttpRequestMessage request, string endpoint)
    {
        using var response = await http.SendAsync(request);
        int status = (int)response.StatusCode;
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        if (status >= 500) throw new FuzzFailure($"{endpoint}: {status} {Encoding.UTF8.GetString(body)}");
        if (status >= 400)
        {
            if (response.Content.Headers.ContentType?.MediaType != "application/json")
                throw new FuzzFailure($"{endpoint}: {status} without a JSON body ({response.Content.Headers.ContentType})");
            JsonElement error;
            try
            {
                error = JsonDocument.Parse(body).RootElement;
            }
            catch (JsonException)
            {
                throw new FuzzFailure($"{endpoint}: {status} with a body that is not JSON: {Encoding.UTF8.GetString(body)}");
            }
            if (error.ValueKind != JsonValueKind.Object || !error.TryGetProperty("error", out var message) || message.ValueKind != JsonValueKind.String
                || message.GetString() is not { Length: > 0 } || !error.TryGetProperty("code", out var code) || code.GetString() is not { Length: > 0 } c)
                throw new FuzzFailure($"{endpoint}: {status} body is not {{error, code}}: {Encoding.UTF8.GetString(body)}");
            return $"{endpoint}: {status} {c}";
        }
        if (endpoint == "missing" && body.Length % 32 != 0) throw new FuzzFailure("missing: a 2xx body that is not a tag list");
        return $"{endpoint}: {status}";
    }

    private static IEnumerable<ChunkTag> HeaderTags(byte[] body)
    {
        for (int at = 0; at + Framing.HeaderSize <= body.Length;)
        {
            yield return new ChunkTag(new Hash32(body.AsSpan(at, 32)));
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(at + 32));
            if (length > body.Length) yield break;
            at += Framing.HeaderSize + (int)length;
        }
    }

    private static List<ChunkTag> ParseTags(byte[] bytes) =>
        Enumerable.Range(0, bytes.Length / 32).Select(i => new ChunkTag(new Hash32(bytes.AsSpan(i * 32, 32)))).ToList();

    private static ByteArrayContent Binary(byte[] bytes)
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        return content;
    }

    private static Task<HttpResponseMessage> PostJsonAsync(HttpClient http, string path, object body) =>
        http.PostAsync(path, new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body, ApiJson.Options)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } });
}
