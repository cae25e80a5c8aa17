using System.CommandLine;
using Isr.Client.Lookaside;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>
/// `isr dongle write PARCEL PATH`: put the parcel's latest state (ciphertext) on a removable medium.
/// `isr lookaside index PATH`: index read-only media for this user; `isr lookaside add|remove|list`: the site's sources.
/// </summary>
public static class LookasideCommand
{
    public sealed record Indexed(string Media, int Files, int Chunks, string Index);

    public static Command BuildDongle()
    {
        var path = new Argument<string>("PATH") { Description = "The dongle's directory (made if absent or empty)" };
        var write = new Command("write", "Write the parcel's memory image, new disk chunks and keyring to a dongle (ciphertext; incremental; needs no password)")
        {
            Cli.Parcel, path, Cli.Store, Cli.Json,
        };
        write.SetAction(async (parse, ct) =>
        {
            var result = await WriteAsync(parse, parse.GetValue(Cli.Parcel)!, parse.GetValue(path)!, ct);
            Cli.Print(parse, result, CliJsonContext.Default.DongleWriteResult, () => PrintWritten(result));
            return 0;
        });
        return new Command("dongle", "A removable medium holding a parcel's recent blobs, read at resume with --lookaside") { write };
    }

    public static async Task<DongleWriteResult> WriteAsync(ParseResult parse, string parcel, string path, CancellationToken ct)
    {
        var site = Cli.Site();
        var home = Cli.Home(parse, site, parcel);
        return await Progress.RunAsync(parse, $"writing {parcel} to {path}", progress =>
            DongleWriter.WriteParcelAsync(site, home, parcel, path, new Progress<(int Done, int Total)>(p => progress.Report(p.Total == 0 ? 1 : (double)p.Done / p.Total)), ct));
    }

    public static void PrintWritten(DongleWriteResult r) => AnsiConsole.WriteLine(
        $"dongle {r.Path}: {r.Parcel} {(r.Version > 0 ? $"version {r.Version}" : "suspended version")}, {r.Blobs} blobs; wrote {r.Written} ({Cli.Bytes(r.Bytes)}), {r.AlreadyThere} were there");

    public static Command Build()
    {
        var path = new Argument<string>("PATH") { Description = "A raw disk image, or a directory of them, on read-only media" };
        var chunkSize = new Option<string>("--chunk-size") { Description = "The parcels' disk chunk size", DefaultValueFactory = _ => "64K" };
        var index = new Command("index", "Index read-only media for this user (needs the password: tags depend on the user's keys); the sealed index stays at this site")
        {
            path, chunkSize, Cli.Store, Cli.PasswordFile, Cli.Json,
        };
        index.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            var media = Path.GetFullPath(parse.GetValue(path)!);
            var secrets = await Cli.Home(parse, site, null).UnlockAsync(Cli.Password(parse), ct);
            var codec = new Isr.Format.ChunkCodec(secrets.DomainSecret);
            var built = await Progress.RunAsync(parse, $"indexing {media}", progress =>
                MediaIndex.BuildAsync(media, (int)Size.Parse(parse.GetValue(chunkSize)!), codec, progress, ct));
            var file = MediaIndex.SitePath(site, media);
            Isr.Client.Durable.WriteFileAtomically(file, built.Seal(secrets));
            Cli.Print(parse, new Indexed(media, built.Files.Count, built.Chunks.Count, file), CliJsonContext.Default.Indexed,
                () => AnsiConsole.WriteLine($"indexed {media}: {built.Files.Count} files, {built.Chunks.Count} distinct non-zero chunks; use it with 'isr resume --lookaside {media}'"));
            return 0;
        });
        var source = new Argument<string>("SRC") { Description = "A dongle directory, indexed media, or a jukebox URL (http://HOST:PORT)" };
        var add = new Command("add", "Ask this source at every resume at this site") { source };
        add.SetAction(parse => Change(parse, s => s.Append(parse.GetValue(source)!)));
        var removed = new Argument<string>("SRC") { Description = "A source as listed" };
        var remove = new Command("remove", "Stop asking this source") { removed };
        remove.SetAction(parse => Change(parse, s => s.Where(x => x != parse.GetValue(removed))));
        var list = new Command("list", "This site's lookaside sources, in the order they are asked") { Cli.Json };
        list.SetAction(parse =>
        {
            var sources = LookasideSources.Configured(Cli.Site());
            Cli.Print(parse, sources, CliJsonContext.Default.IReadOnlyListString, () => { foreach (var s in sources) Console.WriteLine(s); });
            return 0;
        });
        return new Command("lookaside", "Places asked for blobs before the home (only hints: every blob is verified against its tag)") { index, add, remove, list };
    }

    private static int Change(ParseResult parse, Func<IEnumerable<string>, IEnumerable<string>> change)
    {
        var site = Cli.Site();
        LookasideSources.Configure(site, change(LookasideSources.Configured(site)).Select(s => s.Contains("://") ? s : Path.GetFullPath(s)));
        return 0;
    }
}
