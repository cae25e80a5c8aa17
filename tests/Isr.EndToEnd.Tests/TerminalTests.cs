using Isr.Client.Homes;

namespace Isr.EndToEnd.Tests;

/// <summary>
/// What a user at a terminal meets: the password prompt (Spectre.Console's, whose converter lookup is the one piece of
/// the native build the trimmer could not prove), on a pseudo-terminal made by script(1), in the isr the tests run
/// (the native one under scripts/test.sh).
/// </summary>
public sealed class TerminalTests
{
    [Fact]
    public async Task Create_reads_the_password_typed_at_the_terminal()
    {
        TestEnvironment.RequireProgram("script");
        await using var site = new TestSite();
        const string typed = "typed at a terminal 42";
        var (program, args) = TestEnvironment.IsrCommand(["create", "box", "--from", TestEnvironment.GuestImage(), "--store", site.Store]);
        string[] command = [program, .. args];
        // The password is typed twice (a new store asks to repeat it), each time after a pause, as a person would.
        var typing = $"sleep 3; printf '%s\\r' \"$PW\"; sleep 2; printf '%s\\r' \"$PW\"";
        var env = new Dictionary<string, string> { ["ISR_HOME"] = site.Home, ["DISPLAY"] = "", ["PW"] = typed, ["CMD"] = string.Join(' ', command.Select(Quote)) };
        var (code, stdout, stderr) = await TestEnvironment.RunAsync("sh", ["-c", $"({typing}) | script -qefc \"$CMD\" /dev/null"], env, TimeSpan.FromMinutes(3));

        Assert.True(code == 0, $"isr create at a terminal exited {code}:\n{stdout}\n{stderr}");
        Assert.Contains("Password:", stdout);
        Assert.Contains("Repeat password:", stdout);
        Assert.DoesNotContain(typed, stdout); // not echoed
        var store = new DirectoryParcelHome(site.Store);
        await store.UnlockAsync(typed, default);
        await Assert.ThrowsAsync<WrongPasswordException>(async () => await store.UnlockAsync(TestSite.Password, default));
    }

    private static string Quote(string argument) => "'" + argument.Replace("'", "'\\''") + "'";
}
