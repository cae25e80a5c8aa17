using System.Text.Json;
using System.Text.Json.Serialization;

namespace Isr.Vmm;

/// <summary>Enum values as camelCase strings ("guestAgent"), as the descriptor and the daemon's protocol have always
/// written them. Put on the enum type, so that every generated JSON context agrees (their own string-enum option keeps
/// the C# spelling). Integers are still read, as before; callers validate them.</summary>
public sealed class CamelCaseEnumConverter<TEnum>() : JsonStringEnumConverter<TEnum>(JsonNamingPolicy.CamelCase)
    where TEnum : struct, Enum;
