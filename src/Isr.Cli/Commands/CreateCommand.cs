using System.CommandLine;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Vmm;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>`isr create PARCEL --from IMAGE`: encrypt an existing VM image into the store as a new parcel.</summary>
public static class CreateCommand
{
    public sealed record Created(string Parcel, long Version, long DiskSize, int ChunkSize, Isr.Vmm.VmDescriptor Descriptor);

    public static Command Build()
    {
        var from = new Option<FileInfo>("--from") { Description = "VM disk image to import (raw, qcow2, vmdk, … anything qemu-img reads)", Required = true };
        var memory = new Option<string>("--memory") { Description = "Guest RAM, e.g. 256M or 1G", DefaultValueFactory = _ => "256M" };
        var cpus = new Option<int>("--cpus") { Description = "Virtual CPUs", DefaultValueFactory = _ => 1 };
        var machine = new Option<string>("--machine") { Description = "QEMU machine type or alias (resolved and recorded, e.g. pc → pc-i440fx-7.2)", DefaultValueFactory = _ => "pc" };
        var accelerator = new Option<string?>("--accelerator")
        {
            Description = "tcg or kvm, recorded in the parcel (every site must offer it); default: kvm where /dev/kvm opens, else tcg",
        };
        accelerator.AcceptOnlyFromAmong("tcg", "kvm");
        var chunkSize = new Option<string>("--chunk-size") { Description = "Disk chunk size", DefaultValueFactory = _ => "64K" };
        var command = new Command("create", "Import a VM image as a new parcel; everything is encrypted here before it is stored")
        {
            Cli.Parcel, from, memory, cpus, machine, accelerator, chunkSize, Cli.Store, Cli.PasswordFile, Cli.Json,
        };
        command.SetAction(async (parse, ct) =>
        {
            var site = Cli.Site();
            string name = parse.GetValue(Cli.Parcel)!;
            var home = Cli.Home(parse, site, name);
            var secrets = home is DirectoryParcelHome store && !DirectoryParcelHome.IsInitialized(store.Root)
                ? store.Initialize(Cli.Password(parse, confirm: true))
                : await home.UnlockAsync(Cli.Password(parse), ct);
            var installation = QemuInstallation.Locate();
            var descriptor = await VmDescriptorFactory.CreateAsync(installation, Size.Parse(parse.GetValue(memory)!), parse.GetValue(machine)!, parse.GetValue(cpus),
                accelerator: parse.GetValue(accelerator), cancellationToken: ct);
            var image = parse.GetValue(from)!.FullName;
            var version = await Progress.RunAsync(parse, $"importing {Path.GetFileName(image)}", progress =>
                ParcelImporter.ImportAsync(home, secrets, site, name, image, (int)Size.Parse(parse.GetValue(chunkSize)!), descriptor, progress, ct));
            site.UpdateLocal(name, s => s with { Store = home is DirectoryParcelHome d ? d.Root : "" });
            Cli.Print(parse, new Created(name, version.Number, version.DiskSize, version.ChunkSize, descriptor), CliJsonContext.Default.Created,
                () => AnsiConsole.MarkupLineInterpolated($"created parcel [bold]{name}[/] version {version.Number}: {Cli.Bytes(version.DiskSize)} disk, {descriptor.MachineType}, {Cli.Bytes(descriptor.MemoryBytes)} RAM, in {home.Describe}"));
            return 0;
        });
        return command;
    }
}

/// <summary>Sizes like 256M, 1G, 64K, 65536.</summary>
public static class Size
{
    public static long Parse(string text)
    {
        text = text.Trim();
        long unit = char.ToUpperInvariant(text[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1 };
        var digits = unit == 1 ? text : text[..^1];
        return long.TryParse(digits, out var n) && n > 0 ? n * unit : throw new UsageException($"'{text}' is not a size (e.g. 256M)");
    }
}
