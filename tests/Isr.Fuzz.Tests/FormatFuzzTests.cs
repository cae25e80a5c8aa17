using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;
using Isr.Format;

namespace Isr.Fuzz.Tests;

/// <summary>Keyring pages, version records and chunk blobs: the only outcomes are success or the documented exception,
/// and nothing tampered under authentication is ever accepted.</summary>
public sealed class FormatFuzzTests(ITestOutputHelper output)
{
    private const string KeySectionContext = "isr keyring page v1";

    private sealed record Page(byte[] Bytes, ChunkRef[]? Entries, byte[] Head, byte[]? KeySection);

    private static List<Page> BuildPages(Random rng, ParcelKeys keys)
    {
        var pages = new List<Page>();
        foreach (int count in new[] { 0, 1, 2, 5, 33, 1024 })
        {
            var entries = new ChunkRef[count];
            for (int i = 0; i < count; i++)
            {
                entries[i] = rng.Next(5) == 0
                    ? ChunkRef.Zero(4096)
                    : new ChunkRef(new ChunkTag(new Hash32(Crypto.Bytes(rng, 32))), new ChunkKey(new Hash32(Crypto.Bytes(rng, 32))),
                        rng.Next(4) switch { 0 => 0, 1 => ChunkCodec.MaxPlaintext, _ => rng.Next(1, 1 << 20) });
            }
            long first = (long)rng.Next(1000) * ChunkListTree.LeafCapacity;
            byte[] randomNonce = ChunkListPage.EncodeLeaf(first, entries, keys);
            int headLength = ChunkListPage.HeaderSize + count * Hash32.Size;
            byte[] head = randomNonce[..headLength];
            var keySection = new byte[count * 36];
            for (int i = 0; i < count; i++)
            {
                entries[i].Key.Hash.WriteTo(keySection.AsSpan(i * 36));
                BinaryPrimitives.WriteUInt32LittleEndian(keySection.AsSpan(i * 36 + 32), (uint)entries[i].Length);
            }
            byte[] page = [.. head, .. Crypto.Seal(rng, keys.PageKey, keySection, KeySectionContext, head)];
            Assert.Equal(entries, ChunkListPage.DecodeLeaf(page, keys)); // the deterministic seal is the library's format
            pages.Add(new Page(page, entries, head, keySection));
        }
        foreach (int count in new[] { 1, 3, 64 })
        {
            var children = Enumerable.Range(0, count).Select(_ => new ChunkTag(new Hash32(Crypto.Bytes(rng, 32)))).ToArray();
            byte[] page = ChunkListPage.EncodeInterior(1 + rng.Next(3), (long)rng.Next(100) * ChunkListTree.LeafCapacity * ChunkListTree.Fanout, children);
            pages.Add(new Page(page, null, page, null));
        }
        return pages;
    }

    private static IReadOnlyList<Field> PageFields(byte[] page)
    {
        var fields = new List<Field> { new(8, 8, false), new(16, 4, false), new(4, 1, false), new(5, 1, false), new(6, 1, false), new(7, 1, false) };
        return fields;
    }

    [Fact]
    public void KeyringPage_Parse_and_DecodeLeaf()
    {
        var setup = new Random(FuzzConfig.TargetSeed("keyring-page-seeds"));
        var keys = Crypto.Keys(setup);
        var otherKeys = Crypto.Keys(setup);
        var pages = BuildPages(setup, keys);
        var pool = pages.Select(p => new Seed(p.Bytes, PageFields(p.Bytes))).ToList();
        var originals = new HashSet<string>(pages.Select(p => Convert.ToHexString(p.Bytes)));

        new FuzzRunner(output, "keyring-page").Run((rng, k, ctx) =>
        {
            var page = pages[rng.Next(pages.Count)];
            if (page.KeySection is not null && rng.Next(10) < 3)
                return Resealed(rng, page, keys, pool, ctx);

            byte[] input = Mutator.Mutate(rng, pool[pages.IndexOf(page)], pool);
            ctx.Input = input;
            bool original = originals.Contains(Convert.ToHexString(input));
            ChunkListPage parsed;
            try
            {
                parsed = ChunkListPage.Parse(input);
            }
            catch (MalformedDataException)
            {
                if (original) throw new FuzzFailure("a valid page was rejected by Parse");
                return "Parse: MalformedDataException";
            }
            int headLength = ChunkListPage.HeaderSize + parsed.Tags.Length * Hash32.Size;
            if (headLength > input.Length || parsed.Tags.Length > ChunkListTree.Fanout || parsed.FirstIndex < 0)
                throw new FuzzFailure($"Parse accepted an inconsistent page: {parsed.Tags.Length} tags in {input.Length} bytes, first {parsed.FirstIndex}");
            for (int i = 0; i < parsed.Tags.Length; i++)
                if (parsed.Tags[i] != new ChunkTag(new Hash32(input.AsSpan(ChunkListPage.HeaderSize + i * 32, 32))))
                    throw new FuzzFailure($"tag {i} does not come from the page bytes");
            bool wrongKeys = rng.Next(20) == 0;
            try
            {
                _ = ChunkListPage.DecodeLeaf(input, wrongKeys ? otherKeys : keys);
                if (!original) throw new FuzzFailure("a tampered leaf page decoded");
                if (wrongKeys) throw new FuzzFailure("a leaf page decoded under another parcel's keys");
                if (!parsed.IsLeaf) throw new FuzzFailure("an interior page decoded as a leaf");
                return "Parse ok, DecodeLeaf ok (unmodified)";
            }
            catch (MalformedDataException)
            {
                if (original && parsed.IsLeaf && !wrongKeys) throw new FuzzFailure("a valid leaf page was rejected by DecodeLeaf");
                return parsed.IsLeaf ? "Parse ok, DecodeLeaf: MalformedDataException" : "Parse ok (interior), DecodeLeaf: MalformedDataException";
            }
        });
    }

