using System.Security.Cryptography.X509Certificates;
using Isr.Server.Api;
using Isr.Server.Blobs;
using Isr.Storage;
using Isr.Storage.Metadata;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;

namespace Isr.Server;

public static class ServerSetup
{
    /// <summary>Options, the metadata store (<see cref="Engines.OpenMetadata"/>), the chunk store (DATA/chunks or the
    /// <see cref="IsrServerOptions.Chunks"/> URL), and Kestrel:
    /// HTTP/1.1 + HTTP/2, HTTPS with DATA/server.pfx.</summary>
    public static WebApplicationBuilder AddIsrServer(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<IsrServerOptions>().Bind(builder.Configuration.GetSection(IsrServerOptions.Section));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<IMetadataStore>(sp =>
        {
            var options = sp.GetRequiredService<IOptions<IsrServerOptions>>().Value;
            return Engines.OpenMetadata(options.Metadata, options.ResolvedDataDirectory());
        });
        builder.Services.AddSingleton<IChunkStore>(sp =>
        {
            var options = sp.GetRequiredService<IOptions<IsrServerOptions>>().Value;
            var chunks = options.Chunks.Length > 0 ? options.Chunks : Environment.GetEnvironmentVariable(ChunkStoreUrl.EnvironmentVariable);
            return Engines.OpenChunks(chunks, options.ResolvedDataDirectory());
        });
        builder.Services.AddSingleton<BlobAccess>();
        builder.Services.AddSingleton<CommitChecker>();
        builder.Services.AddHostedService<MetadataInitializer>();
        builder.Services.AddHostedService<CommitCheckWarmer>(); // after the schema exists
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = ApiJson.Options.PropertyNamingPolicy;
            o.SerializerOptions.RespectNullableAnnotations = true;
        });
        builder.Services.AddProblemDetails();

        builder.WebHost.ConfigureKestrel((context, kestrel) =>
        {
            kestrel.AddServerHeader = false;
            kestrel.ConfigureEndpointDefaults(listen => listen.Protocols = HttpProtocols.Http1AndHttp2);
            var options = new IsrServerOptions();
            context.Configuration.GetSection(IsrServerOptions.Section).Bind(options);
            string? certificate = options.CertificatePath;
            if (certificate is null)
            {
                try { certificate = DataLayout.Certificate(options.ResolvedDataDirectory()); }
                catch (InvalidOperationException) { }
            }
            if (certificate is not null && File.Exists(certificate))
            {
                var cert = X509CertificateLoader.LoadPkcs12FromFile(certificate, null);
                kestrel.ConfigureHttpsDefaults(https => https.ServerCertificate = cert);
            }
        });
        return builder;
    }

    /// <summary>Every endpoint of docs/PROTOCOL.md under /api/v1, with JSON errors for every failure.</summary>
    public static WebApplication MapIsrApi(this WebApplication app)
    {
        app.UseStatusCodePages(ApiErrorHandling.StatusCodePage);
        app.Use(ApiErrorHandling.Middleware);
        var api = app.MapGroup("/api/v1");
        AccountEndpoints.Map(api);
        var authed = api.MapGroup("").AddEndpointFilter(Sessions.RequireSession);
        AccountEndpoints.MapAuthenticated(authed);
        ParcelEndpoints.Map(authed);
        ChunkEndpoints.Map(authed);
        HoardEndpoints.Map(authed);
        return app;
    }
}

/// <summary>Creates or migrates the database schema and readies the chunk store when the server starts.</summary>
internal sealed class MetadataInitializer(IMetadataStore metadata, IChunkStore chunks) : IHostedService
{
    public async Task StartAsync(CancellationToken ct)
    {
        await metadata.InitializeAsync(ct);
        await ChunkStoreUrl.PrepareAsync(chunks, ct);
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;
}
