using System.CommandLine;
using Isr.Client.Homes;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr passwd`: change the password; the keys it protects stay the same, so no parcel is re-encrypted.</summary>
public static class PasswdCommand
{
    public static Command Build()
    {
        var newPasswordFile = new Option<FileInfo?>("--new-password-file") { Description = "Read the new password from this file (else a prompt)" };
        var command = new Command("passwd", "Change your password (at the logged-in server, or of a --store)") { Cli.Store, Cli.PasswordFile, newPasswordFile };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            var home = Cli.Home(parse, site, null);
            var old = Cli.Password(parse);
            var fresh = parse.GetValue(newPasswordFile) is { } file ? File.ReadAllText(file.FullName).TrimEnd('\r', '\n')
                : Console.IsInputRedirected ? throw new UsageException("give the new password with --new-password-file when not on a terminal")
                : AnsiConsole.Prompt(new TextPrompt<string>("New password:").Secret());
            if (fresh.Length < 8) throw new UsageException("the new password must have at least 8 characters");
            await home.ChangePasswordAsync(old, fresh, ct);
            if (home is ServerParcelHome server) site.SaveLogin(server.Login);
            Console.WriteLine($"password changed for {home.Describe}");
            return 0;
        });
        return command;
    }
}
