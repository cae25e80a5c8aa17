using System.Text.Json;
using System.Text.Json.Serialization;
using Isr.Format;
using Isr.Storage;

namespace Isr.Client.Homes;

/// <summary>
/// A parcel store in a directory: chunks and pages by tag, a key file holding the user's wrapped secrets, and per parcel
/// a parcel record and one file per version. Everything in it is ciphertext or keyless metadata.
/// <code>
/// DIR/store.json                     format, Argon2id parameters, wrapped user secrets
/// DIR/chunks/ab/cd/abcd…             blobs (DirectoryChunkStore)
/// DIR/parcels/NAME/parcel.json       id, chunk size, disk size, wrapped parcel key
/// DIR/parcels/NAME/versions/N.json   version records (authenticated)
/// </code>
/// </summary>
public sealed class DirectoryParcelHome : IParcelHome
{
    private static StoreJsonContext Json => StoreJsonContext.Default;
    private readonly string _root;
    private readonly DirectoryChunkStore _chunks;

    public DirectoryParcelHome(string root)
    {
        _root = Path.GetFullPath(root);
        _chunks = new DirectoryChunkStore(Path.Combine(_root, "chunks"));
    }

    public string Root => _root;
    public string Describe => $"store {_root}";
    public IChunkStore Chunks => _chunks;
    public DirectoryChunkStore ChunkDirectory => _chunks;
    private string KeyFile => Path.Combine(_root, "store.json");
    private string ParcelDir(string name) => Path.Combine(_root, "parcels", ValidName(name));

    public static bool IsInitialized(string root) => File.Exists(Path.Combine(root, "store.json"));

    internal sealed record KeyFileContent(int Format, KdfParameters Kdf, byte[] WrappedSecrets);

    /// <summary>Creates the store's key file: the user's secrets (fresh ones by default) wrapped under the password.</summary>
    public UserSecrets Initialize(string password, UserSecrets? existing = null)
    {
        if (IsInitialized(_root)) throw new InvalidOperationException($"{_root} is already a parcel store");
        var kdf = KdfParameters.CreateDefault();
        var secrets = existing ?? UserSecrets.Generate();
        var keys = PasswordKdf.Derive(password, kdf);
        Durable.WriteFileAtomically(KeyFile, JsonSerializer.SerializeToUtf8Bytes(new KeyFileContent(1, kdf, secrets.Wrap(keys.KeyEncryptionKey)), Json.KeyFileContent));
        return secrets;
    }

    public ValueTask<UserSecrets> UnlockAsync(string password, CancellationToken ct)
    {
        if (!IsInitialized(_root)) throw new ParcelNotFoundException($"{_root} is not a parcel store (no store.json)");
        var content = JsonSerializer.Deserialize(File.ReadAllBytes(KeyFile), Json.KeyFileContent)
            ?? throw new MalformedDataException("store.json is empty");
        var keys = PasswordKdf.Derive(password, content.Kdf);
        try
        {
            return ValueTask.FromResult(UserSecrets.Unwrap(keys.KeyEncryptionKey, content.WrappedSecrets));
        }
        catch (MalformedDataException)
        {
            throw new WrongPasswordException($"wrong password for {Describe}");
        }
    }

    public async ValueTask ChangePasswordAsync(string oldPassword, string newPassword, CancellationToken ct)
    {
        var secrets = await UnlockAsync(oldPassword, ct);
        var kdf = KdfParameters.CreateDefault();
        var keys = PasswordKdf.Derive(newPassword, kdf);
        Durable.WriteFileAtomically(KeyFile, JsonSerializer.SerializeToUtf8Bytes(new KeyFileContent(1, kdf, secrets.Wrap(keys.KeyEncryptionKey)), Json.KeyFileContent));
    }

    public ValueTask<IReadOnlyList<ParcelInfo>> ListParcelsAsync(CancellationToken ct)
    {
        var dir = Path.Combine(_root, "parcels");
        IReadOnlyList<ParcelInfo> parcels = !Directory.Exists(dir) ? [] :
            Directory.EnumerateDirectories(dir).Order().Select(d => Path.Combine(d, "parcel.json")).Where(File.Exists)
                .Select(f => JsonSerializer.Deserialize(File.ReadAllBytes(f), Json.ParcelInfo)!).ToList();
        return ValueTask.FromResult(parcels);
    }

    public ValueTask<ParcelInfo> GetParcelAsync(string name, CancellationToken ct)
    {
        var file = Path.Combine(ParcelDir(name), "parcel.json");
        if (!File.Exists(file)) throw new ParcelNotFoundException($"no parcel named '{name}' in {Describe}");
        return ValueTask.FromResult(JsonSerializer.Deserialize(File.ReadAllBytes(file), Json.ParcelInfo)!);
    }

