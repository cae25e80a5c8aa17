namespace Isr.Vmm.Tests;

/// <summary>
/// A real guest powering itself off. The "guest" is a 25-byte boot sector (booted by SeaBIOS from
/// the virtio disk) that prints "OK" on COM1 and writes S5 to the ACPI PM1a control register
/// (port 0x604, where SeaBIOS places the PM block on both q35 and i440fx).
/// </summary>
[Collection(QemuCollection.Name)]
public class GuestPowerOffTests
{
    private static readonly byte[] BootSector = Convert.FromHexString(
        "BAF803" + "B04FEE" + "B04BEE" + "B00AEE" // mov dx,0x3f8; out 'O','K','\n'
        + "BA0406" + "B80020" + "EF"              // mov dx,0x604; mov ax,0x2000 (SLP_EN|S5); out dx,ax
        + "FAF4EBFD");                            // cli; hlt; jmp back to hlt

    [Theory]
    [InlineData("q35")]
    [InlineData("pc")]
    public async Task Guest_power_off_is_reported_and_serial_output_reaches_the_log(string machine)
    {
        await using var env = new QemuTestEnvironment();
        var image = Path.Combine(env.Directory, "boot.img");
        var sector = new byte[1 << 20];
        BootSector.CopyTo(sector, 0);
        sector[510] = 0x55;
        sector[511] = 0xAA;
        await File.WriteAllBytesAsync(image, sector, env.Token);
        var site = env.SiteOptions(new QemuDiskBackend.RawFile(image));
        QemuExitedEventArgs? exited = null;

        var vm = await env.StartAsync(await env.DescriptorAsync(machine: machine), site, incoming: false);
        vm.ProcessExited += (_, e) => exited = e;
        var code = await vm.Exited.WaitAsync(env.Token);

        Assert.Equal(0, code);
        Assert.Equal(QemuExitReason.GuestPoweredOff, vm.ExitReason);
        Assert.Equal("OK\n", await File.ReadAllTextAsync(site.SerialLogPath!, env.Token));
        // The handler may be attached after the exit was already raised; if it ran, it agrees.
        Assert.True(exited is null || exited.Reason == QemuExitReason.GuestPoweredOff);
    }
}
