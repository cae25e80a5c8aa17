using Isr.Client.Site;

namespace Isr.Client.Homes;

/// <summary>
/// Which home a command means: a store directory when one is named (portable or local parcels), else the server this
/// site is logged in to, else the store this site used last.
/// </summary>
public static class HomeLocator
{
    public static IParcelHome Open(SiteDirectory site, string? store)
    {
        if (store is { Length: > 0 }) return new DirectoryParcelHome(store);
        if (site.Login is { } login) return new ServerParcelHome(login);
        if (site.LastStore is { Length: > 0 } last) return new DirectoryParcelHome(last);
        throw new ArgumentException("no parcel home: log in to a server with 'isr login', or name a store with --store DIR (or ISR_STORE)");
    }
}
