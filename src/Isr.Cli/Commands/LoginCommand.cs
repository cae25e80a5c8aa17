using System.CommandLine;
using Isr.Client.Homes;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr login`: pin the server's certificate, authenticate without sending the password, keep the wrapped secrets.</summary>
public static class LoginCommand
{
    public static Command Build()
    {
        var server = new Option<string>("--server") { Description = "Server URL, e.g. https://isr.example.org:8443", Required = true };
        var user = new Option<string>("--user") { Description = "User name", Required = true };
        var fingerprint = new Option<string?>("--server-fingerprint") { Description = "Expected SHA-256 fingerprint of the server's certificate (printed by isr-server)" };
        var command = new Command("login", "Log in to a server: pins its certificate and keeps a session token and your wrapped keys at this site")
        {
            server, user, fingerprint, Cli.PasswordFile, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            var pinned = parse.GetValue(fingerprint) ?? (site.Login is { } previous && previous.Server == parse.GetValue(server) ? previous.Fingerprint : null);
            bool interactive = !Console.IsInputRedirected && !parse.GetValue(Cli.Json);
            if (pinned is null && !interactive)
                throw new UsageException("first login to this server: give --server-fingerprint FP (as printed by isr-server) so its certificate can be checked");
            var identity = site.Identity;
            var login = await ServerParcelHome.LoginAsync(parse.GetValue(server)!, parse.GetValue(user)!, Cli.Password(parse), pinned,
                presented => AnsiConsole.Confirm($"The server's certificate fingerprint is\n  {presented}\nTrust it?", defaultValue: false),
                identity.Id, identity.Name, ct);
            site.SaveLogin(login);
            // the hoard-only token lets this site's daemon hoard what the user requests from elsewhere (ciphertext only)
            site.SaveHoardToken(login.HoardToken is { } hoard ? new SiteHoardToken(login.Server, login.Fingerprint, login.User, hoard) : null);
            Cli.Print(parse, new { login.Server, login.User, login.Fingerprint, site = identity },
                () => AnsiConsole.MarkupLineInterpolated($"logged in to {login.Server} as [bold]{login.User}[/] from site {identity.Name}"));
            return 0;
        });
        return command;
    }
}

/// <summary>`isr logout`: revoke the session token and this site's hoard-only token, and forget the login at this site.</summary>
public static class LogoutCommand
{
    public static Command Build()
    {
        var command = new Command("logout", "Revoke this site's session and hoard-only tokens and forget the login (wrapped keys included)");
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            if (site.Login is { } login)
            {
                using var home = new ServerParcelHome(login);
                try { await home.LogoutAsync(ct); }
                catch (ServerUnreachableException e) { Console.Error.WriteLine($"isr: {e.Message}; forgetting the login here anyway"); }
                site.SaveLogin(null);
            }
            Console.WriteLine("logged out");
            return 0;
        });
        return command;
    }
}
