using Isr.Storage.Metadata;

namespace Isr.Server.Tests;

/// <summary>The metadata contract against PostgreSQL: a fresh database per test in the run's one server.</summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresMetadataStoreTests(PostgresServer postgres) : MetadataStoreContract
{
    protected override Task<string> NewDatabaseAsync() => postgres.CreateDatabaseAsync();

    protected override IMetadataStore Open(string database) => new PostgresMetadataStore(database);

    protected override Task<int> SchemaVersionAsync(IMetadataStore store) => ((PostgresMetadataStore)store).SchemaVersionAsync(Ct);

    protected override async Task ExecuteSqlAsync(string database, string sql)
    {
        await using var connection = new Npgsql.NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
