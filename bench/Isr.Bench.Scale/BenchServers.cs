using System.Security.Cryptography;
using Isr.Format;
using Isr.Server;
using Isr.Server.Admin;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Isr.Bench.Scale;

/// <summary>One or more real isr-server instances (Kestrel, HTTPS, HTTP/2) on loopback ports, over the same data
/// directory and chunk store: stateless instances sharing their engines, as a deployment behind a load balancer.</summary>
public sealed class BenchServers : IAsyncDisposable
{
    private readonly List<WebApplication> _apps = [];

    public string DataDirectory { get; }
    public string Fingerprint { get; }
    public IReadOnlyList<string> Urls { get; private set; } = [];

    private BenchServers(string dataDirectory, string fingerprint)
    {
        DataDirectory = dataDirectory;
        Fingerprint = fingerprint;
    }

    public static async Task<BenchServers> StartAsync(string dataDirectory, string? chunks, string? metadata, int count, CancellationToken ct)
    {
        Directory.CreateDirectory(dataDirectory);
        using var cert = ServerCertificate.Create();
        ServerCertificate.Save(cert, DataLayout.Certificate(dataDirectory));
        var servers = new BenchServers(dataDirectory, ServerCertificate.Fingerprint(cert));
        var urls = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
            builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.DataDirectory)}"] = dataDirectory;
            builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.Chunks)}"] = chunks ?? "";
            builder.Configuration[$"{IsrServerOptions.Section}:{nameof(IsrServerOptions.Metadata)}"] = metadata ?? "";
            builder.WebHost.UseUrls("https://127.0.0.1:0");
            builder.Logging.ClearProviders();
            builder.AddIsrServer();
            var app = builder.Build();
            app.MapIsrApi();
            await app.StartAsync(ct);
            servers._apps.Add(app);
            urls.Add(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single());
        }
        servers.Urls = urls;
        return servers;
    }

    /// <summary>Accounts made directly in the metadata store, with cheap KDF parameters: the benchmark is about the
    /// data path, not about Argon2.</summary>
    public async Task AddUsersAsync(IEnumerable<(string Name, string Password)> users, CancellationToken ct)
    {
        var metadata = _apps[0].Services.GetRequiredService<IMetadataStore>();
        foreach (var (name, password) in users)
        {
            var made = UserProvisioning.Create(name, password, new KdfParameters(RandomNumberGenerator.GetBytes(16), 1024, 1, 1));
            await metadata.AddUserAsync(made.User, DateTimeOffset.UtcNow, ct);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var app in _apps) await app.DisposeAsync();
    }
}
