using System.CommandLine;
using Isr.Cli;
using Isr.Cli.Commands;

var root = new RootCommand("""
    isr — Internet Suspend/Resume: your whole machine (disk, memory, VM configuration) as an encrypted parcel that
    you suspend at one site and resume at another.

    Exit codes: 0 ok, 1 error, 2 usage, 3 wrong password, 4 no such parcel/version, 5 conflict,
    6 this site cannot run the parcel's VM, 7 data failed verification, 8 the server cannot be reached,
    9 the server refuses this site (session revoked or expired, account disabled), 10 (status) not safe to leave yet.
    Environment: ISR_HOME (site state, default ~/.isr), ISR_STORE (default parcel store), ISR_PASSWORD (for scripts).
    """);
root.Subcommands.Add(CreateCommand.Build());
root.Subcommands.Add(ResumeCommand.Build());
root.Subcommands.Add(SuspendCommand.Build());
root.Subcommands.Add(LsCommand.Build());
root.Subcommands.Add(StatCommand.Build());
root.Subcommands.Add(DiscardCommand.Build());
root.Subcommands.Add(CheckinCommand.Build());
root.Subcommands.Add(StatusCommand.Build());
root.Subcommands.Add(HoardCommand.Build());
root.Subcommands.Add(SiteCommand.Build());
root.Subcommands.Add(SyncCommand.Build());
root.Subcommands.Add(LoginCommand.Build());
root.Subcommands.Add(LogoutCommand.Build());
root.Subcommands.Add(LockCommand.Build());
root.Subcommands.Add(RollbackCommand.Build());
root.Subcommands.Add(CleanCommand.Build());
root.Subcommands.Add(PasswdCommand.Build());
root.Subcommands.Add(LookasideCommand.Build());
root.Subcommands.Add(LookasideCommand.BuildDongle());
root.Subcommands.Add(BackupCommand.BuildBackup());
root.Subcommands.Add(BackupCommand.BuildRestore());
root.Subcommands.Add(DaemonCommand.Build());
return await Cli.InvokeAsync(root, args);
