namespace Isr.Vmm;

/// <summary>Quoting for QEMU's "key=value,key=value" option syntax.</summary>
internal static class QemuArgs
{
    /// <summary>QEMU splits options on ','; a literal comma in a value is written ",,".</summary>
    public static string Escape(string value)
    {
        if (value.Contains('\n') || value.Contains('\0'))
            throw new ArgumentException("QEMU option values cannot contain newlines or NUL.", nameof(value));
        return value.Replace(",", ",,", StringComparison.Ordinal);
    }

    /// <summary>For identifiers we put in options ourselves: refuse anything that could change the option's meaning.</summary>
    public static string Identifier(string value, string what)
    {
        if (string.IsNullOrEmpty(value) || value.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':')))
            throw new ArgumentException($"Invalid {what} '{value}' for a QEMU option.");
        return value;
    }
}
