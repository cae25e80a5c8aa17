using Isr.Client.Site;

namespace Isr.Client.Session;

/// <summary>What a starting daemon takes over from one that was killed: QEMUs left running without their disk server,
/// and background check-ins that did not commit.</summary>
public static class SiteRecovery
{
    /// <summary>An earlier daemon left something unfinished: a command that finds no daemon starts one to deal with it.</summary>
    public static bool HasWork(SiteDirectory site) =>
        site.ParcelNames().Any(p => File.Exists(QemuRecord.PathFor(site, p)) || File.Exists(site.BackgroundCheckinPath(p)));

    /// <summary>Stops each QEMU a killed daemon left (by its recorded PID, only if it is still the process we started)
    /// and records why its parcel stopped. The disk keeps what the guest flushed: the journal has it.</summary>
    public static void StopOrphanedVms(SiteDirectory site, Action<string> log)
    {
        foreach (var parcel in site.ParcelNames())
        {
            if (!File.Exists(QemuRecord.PathFor(site, parcel))) continue;
            var record = QemuRecord.Load(site, parcel);
            var why = record?.KillIfAlive() == true
                ? $"the site daemon was killed while the VM of '{parcel}' ran; its QEMU (pid {record.Pid}) could not go on without its disk server and was stopped"
                : $"the site daemon was killed while the VM of '{parcel}' ran (its QEMU had exited too)";
            site.UpdateLocal(parcel, s => s with { Interrupted = why });
            QemuRecord.Delete(site, parcel);
            log(why);
        }
    }

    /// <summary>The user's choices for changes that no version holds after the VM stopped without a suspend.</summary>
    public static string KeepOrDiscard(string parcel) =>
        $"the disk as the guest last flushed it is kept: 'isr suspend {parcel}' checks it in as a version without a memory image " +
        $"(the next resume boots from the disk), or 'isr discard {parcel}' drops it";
}
