using System.CommandLine;
using Isr.Client.Homes;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr site list|revoke`: the user's sites that hold a hoard-only token (given at each login), and revoking one
/// (a lost or retired site: its daemon can no longer hoard; its open hoard requests end as "revoked").</summary>
public static class SiteCommand
{
    public static Command Build()
    {
        var list = new Command("list", "List your sites that hold a hoard-only token (sites you logged in at)") { Cli.Json };
        list.SetAction(async (parse, ct) =>
        {
            using var server = LoggedIn();
            var sites = await server.ListSitesAsync(ct);
            Cli.Print(parse, sites, CliJsonContext.Default.IReadOnlyListSiteRecord, () =>
            {
                if (sites.Count == 0) Console.WriteLine("no sites hold a hoard-only token");
                foreach (var s in sites) AnsiConsole.MarkupLineInterpolated($"[bold]{s.SiteName}[/]  {s.SiteId}  since {s.Created:u}");
            });
            return 0;
        });

        var name = new Argument<string>("NAME") { Description = "The site's name (or its id, where several share a name)" };
        var revoke = new Command("revoke", "Revoke a site's hoard-only token; its open hoard requests end") { name };
        revoke.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            using var server = LoggedIn();
            var target = parse.GetValue(name)!;
            await server.RevokeSiteAsync(target, ct);
            if (site.Identity is var me && (me.Name == target || me.Id == target)) site.SaveHoardToken(null);
            Console.WriteLine($"revoked the hoard-only token of site {target}");
            return 0;
        });

        return new Command("site", "Your sites and their hoard-only tokens") { list, revoke };
    }

    private static ServerParcelHome LoggedIn() =>
        Cli.Site().Login is { } login ? new ServerParcelHome(login) : throw new UsageException("not logged in to a server: 'isr login' first");
}
