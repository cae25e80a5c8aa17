namespace Isr.Vmm;

/// <summary>Keeps the last lines a process printed, for error messages; older lines are dropped.</summary>
internal sealed class OutputTail(int capacity = 40)
{
    private readonly Queue<string> _lines = new();
    private readonly Lock _lock = new();

    public void Add(string? line)
    {
        if (line is null)
            return;
        lock (_lock)
        {
            _lines.Enqueue(line);
            while (_lines.Count > capacity)
                _lines.Dequeue();
        }
    }

    public override string ToString()
    {
        lock (_lock)
            return string.Join(Environment.NewLine, _lines);
    }
}
