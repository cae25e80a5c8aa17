using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Isr.Cli.Commands;
using Isr.Client.Daemon;
using Isr.Client.Homes;
using Isr.Client.Lookaside;
using Isr.Client.Portable;
using Isr.Client.Transfer;
using Isr.Storage.Metadata;

namespace Isr.Cli;

/// <summary>What `--json` prints beyond the daemon's results (those print with <see cref="DaemonJsonContext"/>, the
/// protocol's own metadata), from generated code: `isr` is compiled ahead of time, where reflection cannot build
/// serializers. The settings are the daemon protocol's, so every command's output reads alike.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(JsonObject))]
[JsonSerializable(typeof(HoardResult))]
[JsonSerializable(typeof(CopyResult))]
[JsonSerializable(typeof(DongleWriteResult))]
[JsonSerializable(typeof(HoardRequestRecord))]
[JsonSerializable(typeof(IReadOnlyList<HoardRequestRecord>))]
[JsonSerializable(typeof(IReadOnlyList<SiteRecord>))]
[JsonSerializable(typeof(IReadOnlyList<string>))]
[JsonSerializable(typeof(List<StatusCommand.ParcelStatus>))]
[JsonSerializable(typeof(List<LsCommand.ParcelListing>))]
[JsonSerializable(typeof(StatCommand.ParcelStat))]
[JsonSerializable(typeof(CreateCommand.Created))]
[JsonSerializable(typeof(LoginCommand.LoggedIn))]
[JsonSerializable(typeof(LockCommand.LockState))]
[JsonSerializable(typeof(CleanCommand.Cleaned))]
[JsonSerializable(typeof(DiscardCommand.DiscardResult))]
[JsonSerializable(typeof(RollbackCommand.RolledBack))]
[JsonSerializable(typeof(LookasideCommand.Indexed))]
internal sealed partial class CliJsonContext : JsonSerializerContext;
