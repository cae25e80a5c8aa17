namespace Isr.Client.Homes;

/// <summary>
/// Tells the server, every <see cref="Interval"/>, how far this site's check-in is, so that a resume at another site
/// waits for the commit (showing this progress) instead of being refused. The reports double as a heartbeat: they
/// keep coming while the upload is slow or held, and stop when this site dies, which is how the other site tells a
/// live check-in from a lost one. Best effort: a report that fails never fails the check-in.
/// </summary>
public sealed class CheckinReporter : IAsyncDisposable
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    private long _sent;
    private long _total = -1;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public CheckinReporter(ServerParcelHome home, string parcel, string token) =>
        _loop = Task.Run(() => ReportAsync(home, parcel, token));

    public void Sent(long bytes) => Interlocked.Exchange(ref _sent, bytes);
    public void Total(long bytes) => Interlocked.Exchange(ref _total, bytes);

    private async Task ReportAsync(ServerParcelHome home, string parcel, string token)
    {
        using var timer = new PeriodicTimer(Interval);
        do
        {
            long total = Interlocked.Read(ref _total);
            try { await home.ReportCheckinAsync(parcel, token, Interlocked.Read(ref _sent), total < 0 ? null : total, _stop.Token); }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            catch (Exception) { } // an older server, a dropped link: the upload goes on regardless
        } while (await NextAsync(timer));
    }

    private async Task<bool> NextAsync(PeriodicTimer timer)
    {
        try { return await timer.WaitForNextTickAsync(_stop.Token); }
        catch (OperationCanceledException) { return false; }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }
}
