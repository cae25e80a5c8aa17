using System.CommandLine;
using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Session;
using Isr.Vmm;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr resume PARCEL`: start the parcel's VM at this site where it left off (or boot it the first time).</summary>
public static class ResumeCommand
{
    public static Command Build()
    {
        var headless = new Option<bool>("--headless") { Description = "No display (for scripts)" };
        var vnc = new Option<bool>("--vnc") { Description = "Serve the display over VNC on loopback" };
        var serial = new Option<FileInfo?>("--serial") { Description = "Write the guest's serial console to this file" };
        var cold = new Option<bool>("--cold") { Description = "Boot from the disk, discarding the memory image" };
        var yes = new Option<bool>("--yes") { Description = "Do not ask for confirmation" };
        var version = new Option<long?>("--version") { Description = "Resume this version instead of the newest" };
        var command = new Command("resume", "Resume the parcel's VM at this site: continue where it was suspended")
        {
            Cli.Parcel, Cli.Store, Cli.PasswordFile, headless, vnc, serial, cold, yes, version, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var started = DateTimeOffset.UtcNow;
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            if (parse.GetValue(cold) && !parse.GetValue(yes) && !Confirm($"Boot '{name}' from its disk and discard its memory image (unsaved work in the running programs is lost)?"))
                return 1;
            var options = new ResumeOptions
            {
                Display = parse.GetValue(headless) ? QemuDisplayMode.Headless : parse.GetValue(vnc) ? QemuDisplayMode.Vnc : DefaultDisplay(),
                SerialPath = parse.GetValue(serial)?.FullName,
                Cold = parse.GetValue(cold),
                Version = parse.GetValue(version),
                CommandStarted = started,
            };
            var request = new DaemonRequest { Op = "resume", Parcel = name, Store = Cli.StorePath(parse, site, name), Password = Cli.Password(parse), Resume = options };
            var result = await DaemonClient.SendAsync(site, request, m => { if (!parse.GetValue(Cli.Json)) Console.Error.WriteLine($"isr: {m}"); }, ct);
            var stats = result!.Value.Deserialize<SessionStats>(DaemonJson.Options)!;
            Cli.Print(parse, stats, () => AnsiConsole.MarkupLineInterpolated(
                $"resumed [bold]{name}[/] version {stats.BaseVersion} in {stats.ResumeSeconds:F2} s{(stats.ColdBoot ? " (booted from the disk)" : "")}"));
            return 0;
        });
        return command;
    }

    private static QemuDisplayMode DefaultDisplay() =>
        Environment.GetEnvironmentVariable("DISPLAY") is { Length: > 0 } ? QemuDisplayMode.Window : QemuDisplayMode.Headless;

    private static bool Confirm(string question) =>
        !Console.IsInputRedirected && AnsiConsole.Confirm(question, defaultValue: false);
}
