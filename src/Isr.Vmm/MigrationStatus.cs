using System.Text.Json;

namespace Isr.Vmm;

/// <summary>The part of QMP <c>query-migrate</c> we act on.</summary>
internal sealed record MigrationStatus(string Status, string? ErrorDescription, long? TransferredBytes, long? TotalTimeMs)
{
    public bool IsCompleted => Status == "completed";

    public bool IsFailed => Status is "failed" or "cancelled" or "cancelling";

    public static MigrationStatus Parse(JsonElement e)
    {
        // Before any migration query-migrate returns {} (no status at all).
        var status = e.TryGetProperty("status", out var s) ? s.GetString() ?? "none" : "none";
        var error = e.TryGetProperty("error-desc", out var d) ? d.GetString() : null;
        long? transferred = e.TryGetProperty("ram", out var ram) && ram.TryGetProperty("transferred", out var t) ? t.GetInt64() : null;
        long? total = e.TryGetProperty("total-time", out var tt) ? tt.GetInt64() : null;
        return new MigrationStatus(status, error, transferred, total);
    }
}
