namespace Isr.Client.Transfer;

/// <summary>
/// How much of the working set to fetch before `cont`. Fetched in order from `cont` on at the link's rate, the chunk at
/// position j of those still to fetch arrives (j + 1) × size ÷ rate after `cont`, and the guest needs it at its recorded
/// time. The head is the fewest first chunks that leave no later one late: max_j (j + 1 − rate × due_j ÷ size). It is
/// the bound of docs/benchmarks/ws-bound.md turned into a plan: on a fast link it is the few chunks needed at once, on a
/// slow one the wait the guest would have had, moved into the resume.
/// </summary>
public static class WorkingSetHead
{
    /// <param name="dueSeconds">When the guest needs each chunk still to fetch (guest time after `cont`), in fetch order.</param>
    /// <param name="chunkBytes">Bytes a chunk takes on the link (ciphertext, compressed).</param>
    /// <param name="bytesPerSecond">The link's rate for the replay.</param>
    /// <returns>How many of the first chunks to fetch before `cont`.</returns>
    public static int Chunks(IReadOnlyList<double> dueSeconds, double chunkBytes, double bytesPerSecond)
    {
        if (chunkBytes <= 0 || bytesPerSecond <= 0) throw new ArgumentOutOfRangeException(nameof(bytesPerSecond), "a size and a rate are needed");
        double need = 0, perChunk = chunkBytes / bytesPerSecond;
        for (int j = 0; j < dueSeconds.Count; j++) need = Math.Max(need, j + 1 - dueSeconds[j] / perChunk);
        return (int)Math.Min(dueSeconds.Count, Math.Ceiling(need - 1e-9));
    }
}
