using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Isr.Client.Homes;
using Isr.Client.Site;
using Isr.Client.Transfer;
using Isr.Storage;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// Hoarding at another site through the real server: site A asks that site B hoard the parcel; B's daemon, run as a
/// site service with no password, picks the request up with B's hoard-only token, fills B's cache with ciphertext and
/// reports it done; B then resumes the guest where A suspended it with nothing fetched from the home.
/// </summary>
public sealed class RemoteHoardTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);

    [Fact]
    public async Task A_hoard_requested_at_site_A_is_done_by_site_Bs_daemon_and_B_resumes_from_its_cache_alone()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        await a.LoginAsync(server);
        // --keep-keys 0 starts no daemon at B: B's daemon is the site service below, keyless (one daemon per site).
        await b.LoginAsync(server, "--keep-keys", "0");
        var consoleA = await CycleSteps.CreateAndBootAsync(a);
        var before = await CycleSteps.SuspendAndCheckInAsync(a, consoleA, 2);

        var sites = await a.IsrJsonAsync("site", "list");
        Assert.Contains(sites.EnumerateArray(), s => s.GetProperty("siteName").GetString() == "site-b");
        var requested = await a.IsrJsonAsync("hoard", "box", "--site", "site-b");
        Assert.Equal(("pending", "site-b"), (requested.GetProperty("state").GetString(), requested.GetProperty("siteName").GetString()));

        // Site B's daemon as a site service: no password anywhere in its environment.
        await File.WriteAllTextAsync(Path.Combine(b.Home, "config.json"), """{"hoardPollSeconds": 1}""");
        var log = new StringBuilder();
        using var daemon = StartService(b, log);
        try
        {
            var request = await WaitForEndAsync(a, log);
            Assert.True(request.GetProperty("state").GetString() == "done", $"request ended {request}\ndaemon: {log}");
            Assert.Equal(2, request.GetProperty("version").GetInt64());
            Assert.True(request.GetProperty("bytesDone").GetInt64() > 1 << 20);

            var status = await b.IsrJsonAsync("status");
            var hoard = status.EnumerateArray().Single(s => s.GetProperty("parcel").GetString() == "box").GetProperty("hoard");
            Assert.Equal(("done", 2L), (hoard.GetProperty("state").GetString(), hoard.GetProperty("version").GetInt64()));

            // B's cache holds every blob of the version (listed from the cache alone), and only ciphertext.
            var siteB = new SiteDirectory(b.Home);
            using (var home = new ServerParcelHome(siteB.Login!))
            {
                var head = (await home.ListVersionsAsync("box", default)).Last(v => !v.Side);
                var nowhere = new DirectoryChunkStore(Path.Combine(b.Root, "nowhere"));
                var blobs = await new Hoarder(siteB.Cache, nowhere).ListAsync(head, default);
                Assert.NotEmpty(blobs.DiskChunks);
                Assert.Empty(await siteB.Cache.MissingAsync(blobs.All, default));
            }
            Assert.Empty(ParcelInspector.FilesContaining(b.Home, TestEnvironment.Canary));
            Assert.Empty(ParcelInspector.FilesContaining(b.Home, TestSite.Password));

            // B resumes where A stopped, through the service daemon, and nothing comes from the home.
            await CycleSteps.ResumeWhereItStoppedAsync(b, before);
            var session = (await b.IsrJsonAsync("stat", "box")).GetProperty("session");
            var transfers = session.GetProperty("transfers");
            Assert.Equal(0, session.GetProperty("homeBytes").GetInt64());
            Assert.Equal(0, transfers.GetProperty("demandHomeBytes").GetInt64());
            Assert.Equal(0, transfers.GetProperty("totalHomeBytes").GetInt64());
            Assert.True(session.GetProperty("cacheBytes").GetInt64() > 1 << 20, "the memory image came from the cache");

            // Revoked from site A: B's daemon is refused at its next poll and forgets the token.
            await a.IsrOkAsync("site", "revoke", "site-b");
            var token = Path.Combine(b.Home, "hoard-token.json");
            for (var waited = Stopwatch.StartNew(); File.Exists(token) && waited.Elapsed < Bound;) await Task.Delay(500);
            Assert.False(File.Exists(token), $"site B kept a revoked hoard token\ndaemon: {log}");
        }
        finally
        {
            daemon.Kill(entireProcessTree: true);
            await daemon.WaitForExitAsync();
        }
    }

    /// <summary>`isr daemon --service` for <paramref name="site"/>, without ISR_PASSWORD; output goes to <paramref name="log"/>.</summary>
    private static Process StartService(TestSite site, StringBuilder log)
    {
        var (program, args) = TestEnvironment.IsrCommand(["daemon", "--service"]);
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args) start.ArgumentList.Add(arg);
        start.Environment.Remove("ISR_PASSWORD");
        start.Environment["ISR_HOME"] = site.Home;
        start.Environment["ISR_SITE_NAME"] = site.Name;
        start.Environment["DISPLAY"] = "";
        var process = Process.Start(start)!;
        void Append(object _, DataReceivedEventArgs e) { if (e.Data is { } line) lock (log) log.AppendLine(line); }
        process.OutputDataReceived += Append;
        process.ErrorDataReceived += Append;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    /// <summary>Polls `isr hoard --requests` at site A until the one request has ended (bounded).</summary>
    private static async Task<JsonElement> WaitForEndAsync(TestSite a, StringBuilder log)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            var request = Assert.Single((await a.IsrJsonAsync("hoard", "--requests")).EnumerateArray());
            if (request.GetProperty("state").GetString() is "done" or "failed" or "revoked") return request;
            if (waited.Elapsed > Bound) throw new TimeoutException($"the hoard request did not end within {Bound}: {request}\ndaemon: {log}");
            await Task.Delay(1000);
        }
    }
}
