using System.CommandLine;
using Isr.Client.Homes;
using Isr.Client.Portable;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>
/// `isr backup PARCEL --store DIR`: copy a portable parcel (its versions and blobs) to the logged-in server.
/// `isr restore PARCEL --store DIR`: copy it back from the server into a store (a fresh one is made with the account's
/// keys). Both are incremental and need the password only to check that both homes hold the same user's keys.
/// </summary>
public static class BackupCommand
{
    private static readonly Option<string?> Server = new("--server") { Description = "The server (default: the one this site is logged in to; 'isr login' first)" };

    public static Command BuildBackup()
    {
        var command = new Command("backup", "Copy a parcel from its store (e.g. a portable device) to the logged-in server; incremental")
        {
            Cli.Parcel, Cli.Store, Server, Cli.PasswordFile, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            var store = new DirectoryParcelHome(Cli.StorePath(parse, site, name) ?? throw new UsageException("name the store with --store DIR"));
            using var server = ServerHome(parse, site);
            var password = Cli.Password(parse);
            var storeSecrets = await store.UnlockAsync(password, ct);
            string? recoveryKey = null;
            if (!ParcelCopy.SameUser(storeSecrets, await server.UnlockAsync(password, ct)))
            {
                // A store made on its own has keys of its own: an empty account takes them, so that it can hold the store's parcels.
                recoveryKey = Isr.Format.UserSecrets.FormatRecoveryKey(await server.AdoptSecretsAsync(password, storeSecrets, ct));
                site.SaveLogin(server.Login);
            }
            return await CopyAsync(parse, store, server, name, ct, recoveryKey);
        });
        return command;
    }

    public static Command BuildRestore()
    {
        var command = new Command("restore", "Copy a parcel from the logged-in server into a store directory (a new one, e.g. a replacement device); incremental")
        {
            Cli.Parcel, Cli.Store, Server, Cli.PasswordFile, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            var store = new DirectoryParcelHome(parse.GetValue(Cli.Store) ?? throw new UsageException("name the store to restore into with --store DIR"));
            using var server = ServerHome(parse, site);
            var password = Cli.Password(parse);
            var secrets = await server.UnlockAsync(password, ct);
            if (!DirectoryParcelHome.IsInitialized(store.Root)) store.Initialize(password, secrets);
            else if (!ParcelCopy.SameUser(secrets, await store.UnlockAsync(password, ct)))
                throw new UsageException($"{store.Root} is a store of another user's keys: restore into an empty directory");
            int code = await CopyAsync(parse, server, store, name, ct);
            site.UpdateLocal(name, s => s with { Store = store.Root });
            return code;
        });
        return command;
    }

    private static ServerParcelHome ServerHome(ParseResult parse, Isr.Client.Site.SiteDirectory site)
    {
        var login = site.Login ?? throw new UsageException("this site is not logged in to a server: run 'isr login' first");
        if (parse.GetValue(Server) is { } url && !string.Equals(url.TrimEnd('/'), login.Server.TrimEnd('/'), StringComparison.OrdinalIgnoreCase))
            throw new UsageException($"this site is logged in to {login.Server}, not {url}: run 'isr login --server {url}' first");
        return new ServerParcelHome(login);
    }

    /// <param name="recoveryKey">The account's new recovery key, when it has just taken the store's keys: shown once, here.</param>
    private static async Task<int> CopyAsync(ParseResult parse, IParcelHome from, IParcelHome to, string name, CancellationToken ct, string? recoveryKey = null)
    {
        var site = Cli.Site();
        var result = await Progress.RunAsync(parse, $"copying {name}", progress => ParcelCopy.CopyAsync(from, to, name, site.Identity, progress, ct));
        var json = System.Text.Json.JsonSerializer.SerializeToNode(result, CliJsonContext.Default.CopyResult)!.AsObject();
        if (recoveryKey is not null) json["recoveryKey"] = recoveryKey;
        Cli.Print(parse, json, CliJsonContext.Default.JsonObject, () =>
        {
            AnsiConsole.WriteLine($"{name}: {result.VersionsCopied} versions and {result.BlobsCopied} blobs ({Cli.Bytes(result.BytesCopied)}) copied from {result.From} to {result.To}; {result.Versions} versions in all");
            if (recoveryKey is not null)
                AnsiConsole.MarkupLineInterpolated($"[yellow]the account now holds this store's keys; its new recovery key (keep it safe, it is shown only now; the old one no longer opens them):[/] {recoveryKey}");
        });
        return 0;
    }
}
