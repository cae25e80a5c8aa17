using System.Text.Json;

namespace Isr.EndToEnd.Tests;

/// <summary>After `isr login` the site daemon holds the keys (in memory only): resume needs no password and runs no
/// Argon2id. After a logout, or a login with --keep-keys 0, it holds none and resume asks for the password again.</summary>
public sealed class HeldKeysTests
{
    [Fact]
    public async Task Resume_after_login_needs_no_password_and_after_logout_it_does()
    {
        TestEnvironment.RequireProgram("qemu-system-x86_64");
        await using var site = new TestSite("site-a");
        await using var server = await TestServer.StartAsync(site.Root, TestSite.Password);
        await site.LoginAsync(server);
        await site.IsrOkAsync("create", "box", "--from", TestEnvironment.GuestImage());

        var console = Path.Combine(site.Root, "console.log");
        var (code, stdout, stderr) = await site.IsrWithPasswordAsync("", "resume", "box", "--headless", "--serial", console, "--json");
        Assert.True(code == 0, $"resume without a password after login exited {code}: {stderr}\n{site.DaemonLog()}");
        var steps = JsonDocument.Parse(stdout).RootElement.GetProperty("trace").EnumerateArray().Select(s => s.GetProperty("step").GetString()).ToList();
        Assert.Contains("keys held by the daemon since login", steps);
        Assert.Equal("cont", steps[^2]);
        Assert.StartsWith("daemon since the request: ", steps[^1]); // what the daemon spent, the trace's last word
        await CycleSteps.WaitForTicksAsync(site, console, 1);
        await site.IsrJsonAsync("suspend", "box");

        await site.IsrOkAsync("logout");
        await site.LoginAsync(server, "--keep-keys", "0");
        var (noKeys, _, noKeysErr) = await site.IsrWithPasswordAsync("", "resume", "box", "--headless");
        Assert.Equal(2, noKeys);
        Assert.Contains("a password is needed", noKeysErr);
        var (wrong, _, wrongErr) = await site.IsrWithPasswordAsync("not the password", "resume", "box", "--headless");
        Assert.Equal(3, wrong);
        Assert.Contains("wrong password", wrongErr);
    }
}
