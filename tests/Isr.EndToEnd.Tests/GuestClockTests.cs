using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Isr.EndToEnd.Tests;

/// <summary>After a resume the guest's clock is set to the site's time through the guest agent port (the test guest
/// answers guest-set-time with `date -s`). The guest's clock is moved a day back first, so a resume that did not set
/// it would leave it a day behind: the bound checks correctness, not speed.</summary>
public sealed partial class GuestClockTests
{
    private const long DayBack = 86_400;
    private const long Bound = 3_600;

    [GeneratedRegex(@"ISR-CLOCK (\d+)")]
    private static partial Regex ClockLine();

    [Fact]
    public async Task Resume_sets_the_guest_clock_through_the_guest_agent()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite();
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store);
        await using var console = ConsolePipe.Create(Path.Combine(site.Root, "console"));
        await site.IsrJsonAsync("resume", "box", "--headless", "--serial-pipe", console.Base);
        await SerialConsole.WaitForTicksAsync(console.LogPath, 2, TimeSpan.FromSeconds(120));

        long dayAgo = DateTimeOffset.UtcNow.ToUnixTimeSeconds() - DayBack;
        long set = await AskClockAsync(console, $"ISR-SETDATE {dayAgo}");
        Assert.InRange(set, dayAgo, dayAgo + Bound);
        await site.IsrJsonAsync("suspend", "box");

        int ticks = SerialConsole.Ticks(console.LogPath).Count;
        await site.IsrJsonAsync("resume", "box", "--headless", "--serial-pipe", console.Base);
        await SerialConsole.WaitForTicksAsync(console.LogPath, ticks + 1, TimeSpan.FromSeconds(120));
        // The agent is asked in the background after `cont`: wait (bounded) until it has answered.
        JsonElement session = default;
        for (int i = 0; i < 60; i++)
        {
            session = (await site.IsrJsonAsync("stat", "box")).GetProperty("session");
            if (!session.GetProperty("guestClock").GetString()!.StartsWith("being set", StringComparison.Ordinal)) break;
            await Task.Delay(500);
        }
        Assert.StartsWith("set to the site's time by the guest agent", session.GetProperty("guestClock").GetString());
        long guest = await AskClockAsync(console, "ISR-DATE");
        Assert.InRange(guest, DateTimeOffset.UtcNow.ToUnixTimeSeconds() - Bound, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + Bound);
        await site.IsrJsonAsync("suspend", "box");
    }

    /// <summary>Sends a console command and returns the clock the guest answers with (bounded wait).</summary>
    private static async Task<long> AskClockAsync(ConsolePipe console, string command)
    {
        int before = ClockLine().Matches(console.Text).Count;
        await console.SendLineAsync(command);
        for (int i = 0; i < 120; i++)
        {
            var answers = ClockLine().Matches(console.Text);
            if (answers.Count > before) return long.Parse(answers[before].Groups[1].Value);
            await Task.Delay(500);
        }
        throw new TimeoutException($"the guest did not answer '{command}'; console:\n{console.Text[Math.Max(0, console.Text.Length - 2000)..]}");
    }

    /// <summary>A two-way console through the FIFOs BASE.in and BASE.out (isr resume --serial-pipe). Both are opened
    /// read-write, which never blocks and outlives each QEMU; what the guest prints is copied to a log file.</summary>
    private sealed class ConsolePipe : IAsyncDisposable
    {
        private readonly FileStream _in, _out;
        private readonly StringBuilder _text = new();
        private readonly Task _copy;
        private volatile bool _closing;

        public string Base { get; }
        public string LogPath => Base + ".log";
        public string Text { get { lock (_text) return _text.ToString(); } }

        private ConsolePipe(string basePath)
        {
            Base = basePath;
            foreach (var fifo in new[] { basePath + ".in", basePath + ".out" })
            {
                using var mkfifo = Process.Start("mkfifo", ["-m", "600", fifo]);
                mkfifo.WaitForExit();
                Assert.Equal(0, mkfifo.ExitCode);
            }
            _in = new FileStream(basePath + ".in", FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 0);
            _out = new FileStream(basePath + ".out", FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 0);
            _copy = Task.Factory.StartNew(Copy, TaskCreationOptions.LongRunning);
        }

        public static ConsolePipe Create(string basePath) => new(basePath);

        private void Copy()
        {
            var buffer = new byte[4096];
            using var log = new FileStream(LogPath, FileMode.Create, FileAccess.Write, FileShare.ReadWrite);
            while (!_closing)
            {
                int n = _out.Read(buffer);
                if (n <= 0) break;
                log.Write(buffer, 0, n);
                log.Flush();
                lock (_text) _text.Append(Encoding.UTF8.GetString(buffer, 0, n));
            }
        }

        public async Task SendLineAsync(string line)
        {
            await _in.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"));
            await _in.FlushAsync();
        }

        public async ValueTask DisposeAsync()
        {
            _closing = true;
            _out.Write("\n"u8); // wakes the copier's blocked read (this end is a writer too)
            await _copy;
            await _in.DisposeAsync();
            await _out.DisposeAsync();
        }
    }
}
