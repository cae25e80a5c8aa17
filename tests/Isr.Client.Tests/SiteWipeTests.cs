using Isr.Client.Disk;
using Isr.Client.Homes;
using Isr.Client.Site;
using Isr.Format;
using Isr.Testing;

namespace Isr.Client.Tests;

/// <summary>The site wipe after a check-in: the parcel's state always goes; the login and the cache, shared by the
/// site's parcels, go with the last parcel (the cache only with wipeCache).</summary>
public sealed class SiteWipeTests : IDisposable
{
    private readonly TempDir _dir = new();

    private SiteDirectory SiteWith(params string[] parcels)
    {
        var site = new SiteDirectory(_dir["site"]);
        site.SaveLogin(new LoginRecord("https://127.0.0.1:1", "alice", "fp", "token", TestData.Random(64, 1), new KdfParameters(TestData.Random(16, 2), 8, 1, 1)));
        foreach (var parcel in parcels)
        {
            Directory.CreateDirectory(site.ParcelDirectory(parcel));
            DirtyJournal.WriteEmpty(site.JournalPath(parcel), 1);
            File.WriteAllText(site.PendingCommitPath(parcel), "{}");
        }
        var blob = TestData.Random(4096, 3);
        site.Cache.PutAsync(ChunkTag.Of(blob), blob, default).AsTask().GetAwaiter().GetResult();
        return site;
    }

    [Fact]
    public void The_last_parcel_takes_the_login_and_the_cache_with_it()
    {
        var site = SiteWith("box");
        var report = SiteWipe.Run(site, "box", wipeCache: true);
        Assert.Equal(new[] { true, true, true }, new[] { report.ParcelState, report.Login, report.Cache });
        Assert.False(Directory.Exists(site.ParcelDirectory("box")));
        Assert.Null(site.Login);
        Assert.Empty(Directory.EnumerateFiles(site.Cache.Root, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public void Another_parcel_keeps_the_login_and_the_cache_and_the_report_says_why()
    {
        var site = SiteWith("box", "other");
        var report = SiteWipe.Run(site, "box", wipeCache: true);
        Assert.False(Directory.Exists(site.ParcelDirectory("box")));
        Assert.True(File.Exists(site.PendingCommitPath("other")));
        Assert.NotNull(site.Login);
        Assert.NotEmpty(Directory.EnumerateFiles(site.Cache.Root, "*", SearchOption.AllDirectories));
        Assert.Contains("other", Assert.Single(report.Kept));
    }

    [Fact]
    public void Without_wipeCache_the_ciphertext_stays()
    {
        var site = SiteWith("box");
        var report = SiteWipe.Run(site, "box", wipeCache: false);
        Assert.True(report.Login);
        Assert.False(report.Cache);
        Assert.NotEmpty(Directory.EnumerateFiles(site.Cache.Root, "*", SearchOption.AllDirectories));
    }

    public void Dispose() => _dir.Dispose();
}
