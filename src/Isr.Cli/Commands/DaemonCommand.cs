using System.CommandLine;
using System.Runtime.InteropServices;
using Isr.Client.Daemon;

namespace Isr.Cli.Commands;

/// <summary>`isr daemon`: the site daemon. Other commands start it when needed and it exits when idle; `--service` keeps
/// it running with no user (a site appliance's service), so that it hoards what other sites request for this one.</summary>
public static class DaemonCommand
{
    public static Command Build()
    {
        var idle = new Option<int>("--idle-seconds") { Description = "Exit after this long with no sessions and no background work", DefaultValueFactory = _ => 30 };
        var service = new Option<bool>("--service")
        {
            Description = "Never exit when idle (run by a service manager): picks up hoard requests from the server with this site's hoard-only token; needs no password",
        };
        var command = new Command("daemon", "Run the site daemon for ISR_HOME in the foreground (other commands start it when needed)") { idle, service };
        command.SetAction(async (parse, ct) =>
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var hangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => c.Cancel = true);
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            TimeSpan? idleTimeout = parse.GetValue(service) ? null : TimeSpan.FromSeconds(parse.GetValue(idle));
            var daemon = new SiteDaemon(Cli.Site(), idleTimeout, m => Console.WriteLine($"{DateTimeOffset.UtcNow:O} {m}"));
            await daemon.RunAsync(stop.Token);
            return 0;
        });
        return command;
    }
}
