using System.CommandLine;
using System.Runtime.InteropServices;
using Isr.Client.Daemon;

namespace Isr.Cli.Commands;

/// <summary>`isr daemon`: the site daemon; normally started by other commands, not by hand.</summary>
public static class DaemonCommand
{
    public static Command Build()
    {
        var idle = new Option<int>("--idle-seconds") { Description = "Exit after this long with no sessions", DefaultValueFactory = _ => 30 };
        var command = new Command("daemon", "Run the site daemon for ISR_HOME in the foreground (other commands start it when needed)") { idle };
        command.Hidden = true;
        command.SetAction(async (parse, ct) =>
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var hangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => c.Cancel = true);
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            var daemon = new SiteDaemon(Cli.Site(), TimeSpan.FromSeconds(parse.GetValue(idle)), m => Console.WriteLine($"{DateTimeOffset.UtcNow:O} {m}"));
            await daemon.RunAsync(stop.Token);
            return 0;
        });
        return command;
    }
}
