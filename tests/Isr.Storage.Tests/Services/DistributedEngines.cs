namespace Isr.Storage.Tests.Services;

/// <summary>Tests that need both real distributed engines: PostgreSQL and Ceph radosgw, each started once for the
/// collection (skipped loudly without them, failed under ISR_REQUIRE_SERVICES=1).</summary>
[CollectionDefinition(Name)]
public sealed class DistributedEnginesCollection : ICollectionFixture<PostgresServer>, ICollectionFixture<CephCluster>
{
    public const string Name = "postgres+ceph";
}
