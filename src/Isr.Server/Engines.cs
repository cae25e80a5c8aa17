using Isr.Storage;
using Isr.Storage.Metadata;

namespace Isr.Server;

/// <summary>The one place that turns configuration into storage engines (server, admin commands, migrate).</summary>
public static class Engines
{
    /// <summary>True when <paramref name="metadata"/> names no database: the embedded SQLite file in the data directory.</summary>
    public static bool IsEmbeddedMetadata(string? metadata) => string.IsNullOrWhiteSpace(metadata);

    /// <summary>Empty: SQLite at <c>DATA/isr.db</c>. Otherwise an Npgsql connection string
    /// (<c>Host=…;Port=…;Username=…;Database=…</c>) of a PostgreSQL database that every server of the deployment shares.</summary>
    public static IMetadataStore OpenMetadata(string? metadata, string dataDirectory) =>
        IsEmbeddedMetadata(metadata)
            ? new SqliteMetadataStore(DataLayout.Database(dataDirectory))
            : new PostgresMetadataStore(metadata!);

    /// <summary>The chunk store a <see cref="ChunkStoreUrl"/> names (empty: <c>DATA/chunks</c>).</summary>
    public static IChunkStore OpenChunks(string? chunks, string dataDirectory) => ChunkStoreUrl.Parse(chunks).Open(dataDirectory);

    /// <summary>A chunk store from its location: an <c>s3://</c> URL, or a directory.</summary>
    public static IChunkStore OpenChunks(string location) =>
        location.StartsWith("s3://", StringComparison.Ordinal) ? OpenChunks(location, "") : new DirectoryChunkStore(location);
}
