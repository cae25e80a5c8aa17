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
    public sealed record ParcelStat(string Parcel, long? HeadVersion, int? Versions, long? DiskSize, int? ChunkSize, long? DiskChunks, int? StoredDiskChunks,
        long? MemoryImageBytes, long? MemoryImageChunks, long? HeadStoredBytes, string? HomeUnreachable, long DirtyJournalBytes, bool PendingCheckin,
        double? LastResumeSeconds, string? Interrupted, SessionStats? Session);

    public static Command Build()
    {
        var command = new Command("stat", "Show a parcel's storage, local changes, resume latency and session counters") { Cli.Parcel, Cli.Store, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            var home = Cli.Home(parse, site, name);
            HomeStat? stored = null;
            string? homeProblem = null;
            try
            {
                stored = await HomeStat.ReadAsync(home, name, ct);
            }
            catch (ServerUnreachableException e)
            {
                homeProblem = e.Message; // what this site knows is still worth showing
            }

            var journal = new FileInfo(site.JournalPath(name));
            var session = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "stat", Parcel = name }, null, ct, startIfNeeded: false);
            var running = session is { ValueKind: JsonValueKind.Object } s ? s.Deserialize(DaemonJsonContext.Default.SessionStats) : null;
            var local = site.ReadLocal(name); // after asking the daemon: one started just now records why a VM stopped
            var stat = new ParcelStat(name, stored?.Head.Number, stored?.Versions, stored?.Head.DiskSize, stored?.Head.ChunkSize, stored?.Head.DiskChunks,
                stored?.StoredDiskChunks, stored?.Head.MemoryBytes, stored?.Head.MemoryChunks, stored?.HeadStoredBytes, homeProblem,
                journal.Exists ? journal.Length : 0, File.Exists(site.PendingCommitPath(name)), local?.LastResumeSeconds, local?.Interrupted, running);
            Cli.Print(parse, stat, CliJsonContext.Default.ParcelStat, () =>
            {
                var grid = new Grid().AddColumn().AddColumn();
                void Row(string k, string v) => grid.AddRow(k, Markup.Escape(v));
                if (stored is { Head: var head })
                {
                    Row("parcel", $"{name} (version {head.Number} of {stored.Versions})");
                    Row("disk", $"{Cli.Bytes(head.DiskSize)} in {head.DiskChunks} chunks of {Cli.Bytes(head.ChunkSize)}; {stored.StoredDiskChunks} non-zero stored");
                    Row("memory image", head.HasMemoryImage ? $"{Cli.Bytes(head.MemoryBytes)} in {head.MemoryChunks} chunks" : "none");
                    if (stored.HeadStoredBytes is long bytes) Row("stored (head)", Cli.Bytes(bytes));
                }
                else Row("parcel", $"{name} (home unreachable: {homeProblem})");
                if (local?.Interrupted is { } why) Row("stopped", $"{why}; {SiteRecovery.KeepOrDiscard(name)}");
                if (File.Exists(site.PendingCommitPath(name))) Row("pending", "a suspended version waits at this site: run 'isr checkin'");
                Row("local changes", running is null ? (stat.DirtyJournalBytes > 13 ? "yes (not in any version)" : "none") : $"{running.DirtyChunks} chunks, {Cli.Bytes(running.DirtyBytes)}");
                Row("last resume", local?.LastResumeSeconds is double r ? $"{r:F2} s" : "-");
                if (running != null)
                    Row("session", $"{running.State}; {running.Misses} misses, guest waited {running.GuestWaitSeconds:F2} s (stalled {running.GuestStallSeconds:F2} s); fetched {Cli.Bytes(running.HomeBytes)} from home, {Cli.Bytes(running.CacheBytes)} from cache");
                if (running?.GuestClock is { } clock) Row("guest clock", clock);
                foreach (var l in running?.Lookaside ?? [])
                    Row($"lookaside", $"{l.Source}: {l.Hits} hits ({Cli.Bytes(l.Bytes)}), {l.Misses} misses, {l.Rejected} rejected (wrong blob), {l.Failures} failures, {l.Skipped} skipped, {l.Seconds:F3} s asking{(l.CutOff ? "; cut off now" : "")}");
                if (running?.Transfers is { } t)
                {
                    Row("transfers", $"policy {t.Policy.ToString().ToLowerInvariant()}; resume took {running.ResumeSeconds:F2} s; from home: {Cli.Bytes(t.DemandHomeBytes)} on demand, " +
                        $"{Cli.Bytes(t.PrefetchBytes)} prefetched ({t.PrefetchChunks} chunks{(t.PrefetchDone ? ", done" : "")}), {Cli.Bytes(t.CopyInBytes)} copied in");
                    Row("prefetch", $"{t.PrefetchHits} hits of {t.TouchedChunks} chunks read; working set: {t.WorkingSetReplayed} replayed, {t.WorkingSetRecorded} recorded");
                    Row("trickle", $"{t.TrickledChunks} chunks ({Cli.Bytes(t.TrickledBytes)}) of the changes already sent home");
                }
                AnsiConsole.Write(grid);
            });
            return 0;
        });
        return command;
    }

    /// <summary>What the home holds of a parcel's head, counted without keys: the plaintext part of keyring pages lists every chunk.</summary>
    private sealed record HomeStat(VersionRecord Head, int Versions, int StoredDiskChunks, long? HeadStoredBytes)
    {
        public static async Task<HomeStat> ReadAsync(IParcelHome home, string name, CancellationToken ct)
        {
            var versions = await home.ListVersionsAsync(name, ct);
            var head = versions.Last(v => !v.Side);
            var pages = new HashSet<ChunkTag>();
            var chunks = new HashSet<ChunkTag>();
            PageLoader load = async (tag, token) => await home.Chunks.GetAsync(tag, token) ?? throw new ChunkIntegrityException($"page {tag} is missing");
            await ChunkListTree.CollectTagsAsync(head.DiskRootTag, load, pages, chunks, ct);
            int diskChunks = chunks.Count;
            await ChunkListTree.CollectTagsAsync(head.MemoryRootTag, load, pages, chunks, ct);
            long? bytes = home is DirectoryParcelHome store
                ? chunks.Concat(pages).Append(ChunkTag.Parse(head.DescriptorTag)).Sum(t => new FileInfo(store.ChunkDirectory.PathOf(t)).Length)
                : null;
            return new HomeStat(head, versions.Count, diskChunks, bytes);
        }
    }
}