    public async ValueTask<VersionRecord> CreateParcelAsync(ParcelInfo parcel, VersionRecord first, CancellationToken ct)
    {
        var dir = ParcelDir(parcel.Name);
        if (File.Exists(Path.Combine(dir, "parcel.json"))) throw new CommitConflictException($"parcel '{parcel.Name}' already exists in {Describe}");
        await RequireStoredAsync(first, ct);
        Directory.CreateDirectory(Path.Combine(dir, "versions"));
        var numbered = first with { Number = 1, Parent = null, Side = false };
        WriteVersion(parcel.Name, numbered);
        Durable.WriteFileAtomically(Path.Combine(dir, "parcel.json"), JsonSerializer.SerializeToUtf8Bytes(parcel, Json.ParcelInfo));
        return numbered;
    }

    public ValueTask<IReadOnlyList<VersionRecord>> ListVersionsAsync(string name, CancellationToken ct)
    {
        var dir = Path.Combine(ParcelDir(name), "versions");
        if (!Directory.Exists(dir)) throw new ParcelNotFoundException($"no parcel named '{name}' in {Describe}");
        IReadOnlyList<VersionRecord> versions = Directory.EnumerateFiles(dir, "*.json")
            .Select(f => VersionRecord.FromJson(File.ReadAllBytes(f))).OrderBy(v => v.Number).ToList();
        return ValueTask.FromResult(versions);
    }

    public async ValueTask<VersionRecord> CommitAsync(string name, VersionRecord version, CancellationToken ct)
    {
        var versions = await ListVersionsAsync(name, ct);
        if (versions.FirstOrDefault(v => v.CommitId == version.CommitId && v.CommitId.Length > 0) is { } done) return done;
        var head = versions[^1];
        if (version.ParentMac != head.Mac)
            throw new CommitConflictException($"a new version of '{name}' must follow the head, version {head.Number}");
        await RequireStoredAsync(version, ct);
        var numbered = version with { Number = head.Number + 1, Parent = head.Number, Side = false };
        WriteVersion(name, numbered, replace: false);
        return numbered;
    }

    /// <summary>Refuses a version that references a blob the store does not hold (checked without keys).</summary>
    private async ValueTask RequireStoredAsync(VersionRecord version, CancellationToken ct)
    {
        var pages = new HashSet<ChunkTag>();
        var chunks = new HashSet<ChunkTag>();
        foreach (var root in version.RootTags())
        {
            if (!_chunks.Contains(root)) throw new CommitConflictException($"version {version.Number} references missing blob {root}");
            if (!version.SealedTags().Contains(root)) await ChunkListTree.CollectTagsAsync(root, LoadAsync, pages, chunks, ct);
        }
        var missing = await _chunks.MissingAsync(chunks, ct);
        if (missing.Count > 0) throw new CommitConflictException($"version {version.Number} references {missing.Count} missing chunks, e.g. {missing[0]}");
    }

    private async ValueTask<byte[]> LoadAsync(ChunkTag tag, CancellationToken ct)
    {
        var blob = await _chunks.GetAsync(tag, ct) ?? throw new CommitConflictException($"missing page {tag}");
        if (!tag.Matches(blob)) throw new ChunkIntegrityException($"page {tag} does not match its tag");
        return blob;
    }

    /// <param name="replace">false: a concurrent committer that took this number first wins, and this commit is refused.</param>
    private void WriteVersion(string name, VersionRecord version, bool replace = true)
    {
        try
        {
            Durable.WriteFileAtomically(Path.Combine(ParcelDir(name), "versions", $"{version.Number:D8}.json"), version.ToJson(), replace);
        }
        catch (IOException) when (!replace)
        {
            throw new CommitConflictException($"another commit made version {version.Number} of '{name}' first");
        }
    }

    public const int MaxNameLength = 64;

    /// <summary>Parcel names become directory names: letters, digits, '-', '_', '.', not starting with '.'.</summary>
    public static string ValidName(string name)
    {
        if (name.Length is 0 or > MaxNameLength || name[0] == '.' || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            throw new ArgumentException($"'{name}' is not a valid parcel name (letters, digits, '-', '_', '.'; at most {MaxNameLength})");
        return name;
    }
}

/// <summary>A store directory's own files (store.json, parcel.json), indented for a reader; version records write themselves.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(DirectoryParcelHome.KeyFileContent))]
[JsonSerializable(typeof(ParcelInfo))]
internal sealed partial class StoreJsonContext : JsonSerializerContext;
