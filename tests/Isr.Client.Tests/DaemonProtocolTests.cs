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
    public async Task The_warm_up_writes_and_reads_a_resume_request_and_its_reply() =>
        await DaemonJson.WarmUpAsync(); // throws if any of the protocol's messages cannot make the round trip
}
