using System.CommandLine;
using Isr.Client.Daemon;
using Isr.Client.Session;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr sync PARCEL`: checkpoint a running parcel as a new version; the VM keeps running and the lock stays.</summary>
public static class SyncCommand
{
    public static Command Build()
    {
        var command = new Command("sync", "Checkpoint the running parcel: pause briefly, capture memory and disk, continue, upload and commit") { Cli.Parcel, Cli.Json };
        command.SetAction(async (parse, ct) =>
        {
            string name = parse.GetValue(Cli.Parcel)!;
            var synced = await SuspendCommand.SendToSessionAsync(parse, "sync", name, ct);
            Cli.Print(parse, synced, DaemonJsonContext.Default.SuspendResult, () => AnsiConsole.MarkupLineInterpolated(
                $"synced [bold]{name}[/] as version {synced.Committed?.Version} in {synced.Seconds:F2} s; the VM kept running"));
            return 0;
        });
        return command;
    }
}
