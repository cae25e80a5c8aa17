using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Session;
using Isr.Vmm;

namespace Isr.Client.Tests;

public sealed class DaemonProtocolTests
{
    [Theory]
    [InlineData(QemuDisplayMode.Vnc, PrefetchMode.All, "vnc", "all")]
    [InlineData(QemuDisplayMode.Window, PrefetchMode.WorkingSet, "window", "workingSet")]
    public void A_resume_request_reads_back_as_written_with_enums_as_camel_case_words(QemuDisplayMode display, PrefetchMode prefetch,
        string displayWord, string prefetchWord)
    {
        var request = new DaemonRequest
        {
            Op = "resume", Parcel = "box",
            Resume = new ResumeOptions { Display = display, Policy = TransferPolicy.Baseline, Prefetch = prefetch, Lookaside = ["/media/a"] },
        };

        // What the CLI and the daemon call; a context that lost its enum converters writes "Baseline" or 1.
        var json = JsonSerializer.Serialize(request, DaemonJsonContext.Default.DaemonRequest);
        var back = JsonSerializer.Deserialize(json, DaemonJsonContext.Default.DaemonRequest)!;

        Assert.Contains("\"policy\":\"baseline\"", json);
        Assert.Contains($"\"display\":\"{displayWord}\"", json);
        Assert.Contains($"\"prefetch\":\"{prefetchWord}\"", json);
        Assert.DoesNotContain("\"password\"", json); // null members are left out
        Assert.Equal(json, JsonSerializer.Serialize(request, DaemonJsonContext.Default.Options));
        var (sent, read) = (request.Resume!, back.Resume!);
        Assert.Equal(sent, read with { Lookaside = sent.Lookaside }); // the list reads back as a new one
        Assert.Equal(["/media/a"], read.Lookaside);
        var byOptions = JsonSerializer.Deserialize<DaemonRequest>(json, DaemonJsonContext.Default.Options)!.Resume!;
        Assert.Equal((display, TransferPolicy.Baseline, prefetch), (byOptions.Display, byOptions.Policy, byOptions.Prefetch));
        Assert.Equal(["/media/a"], byOptions.Lookaside);
    }

    [Fact]
    public void The_protocol_options_resolve_only_generated_types() =>
        // No reflection behind the context: native AOT has none, so a type missing from it must fail here, not there.
        Assert.Throws<NotSupportedException>(() => JsonSerializer.Serialize(new Version(1, 2), DaemonJsonContext.Default.Options));

    [Fact]
    public async Task The_warm_up_writes_and_reads_a_resume_request_and_its_reply() =>
        await DaemonJson.WarmUpAsync(); // throws if any of the protocol's messages cannot make the round trip
}
