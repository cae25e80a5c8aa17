using Isr.Client.Homes;
using Isr.Client.Site;
using Isr.Storage.Tests.Services;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// The two-site cycle over the distributed engines: PostgreSQL metadata and a Ceph RGW bucket, each started by the
/// project's service scripts, with site A going through one isr-server instance and site B through a second instance
/// on another port over the same database and bucket. Skipped loudly without the services; a failure under
/// ISR_REQUIRE_SERVICES=1.
/// </summary>
[Collection(DistributedEnginesCollection.Name)]
public sealed class DistributedCycleTests(PostgresServer postgres, CephCluster ceph)
{
    [SkippableFact]
    public async Task Site_A_through_one_server_suspends_and_site_B_through_another_resumes()
    {
        ceph.SkipIfUnavailable();
        var database = await postgres.CreateDatabaseAsync();
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        var engines = new TestServer.Engines(database,
            $"s3://{CephCluster.Bucket}/e2e-{Guid.NewGuid():N}?endpoint={Uri.EscapeDataString(ceph.Endpoint.ToString())}",
            new Dictionary<string, string> { ["AWS_ACCESS_KEY_ID"] = ceph.AccessKey, ["AWS_SECRET_ACCESS_KEY"] = ceph.SecretKey });
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var first = await TestServer.StartAsync(a.Root, TestSite.Password, engines);
        await using var second = await first.StartAnotherAsync();
        await a.LoginAsync(first);
        await b.LoginAsync(second);

        var consoleA = await CycleSteps.CreateAndBootAsync(a);
        var before = await CycleSteps.SuspendAndCheckInAsync(a, consoleA, 2);
        var consoleB = await CycleSteps.ResumeWhereItStoppedAsync(b, before);
        await CycleSteps.WaitForTicksAsync(b, consoleB, 4);
        var lastB = await CycleSteps.SuspendAndCheckInAsync(b, consoleB, 3);

        // Both sites' writes are in the newest version, read back through the instance site A did not use.
        using var home = new ServerParcelHome(new SiteDirectory(b.Home).Login!);
        await CycleSteps.AssertNewestHoldsAsync(home, Path.Combine(b.Root, "inspect"), before, lastB);
        Assert.Empty(ParcelInspector.FilesContaining(first.DataDirectory, TestEnvironment.Canary));
    }
}
