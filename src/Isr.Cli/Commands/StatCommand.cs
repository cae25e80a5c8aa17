using System.CommandLine;
using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Format;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr stat PARCEL`: storage, local changes and the running session's counters. Needs no password.</summary>
public static class StatCommand
{
    public static Command Build()
    {
        var command = new Command("stat", "Show a parcel's storage, local changes, resume latency and session counters") { Cli.Parcel, Cli.Store, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            var home = Cli.Home(parse, site, name);
            var parcel = await home.GetParcelAsync(name, ct);
            var versions = await home.ListVersionsAsync(name, ct);
            var head = versions[^1];

            // Keyless accounting: the plaintext part of keyring pages lists every chunk a version references.
            var pages = new HashSet<ChunkTag>();
            var chunks = new HashSet<ChunkTag>();
            PageLoader load = async (tag, token) => await home.Chunks.GetAsync(tag, token) ?? throw new ChunkIntegrityException($"page {tag} is missing");
            await ChunkListTree.CollectTagsAsync(head.DiskRootTag, load, pages, chunks, ct);
            int diskChunks = chunks.Count;
            await ChunkListTree.CollectTagsAsync(head.MemoryRootTag, load, pages, chunks, ct);
            long? storedBytes = home is DirectoryParcelHome store
                ? chunks.Concat(pages).Append(ChunkTag.Parse(head.DescriptorTag)).Sum(t => new FileInfo(store.ChunkDirectory.PathOf(t)).Length)
                : null;

            var local = site.ReadLocal(name);
            var journal = new FileInfo(site.JournalPath(name));
            var session = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "stat", Parcel = name }, null, ct, startIfNeeded: false);
            var running = session is { ValueKind: JsonValueKind.Object } s ? s.Deserialize<SessionStats>(DaemonJson.Options) : null;
            var stat = new
            {
                Parcel = name, HeadVersion = head.Number, Versions = versions.Count, parcel.DiskSize, parcel.ChunkSize,
                DiskChunks = head.DiskChunks, StoredDiskChunks = diskChunks, MemoryImageBytes = head.MemoryBytes, MemoryImageChunks = head.MemoryChunks,
                HeadStoredBytes = storedBytes,
                DirtyJournalBytes = journal.Exists ? journal.Length : 0,
                PendingCheckin = File.Exists(site.PendingCommitPath(name)),
                LastResumeSeconds = local?.LastResumeSeconds,
                Session = running,
            };
            Cli.Print(parse, stat, () =>
            {
                var grid = new Grid().AddColumn().AddColumn();
                void Row(string k, string v) => grid.AddRow(k, Markup.Escape(v));
                Row("parcel", $"{name} (version {head.Number} of {versions.Count})");
                Row("disk", $"{Cli.Bytes(parcel.DiskSize)} in {head.DiskChunks} chunks of {Cli.Bytes(parcel.ChunkSize)}; {diskChunks} non-zero stored");
                Row("memory image", head.HasMemoryImage ? $"{Cli.Bytes(head.MemoryBytes)} in {head.MemoryChunks} chunks" : "none");
                if (storedBytes is long stored) Row("stored (head)", Cli.Bytes(stored));
                if (File.Exists(site.PendingCommitPath(name))) Row("pending", "a suspended version waits at this site: run 'isr checkin'");
                Row("local changes", running is null ? (stat.DirtyJournalBytes > 13 ? "yes (not in any version)" : "none") : $"{running.DirtyChunks} chunks, {Cli.Bytes(running.DirtyBytes)}");
                Row("last resume", local?.LastResumeSeconds is double r ? $"{r:F2} s" : "-");
                if (running != null)
                    Row("session", $"{running.State}; {running.Misses} misses, guest waited {running.GuestWaitSeconds:F2} s; fetched {Cli.Bytes(running.HomeBytes)} from home, {Cli.Bytes(running.CacheBytes)} from cache");
                AnsiConsole.Write(grid);
            });
            return 0;
        });
        return command;
    }
}
