using System.Text.Json;
using Isr.Client.Daemon;
using Isr.Client.Session;
using Isr.Vmm;

namespace Isr.Client.Tests;

public sealed class DaemonProtocolTests
{
    [Fact]
    public void A_resume_request_reads_back_as_written_with_enums_as_words()
    {
        var request = new DaemonRequest
        {
            Op = "resume", Parcel = "box",
            Resume = new ResumeOptions { Display = QemuDisplayMode.Vnc, Policy = TransferPolicy.Baseline, Prefetch = PrefetchMode.All, Lookaside = ["/media/a"] },
        };

        var json = JsonSerializer.Serialize(request, DaemonJson.Options);
        var back = JsonSerializer.Deserialize<DaemonRequest>(json, DaemonJson.Options)!;

        Assert.Contains("\"policy\":\"baseline\"", json);
        Assert.Equal((QemuDisplayMode.Vnc, TransferPolicy.Baseline, PrefetchMode.All), (back.Resume!.Display, back.Resume.Policy, back.Resume.Prefetch));
        Assert.Equal(["/media/a"], back.Resume.Lookaside);
    }

    [Fact]
    public void The_generated_protocol_writes_enums_as_camel_case_words_and_reads_them_back()
    {
        var request = new DaemonRequest
        {
            Op = "resume", Parcel = "box",
            Resume = new ResumeOptions { Display = QemuDisplayMode.Window, Policy = TransferPolicy.Baseline, Prefetch = PrefetchMode.WorkingSet, Lookaside = ["/media/a"] },
        };

        // What the CLI and the daemon call; a context that lost its enum converters writes "Baseline" or 1.
        var json = JsonSerializer.Serialize(request, DaemonJsonContext.Default.DaemonRequest);
        var back = JsonSerializer.Deserialize(json, DaemonJsonContext.Default.DaemonRequest)!;

        Assert.Contains("\"policy\":\"baseline\"", json);
        Assert.Contains("\"display\":\"window\"", json);
        Assert.Contains("\"prefetch\":\"workingSet\"", json);
        Assert.DoesNotContain("\"password\"", json); // null members are left out
        Assert.Equal(json, JsonSerializer.Serialize(request, DaemonJson.Options));
        var (sent, read) = (request.Resume!, back.Resume!);
        Assert.Equal(sent, read with { Lookaside = sent.Lookaside }); // the list reads back as a new one
        Assert.Equal(["/media/a"], read.Lookaside);
    }

    [Fact]
    public void The_protocol_options_resolve_only_generated_types() =>
        // No reflection behind the context: native AOT has none, so a type missing from it must fail here, not there.
        Assert.Throws<NotSupportedException>(() => JsonSerializer.Serialize(new Version(1, 2), DaemonJson.Options));

    [Fact]
    public async Task The_warm_up_writes_and_reads_a_resume_request_and_its_reply() =>
        await DaemonJson.WarmUpAsync(); // throws if any of the protocol's messages cannot make the round trip
}