    /// <summary>Past the AEAD: a key section (and head) altered before sealing with the real key, as a buggy writer could produce.</summary>
    private static string Resealed(Random rng, Page page, ParcelKeys keys, List<Seed> pool, FuzzRunner.CaseContext ctx)
    {
        byte[] head = rng.Next(3) == 0 ? Mutator.Mutate(rng, new Seed(page.Head, PageFields(page.Head)), pool, rounds: 1) : page.Head;
        var keySectionFields = Enumerable.Range(0, page.Entries!.Length).Select(i => new Field(i * 36 + 32, 4, false)).ToList();
        byte[] keySection = Mutator.Mutate(rng, new Seed(page.KeySection!, keySectionFields), [new Seed(page.KeySection!)], rounds: 1 + rng.Next(3));
        byte[] input = [.. head, .. Crypto.Seal(rng, keys.PageKey, keySection, KeySectionContext, head)];
        ctx.Input = input;
        ctx.Note = "resealed key section";
        ChunkRef[] entries;
        try
        {
            entries = ChunkListPage.DecodeLeaf(input, keys);
        }
        catch (MalformedDataException)
        {
            return "resealed: MalformedDataException";
        }
        var parsed = ChunkListPage.Parse(input);
        if (entries.Length != parsed.Tags.Length) throw new FuzzFailure($"{entries.Length} entries for {parsed.Tags.Length} tags");
        foreach (var e in entries)
            if (e.Length < 0 || e.Length > ChunkCodec.MaxPlaintext)
                throw new FuzzFailure($"DecodeLeaf accepted an entry of length {e.Length} (must be 0..{ChunkCodec.MaxPlaintext})");
        return "resealed: decoded";
    }

    // ---------------------------------------------------------------- version records

    private static List<VersionRecord> BuildRecords(Random rng, ParcelKeys keys, string parcelId)
    {
        string Tag() => Convert.ToHexStringLower(Crypto.Bytes(rng, 32));
        var records = new List<VersionRecord>();
        string parentMac = "";
        for (int i = 0; i < 6; i++)
        {
            var created = new DateTimeOffset(2020, 1, 1, 0, 0, 0, TimeSpan.Zero).AddTicks(rng.NextInt64(TimeSpan.TicksPerDay * 3650));
            if (i % 3 == 1) created = created.ToOffset(TimeSpan.FromHours(rng.Next(-12, 13)));
            var record = new VersionRecord
            {
                ParcelId = parcelId,
                CommitId = i == 0 ? "" : Convert.ToHexStringLower(Crypto.Bytes(rng, 16)),
                ParentMac = parentMac,
                Number = i + 1,
                Parent = i == 0 ? null : i,
                Side = i == 4,
                Created = created,
                ChunkSize = 1 << rng.Next(12, 22),
                DiskSize = rng.NextInt64(1L << 40),
                DiskRoot = i == 5 ? new string('0', 64) : Tag(),
                MemoryRoot = i % 2 == 0 ? "" : Tag(),
                MemoryChunks = i % 2 == 0 ? 0 : rng.Next(1, 100000),
                MemoryBytes = i % 2 == 0 ? 0 : rng.NextInt64(1L << 34),
                DescriptorTag = Tag(),
            }.Sign(keys);
            if (i == 3)
            {
                // an optional field, added through JSON so that the test does not depend on it existing
                var node = System.Text.Json.Nodes.JsonNode.Parse(record.ToJson())!.AsObject();
                node["workingSetTag"] = Tag();
                record = VersionRecord.FromJson(System.Text.Encoding.UTF8.GetBytes(node.ToJsonString())).Sign(keys);
            }
            record.Verify(keys, parcelId);
            records.Add(record);
            parentMac = record.Mac;
        }
        return records;
    }

