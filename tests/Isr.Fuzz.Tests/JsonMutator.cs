using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Isr.Fuzz.Tests;

/// <summary>
/// Structure-aware mutations of a JSON document: values replaced by interesting ones (nulls, wrong types, extreme
/// numbers, odd strings), properties deleted, renamed, duplicated or moved, single characters of strings changed; then,
/// sometimes, byte-level mutations of the text.
/// </summary>
public static class JsonMutator
{
    private const string DuplicateMarker = "\u0001dup\u0001";

    private static readonly string[] InterestingJson =
    [
        "null", "true", "false", "0", "-1", "1", "1.5", "-0", "1e308", "-1e308", "1e400", "2147483647", "2147483648", "-2147483649",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616", "4294967295", "0.0000001",
        "\"\"", "\"x\"", "\"null\"", "\"\\u0000\"", "\"@@lone-surrogate@@\"", "\"0\"", "\"-1\"", "\"1970-01-01T00:00:00Z\"", "\"9999-12-31T23:59:59.9999999+14:00\"",
        "\"0001-01-01T00:00:00-14:00\"", "\"not a date\"", "[]", "{}", "[null]", "[1,2]", "{\"a\":1}", "[[[[[[[[[[[[]]]]]]]]]]]]",
        "\"00000000000000000000000000000000000000000000000000000000000000\"", "\"AAAA\"", "\"====\"", "\"qemu\"", "\"disk\"", "\"Disk\"", "\"network\"", "7", "-7",
    ];

    public static byte[] Mutate(Random rng, byte[] seedJson, IReadOnlyList<Seed> pool)
    {
        string text;
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(seedJson);
        }
        catch (JsonException)
        {
            root = null;
        }
        if (root is null || rng.Next(5) == 0)
        {
            text = Encoding.UTF8.GetString(seedJson);
        }
        else
        {
            int rounds = 1 + (rng.Next(3) == 0 ? rng.Next(6) : 0);
            for (int i = 0; i < rounds && root is not null; i++) root = MutateTree(rng, root);
            text = root is null ? "null" : Serialize(root, rng.Next(2) == 0);
        }
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        if (rng.Next(3) == 0) bytes = Mutator.Mutate(rng, new Seed(bytes), pool, rounds: 1 + rng.Next(3));
        return bytes;
    }

    private static JsonNode? MutateTree(Random rng, JsonNode root)
    {
        var nodes = new List<JsonNode>();
        Collect(root, nodes);
        var node = nodes[rng.Next(nodes.Count)];
        var parent = node.Parent;
        switch (rng.Next(9))
        {
            case 0: case 1: case 2: // replace a value
                if (parent is null) return JsonNode.Parse(InterestingJson[rng.Next(InterestingJson.Length)]);
                Replace(node, JsonNode.Parse(InterestingJson[rng.Next(InterestingJson.Length)]));
                break;
            case 3: // delete a property or element
                if (parent is JsonObject po) po.Remove(node.GetPropertyName());
                else if (parent is JsonArray pa) pa.RemoveAt(node.GetElementIndex());
                break;
            case 4: // duplicate a property (same name, another value) or an element
                if (parent is JsonObject dupParent)
                {
                    string name = node.GetPropertyName();
                    var value = rng.Next(2) == 0 ? JsonNode.Parse(InterestingJson[rng.Next(InterestingJson.Length)]) : node.DeepClone();
                    string key = DuplicateMarker + name;
                    for (int i = 0; dupParent.ContainsKey(key); i++) key = DuplicateMarker + i + DuplicateMarker + name;
                    dupParent[key] = value;
                }
                else if (parent is JsonArray dupArray) dupArray.Add(node.DeepClone());
                break;
            case 5: // rename a property: case change, unknown name, or empty
                if (parent is JsonObject renameParent)
                {
                    string name = node.GetPropertyName();
                    string renamed = rng.Next(3) switch
                    {
                        0 => name.Length > 0 ? char.ToUpperInvariant(name[0]) + name[1..] : "x",
                        1 => name + "X",
                        _ => "",
                    };
                    if (renameParent.ContainsKey(renamed)) break;
                    renameParent.Remove(name);
                    renameParent[renamed] = node;
                }
                break;
            case 6: // change characters of a string / digits of a number
                if (node is JsonValue v)
                {
                    string raw = v.ToJsonString();
                    if (raw.Length > 2)
                    {
                        var chars = raw.ToCharArray();
                        int at = 1 + rng.Next(chars.Length - 2);
                        chars[at] = rng.Next(3) switch
                        {
                            0 => "0123456789abcdef"[rng.Next(16)],
                            1 => (char)(chars[at] ^ 0x20),
                            _ => (char)rng.Next(0x20, 0x7F),
                        };
                        try
                        {
                            Replace(node, JsonNode.Parse(new string(chars)));
                        }
                        catch (JsonException)
                        {
                        }
                    }
                }
                break;
            case 7: // very long string or deep nesting
                if (parent is not null)
                    Replace(node, rng.Next(2) == 0 ? JsonValue.Create(new string('a', 1 + rng.Next(70000))) : Nest(rng.Next(200)));
                break;
            default: // swap with another node's value
            {
                var other = nodes[rng.Next(nodes.Count)];
                if (parent is not null && !IsAncestor(node, other) && !IsAncestor(other, node)) Replace(node, other.DeepClone());
                break;
            }
        }
        return root;
    }

    private static JsonNode Nest(int depth)
    {
        JsonNode node = new JsonArray();
        for (int i = 0; i < depth; i++) node = new JsonArray(node);
        return node;
    }

    private static bool IsAncestor(JsonNode a, JsonNode b)
    {
        for (var p = b.Parent; p is not null; p = p.Parent) if (ReferenceEquals(p, a)) return true;
        return false;
    }

    private static void Replace(JsonNode node, JsonNode? value)
    {
        switch (node.Parent)
        {
            case JsonObject o: o[node.GetPropertyName()] = value; break;
            case JsonArray a: a[node.GetElementIndex()] = value; break;
        }
    }

    private static void Collect(JsonNode node, List<JsonNode> nodes)
    {
        nodes.Add(node);
        switch (node)
        {
            case JsonObject o: foreach (var (_, child) in o) if (child is not null) Collect(child, nodes); break;
            case JsonArray a: foreach (var child in a) if (child is not null) Collect(child, nodes); break;
        }
    }

    private static string Serialize(JsonNode root, bool indented)
    {
        string text = root.ToJsonString(new JsonSerializerOptions { MaxDepth = 4096, WriteIndented = indented, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        // Duplicated properties were stored under a marked name; unmark them (a JsonObject cannot hold two equal names).
        text = System.Text.RegularExpressions.Regex.Replace(text, @"""(\\u0001dup\\u0001(\d+\\u0001dup\\u0001)?)", "\"");
        return text.Replace("@@lone-surrogate@@", "\\ud800"); // JsonNode cannot hold one
    }
}
