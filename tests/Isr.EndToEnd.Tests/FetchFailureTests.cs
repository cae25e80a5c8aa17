using System.Text.Json;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// The home goes away while a resumed guest needs data it never fetched: the VM pauses (never an I/O error in the
/// guest), `isr stat` says what it waits for, the VM continues by itself when the server is back, and suspend and
/// check-in behave while the server is gone (suspend works; check-in fails clearly and succeeds later).
/// </summary>
public sealed class FetchFailureTests
{
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Lost_server_pauses_the_VM_which_continues_when_it_returns()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var a = new TestSite("site-a");
        await using var b = new TestSite("site-b");
        await using var server = await TestServer.StartAsync(a.Root, TestSite.Password);
        foreach (var site in new[] { a, b }) await site.LoginAsync(server);

        await a.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage());
        var consoleA = Path.Combine(a.Root, "console-a.log");
        await a.IsrJsonAsync("resume", "box", "--headless", "--serial", consoleA);
        await WaitForConsoleAsync(consoleA, "ISR-READ slice=0 ok");
        await a.IsrJsonAsync("suspend", "box");
        await a.IsrJsonAsync("checkin", "box");

        // Site B has none of the disk's data: the guest's next fresh reads must come from the server.
        var consoleB = Path.Combine(b.Root, "console-b.log");
        await b.IsrJsonAsync("resume", "box", "--headless", "--prefetch", "none", "--serial", consoleB); // no background prefetch: fresh reads must fetch
        await SerialConsole.WaitForTicksAsync(consoleB, 1, GuestTimeout);
        await server.StopAsync();

        var paused = await WaitForStateAsync(b, s => s.StartsWith("paused: waiting for", StringComparison.Ordinal));
        Assert.NotEmpty(paused.GetProperty("waitingFor").EnumerateArray());
        int ticksWhilePaused = SerialConsole.Ticks(consoleB).Count;
        await Task.Delay(TimeSpan.FromSeconds(3));
        Assert.InRange(SerialConsole.Ticks(consoleB).Count, ticksWhilePaused, ticksWhilePaused + 1); // the VM is really stopped

        await server.RestartAsync();
        await WaitForStateAsync(b, s => s == "running");
        await SerialConsole.WaitForTicksAsync(consoleB, ticksWhilePaused + 3, GuestTimeout); // continued by itself
        await WaitForConsoleAsync(consoleB, "ISR-READ", afterTicks: ticksWhilePaused);

        // Lose the server again: suspend still works while the VM waits; check-in says the server is unreachable.
        await server.StopAsync();
        await WaitForStateAsync(b, s => s.StartsWith("paused", StringComparison.Ordinal));
        await b.IsrJsonAsync("suspend", "box");
        var (code, _, stderr) = await b.IsrAsync("checkin", "box");
        Assert.Equal(8, code);
        Assert.Contains("cannot reach the server", stderr);
        await server.RestartAsync();
        var checkedIn = await b.IsrJsonAsync("checkin", "box");
        Assert.Equal(3, checkedIn.GetProperty("version").GetInt64());

        // The guest never saw an I/O error, and the paused read is completed at the next resume.
        Assert.DoesNotContain("ISR-IOERROR", File.ReadAllText(consoleB));
        var consoleA2 = Path.Combine(a.Root, "console-a2.log");
        await a.IsrJsonAsync("resume", "box", "--headless", "--serial", consoleA2);
        var resumed = await SerialConsole.WaitForTicksAsync(consoleA2, 6, GuestTimeout);
        Assert.Equal(SerialConsole.Ticks(consoleB)[^1].Seed, resumed[0].Seed);
        await WaitForConsoleAsync(consoleA2, "ISR-READ");
        Assert.DoesNotContain("ISR-IOERROR", File.ReadAllText(consoleA2));
        await a.IsrJsonAsync("suspend", "box");
    }

    private static async Task<JsonElement> WaitForStateAsync(TestSite site, Func<string, bool> predicate)
    {
        string last = "";
        for (int i = 0; i < 120; i++)
        {
            var stat = await site.IsrJsonAsync("stat", "box");
            if (stat.TryGetProperty("session", out var session) && session.ValueKind == JsonValueKind.Object)
            {
                last = session.GetProperty("state").GetString() ?? "";
                if (predicate(last)) return session;
            }
            await Task.Delay(1000);
        }
        throw new TimeoutException($"the session did not reach the expected state; last: '{last}'\n{site.DaemonLog()}");
    }

    /// <summary>Waits (bounded) for a console line containing <paramref name="text"/> after the first <paramref name="afterTicks"/> ticks.</summary>
    private static async Task WaitForConsoleAsync(string console, string text, int afterTicks = 0)
    {
        for (int i = 0; i < 240; i++)
        {
            if (File.Exists(console))
            {
                int ticks = 0;
                using var stream = new FileStream(console, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                foreach (var line in new StreamReader(stream).ReadToEnd().Split('\n'))
                {
                    if (line.Contains("ISR-TICK")) ticks++;
                    else if (ticks >= afterTicks && line.Contains(text)) return;
                }
            }
            await Task.Delay(500);
        }
        throw new TimeoutException($"'{text}' did not appear on {console}");
    }
}
