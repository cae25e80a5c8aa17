using Isr.Format;

namespace Isr.Client.Cache;

/// <summary>Recently decoded chunks, in process memory only (never written to disk). Bounded by count.</summary>
public sealed class PlaintextLru(int capacity)
{
    private readonly Dictionary<ChunkTag, LinkedListNode<(ChunkTag Tag, byte[] Data)>> _map = new();
    private readonly LinkedList<(ChunkTag Tag, byte[] Data)> _order = new();
    private readonly Lock _gate = new();

    public byte[]? Get(ChunkTag tag)
    {
        lock (_gate)
        {
            if (!_map.TryGetValue(tag, out var node)) return null;
            _order.Remove(node);
            _order.AddFirst(node);
            return node.Value.Data;
        }
    }

    public void Put(ChunkTag tag, byte[] data)
    {
        lock (_gate)
        {
            if (_map.ContainsKey(tag)) return;
            _map[tag] = _order.AddFirst((tag, data));
            while (_map.Count > capacity)
            {
                var last = _order.Last!;
                _order.RemoveLast();
                _map.Remove(last.Value.Tag);
            }
        }
    }
}
