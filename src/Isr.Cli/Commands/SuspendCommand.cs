using System.CommandLine;
using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Session;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr suspend PARCEL`: save the running VM's memory image and disk as a new version.</summary>
public static class SuspendCommand
{
    public static Command Build()
    {
        var dongle = new Option<string?>("--dongle") { Description = "Then write the suspended state to this dongle directory (ciphertext), for 'isr resume --lookaside' at the next site" };
        var command = new Command("suspend", "Suspend the parcel's VM: save its memory image and disk changes as a new version " +
            "(a VM stopped by a killed site daemon: its disk, without a memory image)") { Cli.Parcel, Cli.Store, Cli.PasswordFile, dongle, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            string name = parse.GetValue(Cli.Parcel)!;
            var suspended = await KeepStoppedAsync(parse, name, ct) ?? await SendToSessionAsync(parse, "suspend", name, ct);
            if (parse.GetValue(dongle) is { } path)
            {
                var written = await LookasideCommand.WriteAsync(parse, name, path, ct);
                if (!parse.GetValue(Cli.Json)) LookasideCommand.PrintWritten(written);
            }
            Cli.Print(parse, suspended, DaemonJsonContext.Default.SuspendResult, () => AnsiConsole.WriteLine(
                $"suspended {name} in {suspended.Seconds:F2} s: memory image {Cli.Bytes(suspended.MemoryImageBytes)} ({Cli.Bytes(suspended.MemoryImageNewBytes)} new); " +
                (suspended.Committed is { } c ? $"version {c.Version}, sent {Cli.Bytes(c.BytesUploaded)}" : "kept at this site: run 'isr checkin' to send it home and release the lock")));
            return 0;
        });
        return command;
    }

    /// <summary>The VM stopped without a suspend when its daemon was killed: keeps the flushed disk as a version
    /// without a memory image (needs the keys to sign it). Null when the parcel was not interrupted so.</summary>
    private static async Task<SuspendResult?> KeepStoppedAsync(ParseResult parse, string parcel, CancellationToken ct)
    {
        var site = Cli.Site();
        // Asking first also lets a daemon started for a killed one's leftovers find them (and record why it stopped).
        var running = await DaemonClient.SendAsync(site, new DaemonRequest { Op = "running", Parcel = parcel }, null, ct, startIfNeeded: false);
        if (running is { ValueKind: JsonValueKind.True } || site.ReadLocal(parcel)?.Interrupted is null) return null;
        var result = await Cli.SendNeedingKeysAsync(parse, site, new DaemonRequest { Op = "keep", Parcel = parcel, Store = Cli.StorePath(parse, site, parcel) }, ct);
        return result!.Value.Deserialize(DaemonJsonContext.Default.SuspendResult)!;
    }

    /// <summary>Sends a request to the parcel's running session (suspend, sync), printing its progress lines.</summary>
    public static async Task<SuspendResult> SendToSessionAsync(ParseResult parse, string op, string parcel, CancellationToken ct)
    {
        var result = await DaemonClient.SendAsync(Cli.Site(), new DaemonRequest { Op = op, Parcel = parcel },
            m => { if (!parse.GetValue(Cli.Json)) Console.Error.WriteLine($"isr: {m}"); }, ct, startIfNeeded: false)
            ?? throw new InvalidOperationException($"parcel '{parcel}' is not running at this site (no site daemon)");
        return result.Deserialize(DaemonJsonContext.Default.SuspendResult)!;
    }
}