    /// <summary>Everything the MAC covers, in the MAC's own terms (Created to the millisecond).</summary>
    private static string Signed(VersionRecord r) =>
        string.Join("|", r.Format, r.ParcelId, r.CommitId, r.ParentMac, r.Created.ToUnixTimeMilliseconds(), r.ChunkSize, r.DiskSize,
            r.DiskRoot, r.MemoryRoot, r.MemoryChunks, r.MemoryBytes, r.DescriptorTag, OptionalSigned(r, "WorkingSetTag"));

    /// <summary>Optional signed fields (read by name: they are newer than this test); null and empty mean "none".</summary>
    private static string OptionalSigned(VersionRecord r, string property) =>
        typeof(VersionRecord).GetProperty(property)?.GetValue(r) as string ?? "";

    [Fact]
    public void VersionRecord_FromJson_and_Verify()
    {
        var setup = new Random(FuzzConfig.TargetSeed("version-record-seeds"));
        var keys = Crypto.Keys(setup);
        var otherKeys = Crypto.Keys(setup);
        const string parcelId = "0123456789abcdef0123456789abcdef";
        var records = BuildRecords(setup, keys, parcelId);
        var seeds = new List<Seed>();
        foreach (var r in records)
        {
            seeds.Add(new Seed(r.ToJson()));
            seeds.Add(new Seed(JsonSerializer.SerializeToUtf8Bytes(JsonDocument.Parse(r.ToJson()).RootElement))); // compact
        }
        var signed = records.Select(Signed).ToHashSet();
        long subMillisecondAccepted = 0;

        new FuzzRunner(output, "version-record").Run((rng, k, ctx) =>
        {
            var seed = seeds[rng.Next(seeds.Count)];
            byte[] input = rng.Next(4) == 0 ? Mutator.Mutate(rng, seed, seeds) : JsonMutator.Mutate(rng, seed.Data, seeds);
            ctx.Input = input;
            VersionRecord record;
            try
            {
                record = VersionRecord.FromJson(input);
            }
            catch (MalformedDataException)
            {
                return "FromJson: MalformedDataException";
            }
            if (record is null) throw new FuzzFailure("FromJson returned null");
            bool wrongKeys = rng.Next(10) == 0;
            string wantedParcel = rng.Next(10) == 0 ? parcelId + "x" : parcelId;
            try
            {
                record.Verify(wrongKeys ? otherKeys : keys, wantedParcel);
            }
            catch (MalformedDataException)
            {
                return "FromJson ok, Verify: MalformedDataException";
            }
            if (wrongKeys) throw new FuzzFailure("a record verified under another parcel's keys");
            if (wantedParcel != parcelId) throw new FuzzFailure("a record verified for another parcel id");
            if (!signed.Contains(Signed(record)))
                throw new FuzzFailure($"a record with altered signed fields verified: {Signed(record)}");
            // A verified record is one of ours; its derived values must work.
            _ = record.RootTags().ToList();
            _ = record.DiskChunks;
            var same = records.First(r => Signed(r) == Signed(record));
            if (record.Created != same.Created || record.Created.Offset != same.Created.Offset)
            {
                Interlocked.Increment(ref subMillisecondAccepted);
                return "verified with Created altered below a millisecond or in its offset only (outside the MAC's precision)";
            }
            return "FromJson ok, Verify ok (signed fields unaltered)";
        });
        output.WriteLine($"[version-record] records that verified with a Created differing from the signed one only below the millisecond/offset: {subMillisecondAccepted}");
    }

    // ---------------------------------------------------------------- chunk blobs

