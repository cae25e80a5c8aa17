using System.Diagnostics;
using Isr.Client.Disk;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Format;
using Isr.Testing;

namespace Isr.Client.Tests;

/// <summary>What a daemon takes over from a killed one: it stops only a QEMU that is provably the one it recorded, and a
/// check-in that left later flushes journaled has them moved onto the committed version.</summary>
public sealed class DaemonRecoveryTests : IDisposable
{
    private readonly TempDir _dir = new();

    [Fact]
    public void A_recorded_process_is_killed_only_while_pid_start_time_and_command_line_all_match()
    {
        var site = new SiteDirectory(_dir["site"]);
        Directory.CreateDirectory(site.ParcelDirectory("box"));
        using var process = Process.Start(new ProcessStartInfo("sleep", ["600"]))!;
        try
        {
            var record = QemuRecord.Save(site, "box", process.Id, "600")!;
            Assert.Equal(record, QemuRecord.Load(site, "box"));
            Assert.False((record with { StartTime = record.StartTime - 1 }).KillIfAlive()); // a recycled PID: another process
            Assert.False((record with { QmpSocket = "/run/isr/other/qmp.sock" }).KillIfAlive());
            Assert.False(process.HasExited);
            Assert.True(record.KillIfAlive());
            Assert.True(process.WaitForExit(10_000));
            Assert.False(record.IsAlive());
        }
        finally
        {
            if (!process.HasExited) process.Kill();
        }
    }

    [Fact]
    public void Flushes_after_the_committed_version_stay_journaled_on_top_of_it()
    {
        var site = new SiteDirectory(_dir["site"]);
        Directory.CreateDirectory(site.ParcelDirectory("box"));
        var keys = ParcelKeys.Generate();
        ChunkRef Chunk(int seed) => new(ChunkTag.Of(TestData.Random(64, seed)), new ChunkKey(new Hash32(TestData.Random(32, seed + 100))), 4096);
        var (committed0, committed1, later1, later2) = (Chunk(1), Chunk(2), Chunk(3), Chunk(4));
        using (var journal = DirtyJournal.Open(site.JournalPath("box"), 1, keys))
        {
            journal.Append([new(0, committed0), new(1, committed1)]); // frozen into version 2
            journal.Append([new(1, later1), new(2, later2)]);         // flushed after the freeze
        }
        site.UpdateLocal("box", s => s with
        {
            JournalRebase = new JournalRebase(1, 2, [new(0, committed0.Tag.ToString()), new(1, committed1.Tag.ToString())]),
        });

        Checkin.FinishJournalRebase(site, "box", keys);

        Assert.Null(site.ReadLocal("box")!.JournalRebase);
        using var rebased = DirtyJournal.Open(site.JournalPath("box"), 2, keys);
        Assert.Equal(new Dictionary<long, ChunkRef> { [1] = later1, [2] = later2 }, rebased.Replayed);
    }

    public void Dispose() => _dir.Dispose();
}
