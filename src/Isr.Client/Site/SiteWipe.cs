namespace Isr.Client.Site;

/// <summary>
/// Removes from a site, after a committed check-in that released the lock, what someone holding the user's password
/// could read here: the parcel's journal, pending commit and saved history; and, once no other parcel has state at the
/// site, the login (its wrapped secrets) and, with <c>wipeCache</c>, the cache. The login and the cache are shared by
/// the site's parcels (blobs are stored by tag and deduplicated), so they go with the last parcel.
/// </summary>
public static class SiteWipe
{
    public sealed record Report(bool ParcelState, bool Login, bool Cache, string[] Kept);

    public static Report Run(SiteDirectory site, string parcel, bool wipeCache)
    {
        var dir = site.ParcelDirectory(parcel);
        bool parcelState = Directory.Exists(dir);
        if (parcelState) Directory.Delete(dir, recursive: true);
        var parcels = Path.Combine(site.Root, "parcels");
        var others = Directory.Exists(parcels) ? Directory.GetDirectories(parcels).Select(Path.GetFileName).ToArray() : [];
        var kept = new List<string>();
        bool login = false, cache = false;
        if (others.Length > 0)
        {
            kept.Add($"the login and the cache: parcels {string.Join(", ", others)} still have state at this site");
        }
        else
        {
            login = site.Login is not null;
            site.SaveLogin(null);
            if (wipeCache)
            {
                // Every blob and half-written file; the directory itself stays, as the running daemon's stores expect it.
                foreach (var file in Directory.EnumerateFiles(site.Cache.Root, "*", SearchOption.AllDirectories)) File.Delete(file);
                cache = true;
            }
        }
        return new Report(parcelState, login, cache, kept.ToArray());
    }
}