    [Fact]
    public void ChunkCodec_Decode()
    {
        var setup = new Random(FuzzConfig.TargetSeed("chunk-codec-seeds"));
        var codec = new ChunkCodec(Crypto.Bytes(setup, 32));
        var chunks = new List<(ChunkRef Ref, byte[] Blob, byte[] Plain)>();
        foreach (int size in new[] { 1, 17, 512, 4096, 65536 })
        {
            for (int kind = 0; kind < 3; kind++)
            {
                var plain = new byte[size];
                if (kind == 0) setup.NextBytes(plain); // incompressible: stored
                else if (kind == 1) for (int i = 0; i < size; i++) plain[i] = (byte)"isr chunk text "[i % 15]; // compressible
                else { setup.NextBytes(plain.AsSpan(0, size / 3)); } // mixed
                if (ChunkCodec.IsAllZero(plain)) plain[0] = 1;
                var (r, blob) = codec.Encode(plain);
                chunks.Add((r, blob, plain));
            }
        }
        var pool = chunks.Select(c => new Seed(c.Blob, [new Field(2, 4, false), new Field(0, 1, false), new Field(1, 1, false)])).ToList();

        new FuzzRunner(output, "chunk-codec").Run((rng, k, ctx) =>
        {
            int which = rng.Next(chunks.Count);
            var (chunk, blob, plain) = chunks[which];
            int mode = rng.Next(10);
            byte[] input;
            ChunkRef asked = chunk;
            if (mode < 7)
            {
                input = Mutator.Mutate(rng, pool[which], pool, maxLength: 1 << 18);
                if (mode >= 3)
                {
                    // a blob that matches the tag it is fetched by (the keyring names this tag), with the old key
                    int length = rng.Next(3) switch
                    {
                        0 => chunk.Length,
                        1 => input.Length >= 6 ? (int)BinaryPrimitives.ReadUInt32LittleEndian(input.AsSpan(2)) : chunk.Length,
                        _ => rng.Next(-2, 1 << 17),
                    };
                    asked = new ChunkRef(ChunkTag.Of(input), chunk.Key, length);
                }
                ctx.Note = mode < 3 ? "original ref" : $"ref with the blob's tag, length {asked.Length}";
            }
            else
            {
                // past the AEAD: header and body altered before encryption under the chunk's real key
                input = Reencrypted(rng, blob, chunk, plain, pool, out int length);
                asked = new ChunkRef(ChunkTag.Of(input), chunk.Key, length);
                ctx.Note = $"re-encrypted under the real key, ref length {length}";
            }
            ctx.Input = input;
            var destination = new byte[rng.Next(4) switch { 0 => Math.Clamp(asked.Length, 0, 1 << 20), 1 => plain.Length, 2 => rng.Next(1 << 17), _ => (1 << 17) + 7 }];
            int written;
            try
            {
                written = codec.Decode(input, asked, destination);
            }
            catch (ChunkIntegrityException)
            {
                return $"ChunkIntegrityException ({(mode < 3 ? "original ref" : mode < 7 ? "matching tag" : "re-encrypted")})";
            }
            if (!input.AsSpan().SequenceEqual(blob) && mode < 7) throw new FuzzFailure("a tampered blob decoded");
            if (written != plain.Length || !destination.AsSpan(0, written).SequenceEqual(plain))
                throw new FuzzFailure($"decoded {written} bytes that are not the chunk's plaintext");
            return "decoded (unmodified content)";
        });
    }

    /// <summary>Rebuilds a blob like ChunkCodec.Encode (AES-256-GCM, zero nonce, header as aad) from a mutated header and body.</summary>
    private static byte[] Reencrypted(Random rng, byte[] blob, ChunkRef chunk, byte[] plain, List<Seed> pool, out int refLength)
    {
        var header = blob[..ChunkCodec.HeaderSize];
        var key = chunk.Key.Hash.ToArray();
        var body = new byte[blob.Length - ChunkCodec.HeaderSize - ChunkCodec.GcmTagSize];
        using (var aes = new AesGcm(key, 16))
            aes.Decrypt(new byte[12], blob.AsSpan(ChunkCodec.HeaderSize, body.Length), blob.AsSpan(blob.Length - 16), body, header);
        if (rng.Next(2) == 0) header = Mutator.Mutate(rng, new Seed(header, [new Field(2, 4, false), new Field(1, 1, false)]), pool, rounds: 1);
        if (header.Length != ChunkCodec.HeaderSize) Array.Resize(ref header, ChunkCodec.HeaderSize);
        if (rng.Next(3) != 0) body = Mutator.Mutate(rng, new Seed(body), [new Seed(body)], maxLength: 1 << 18);
        var output = new byte[ChunkCodec.HeaderSize + body.Length + 16];
        header.CopyTo(output, 0);
        using (var aes = new AesGcm(key, 16))
            aes.Encrypt(new byte[12], body, output.AsSpan(ChunkCodec.HeaderSize, body.Length), output.AsSpan(output.Length - 16), header);
        refLength = rng.Next(2) == 0 ? (int)BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(2)) : plain.Length;
        return output;
    }
}
