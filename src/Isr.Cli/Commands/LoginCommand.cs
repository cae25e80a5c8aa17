using System.CommandLine;
using Isr.Client.Daemon;
using Isr.Client.Homes;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr login`: pin the server's certificate, authenticate without sending the password, keep the wrapped secrets.</summary>
public static class LoginCommand
{
    public sealed record LoggedIn(string Server, string User, string Fingerprint, Isr.Client.Site.SiteIdentity Site);

    public static Command Build()
    {
        var server = new Option<string>("--server") { Description = "Server URL, e.g. https://isr.example.org:8443", Required = true };
        var user = new Option<string>("--user") { Description = "User name", Required = true };
        var fingerprint = new Option<string?>("--server-fingerprint") { Description = "Expected SHA-256 fingerprint of the server's certificate (printed by isr-server)" };
        var keepKeys = new Option<string>("--keep-keys")
        {
            Description = "How long this site's daemon keeps your unwrapped keys in its memory (never on disk), so that resume needs no password: 12h (default), 30m, 0 = not at all",
            DefaultValueFactory = _ => "12h",
        };
        var command = new Command("login", "Log in to a server: pins its certificate and keeps a session token and your wrapped keys at this site")
        {
            server, user, fingerprint, keepKeys, Cli.PasswordFile, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            var pinned = parse.GetValue(fingerprint) ?? (site.Login is { } previous && previous.Server == parse.GetValue(server) ? previous.Fingerprint : null);
            bool interactive = !Console.IsInputRedirected && !parse.GetValue(Cli.Json);
            if (pinned is null && !interactive)
                throw new UsageException("first login to this server: give --server-fingerprint FP (as printed by isr-server) so its certificate can be checked");
            var identity = site.Identity;
            var keep = Duration(parse.GetValue(keepKeys)!);
            var (login, keyEncryptionKey) = await ServerParcelHome.LoginAsync(parse.GetValue(server)!, parse.GetValue(user)!, Cli.Password(parse), pinned,
                presented => AnsiConsole.Confirm($"The server's certificate fingerprint is\n  {presented}\nTrust it?", defaultValue: false),
                identity.Id, identity.Name, ct);
            site.SaveLogin(login);
            // the hoard-only token lets this site's daemon hoard what the user requests from elsewhere (ciphertext only)
            site.SaveHoardToken(login.HoardToken is { } hoard ? new SiteHoardToken(login.Server, login.Fingerprint, login.User, hoard) : null);
            // Also starts the daemon now, so that the first resume finds it running (and QEMU probed).
            if (keep == TimeSpan.Zero) await ForgetKeysAsync(site, ct);
            else
            {
                try
                {
                    await DaemonClient.SendAsync(site, new DaemonRequest { Op = "keep-keys", KeyEncryptionKey = keyEncryptionKey, KeepSeconds = keep.TotalSeconds }, null, ct);
                }
                catch (DaemonException e) { Console.Error.WriteLine($"isr: warning: the site daemon does not keep the keys ({e.Message}); resume will ask for the password"); }
            }
            Cli.Print(parse, new LoggedIn(login.Server, login.User, login.Fingerprint, identity), CliJsonContext.Default.LoggedIn,
                () => AnsiConsole.MarkupLineInterpolated($"logged in to {login.Server} as [bold]{login.User}[/] from site {identity.Name}"));
            return 0;
        });
        return command;
    }

    /// <summary>Tells a running daemon to drop the keys it holds (none running: none held).</summary>
    public static async Task ForgetKeysAsync(Isr.Client.Site.SiteDirectory site, CancellationToken ct) =>
        await DaemonClient.SendAsync(site, new DaemonRequest { Op = "forget-keys" }, null, ct, startIfNeeded: false);

    /// <summary>"12h", "30m", "90s", "2d" or "0".</summary>
    private static TimeSpan Duration(string text)
    {
        text = text.Trim();
        if (text == "0") return TimeSpan.Zero;
        if (text.Length < 2 || !double.TryParse(text[..^1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var n) || n < 0)
            throw new UsageException($"--keep-keys: '{text}' is not a duration like 12h, 30m, 90s, 2d or 0");
        return text[^1] switch
        {
            's' => TimeSpan.FromSeconds(n),
            'm' => TimeSpan.FromMinutes(n),
            'h' => TimeSpan.FromHours(n),
            'd' => TimeSpan.FromDays(n),
            _ => throw new UsageException($"--keep-keys: '{text}' is not a duration like 12h, 30m, 90s, 2d or 0"),
        };
    }
}

/// <summary>`isr logout`: revoke the session token and this site's hoard-only token, and forget the login at this site.</summary>
public static class LogoutCommand
{
    public static Command Build()
    {
        var command = new Command("logout", "Revoke this site's session and hoard-only tokens and forget the login (wrapped keys included; the daemon forgets the keys it holds)");
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            await LoginCommand.ForgetKeysAsync(site, ct);
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
