using Isr.Format;
using Isr.Storage.Metadata;

namespace Isr.Server.Tests;

/// <summary>The metadata contract against the embedded engine: a fresh SQLite file per test.</summary>
public sealed class SqliteMetadataStoreTests : MetadataStoreContract
{
    private readonly TempDir _dir = new();
    private int _databases;

    protected override Task<string> NewDatabaseAsync() =>
        Task.FromResult(Path.Combine(_dir.Path, $"isr-{Interlocked.Increment(ref _databases)}.db"));

    protected override IMetadataStore Open(string database) => new SqliteMetadataStore(database);

    protected override Task<int> SchemaVersionAsync(IMetadataStore store) => ((SqliteMetadataStore)store).SchemaVersionAsync(Ct);

    protected override async Task ExecuteSqlAsync(string database, string sql)
    {
        await using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={database}");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    public override void Dispose()
    {
        base.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public void Prune_policy_never_removes_the_head()
    {
        var versions = Enumerable.Range(1, 5).Select(i => new VersionRecord
        {
            ParcelId = "pid", Number = i, Created = DateTimeOffset.UtcNow, ChunkSize = 4096, DiskSize = 4096,
            DiskRoot = new string('a', 64), DescriptorTag = new string('b', 64),
        }).ToList();
        Assert.Equal([1L, 2L, 3L, 4L], PrunePolicy.Select(versions, 1).Select(v => v.Number));
        Assert.Empty(PrunePolicy.Select(versions, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => PrunePolicy.Select(versions, 0));
    }
}
