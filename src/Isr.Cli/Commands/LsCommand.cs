using System.CommandLine;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr ls [-l]`: the parcels in a store, and with -l their versions. Needs no password: it shows only keyless metadata.</summary>
public static class LsCommand
{
    public sealed record ParcelListing(string Name, string Id, int ChunkSize, long DiskSize, long Head, IEnumerable<VersionListing> Versions);
    public sealed record VersionListing(long Number, long? Parent, bool Side, DateTimeOffset Created, long MemoryBytes, bool HasMemoryImage);

    public static Command Build()
    {
        var longFormat = new Option<bool>("--long", "-l") { Description = "Show every version" };
        var command = new Command("ls", "List parcels (and with -l their versions)") { longFormat, Cli.Store, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var home = Cli.Home(parse, Cli.Site(), null);
            var parcels = new List<ParcelListing>();
            var table = new Table().AddColumns("parcel", "version", "parent", "created (UTC)", "disk", "memory image", "");
            foreach (var parcel in await home.ListParcelsAsync(ct))
            {
                var versions = await home.ListVersionsAsync(parcel.Name, ct);
                parcels.Add(new ParcelListing(parcel.Name, parcel.Id, parcel.ChunkSize, parcel.DiskSize, versions.Last(v => !v.Side).Number,
                    versions.Select(v => new VersionListing(v.Number, v.Parent, v.Side, v.Created, v.MemoryBytes, v.HasMemoryImage))));
                var head = versions.Last(v => !v.Side);
                foreach (var v in parse.GetValue(longFormat) ? versions : [head])
                    table.AddRow(parcel.Name, v.Number.ToString(), v.Parent?.ToString() ?? "-", v.Created.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss"),
                        Cli.Bytes(v.DiskSize), v.HasMemoryImage ? Cli.Bytes(v.MemoryBytes) : "none (boots from disk)",
                        v.Side ? "side version" : v == head ? "head" : "");
            }
            Cli.Print(parse, parcels, CliJsonContext.Default.ListParcelListing, () => AnsiConsole.Write(table));
            return 0;
        });
        return command;
    }
}
