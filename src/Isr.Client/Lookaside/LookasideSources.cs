using Isr.Client.Site;
using Isr.Format;

namespace Isr.Client.Lookaside;

/// <summary>
/// Turns what the user names (`isr resume --lookaside SRC`, or a line of ISR_HOME/lookaside) into sources:
/// <c>http://…</c> or <c>https://…</c> a jukebox; a directory with isr-dongle.json a dongle; a file or directory
/// indexed with `isr lookaside index` read-only media. A source that cannot be opened is reported and left out: a
/// lookaside is only ever a hint, so it never stops a resume.
/// </summary>
public static class LookasideSources
{
    /// <summary>The site's configured sources: ISR_HOME/lookaside, one per line ('#' starts a comment).</summary>
    public static string ConfigPath(SiteDirectory site) => Path.Combine(site.Root, "lookaside");

    public static IReadOnlyList<string> Configured(SiteDirectory site) =>
        File.Exists(ConfigPath(site))
            ? File.ReadAllLines(ConfigPath(site)).Select(l => l.Split('#', 2)[0].Trim()).Where(l => l.Length > 0).ToList()
            : [];

    public static void Configure(SiteDirectory site, IEnumerable<string> sources) =>
        Durable.WriteFileAtomically(ConfigPath(site), System.Text.Encoding.UTF8.GetBytes(string.Concat(sources.Distinct().Select(s => s + "\n"))));

    /// <param name="readToken">With a server home: asks it for a read token, which jukeboxes pass on to fetch their misses from it.</param>
    public static LookasideChain Open(IEnumerable<string> specs, SiteDirectory site, UserSecrets secrets, ChunkCodec codec, Action<string> warn,
        LookasideOptions? options = null, Func<CancellationToken, Task<string>>? readToken = null)
    {
        var sources = new List<ILookasideSource>();
        foreach (var spec in specs.Distinct())
        {
            try { sources.Add(OpenOne(spec, site, secrets, codec, readToken)); }
            catch (Exception e) when (e is IOException or InvalidDataException or MalformedDataException or UriFormatException or UnauthorizedAccessException)
            {
                warn($"lookaside {spec} left out: {e.Message}");
            }
        }
        return new LookasideChain(sources, options);
    }

    private static ILookasideSource OpenOne(string spec, SiteDirectory site, UserSecrets secrets, ChunkCodec codec,
        Func<CancellationToken, Task<string>>? readToken)
    {
        if (spec.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || spec.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            return new JukeboxSource(new Uri(spec), readToken);
        if (Dongle.IsDongle(spec)) return new DongleSource(Dongle.Open(spec));
        var indexFile = MediaIndex.SitePath(site, spec);
        if (File.Exists(indexFile)) return new MediaSource(spec, MediaIndex.Open(File.ReadAllBytes(indexFile), secrets), codec);
        throw new FileNotFoundException(File.Exists(spec) || Directory.Exists(spec)
            ? $"{spec} is neither a dongle nor indexed at this site (run 'isr lookaside index {spec}')"
            : $"{spec} does not exist");
    }
}
