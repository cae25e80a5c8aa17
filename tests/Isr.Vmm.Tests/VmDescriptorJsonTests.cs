namespace Isr.Vmm.Tests;

public class VmDescriptorJsonTests
{
    [Fact]
    public void Round_trips_through_json()
    {
        var d = TestDescriptors.Sample();

        var json = d.ToJson();
        var back = VmDescriptor.FromJson(json);

        Assert.Equal(d, back);
        Assert.Equal(d, VmDescriptor.FromJson(d.ToJsonUtf8()));
        Assert.Contains("\"formatVersion\": 1", json);
        Assert.Contains("\"machineType\": \"pc-q35-7.2\"", json);
        Assert.Contains("\"kind\": \"disk\"", json);
    }

    [Fact]
    public void Equality_includes_device_contents()
    {
        var a = TestDescriptors.Sample();
        var b = a with { Devices = [.. a.Devices] };
        var c = a with { Devices = [.. a.Devices.Select(x => x.Kind == VmDeviceKind.Network ? x with { MacAddress = "52:54:00:00:00:01" } : x)] };

        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void Unknown_format_version_is_refused()
    {
        var json = TestDescriptors.Sample().ToJson().Replace("\"formatVersion\": 1", "\"formatVersion\": 2");

        var e = Assert.Throws<InvalidDataException>(() => VmDescriptor.FromJson(json));
        Assert.Contains("format version 2", e.Message);
    }

    [Fact]
    public void Missing_required_field_is_refused()
    {
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => VmDescriptor.FromJson("""{"formatVersion":1,"vmm":"qemu"}"""));
    }
}
