using System.Net.Sockets;
using System.Text;
using Isr.Client.Homes;
using Isr.Client.Site;

namespace Isr.Client.Tests;

/// <summary>Where a site keeps its sockets: every path must bind (unix socket paths have at most 107 bytes).</summary>
public sealed class SiteDirectoryTests : IDisposable
{
    private readonly TempDir _dir = new();

    [Fact]
    public void A_long_parcel_name_gets_a_short_run_directory_whose_sockets_bind()
    {
        var site = new SiteDirectory(_dir["site"]);
        var name = new string('n', DirectoryParcelHome.MaxNameLength);
        var run = site.SessionRunDirectory(name);
        Assert.Equal(site.RunDirectory, Path.GetDirectoryName(run));
        Assert.True(Encoding.UTF8.GetByteCount(Path.Combine(run, "import.sock")) <= 107, run);
        Directory.CreateDirectory(run);
        using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            socket.Bind(new UnixDomainSocketEndPoint(Path.Combine(run, "nbd.sock")));

        Assert.Equal(run, new SiteDirectory(_dir["site"]).SessionRunDirectory(name)); // the same in every process
        Assert.NotEqual(run, site.SessionRunDirectory(name[..^1] + "m"));
        Assert.Equal(Path.Combine(site.RunDirectory, "box"), site.SessionRunDirectory("box"));
    }

    [Fact]
    public void An_ISR_HOME_too_long_for_unix_sockets_is_refused_before_anything_is_made()
    {
        var root = _dir[new string('d', 60)];
        var e = Assert.Throws<ArgumentException>(() => new SiteDirectory(root));
        Assert.Contains("too long for this site's unix sockets", e.Message);
        Assert.False(Directory.Exists(root));
    }

    public void Dispose() => _dir.Dispose();
}
