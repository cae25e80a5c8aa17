using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;

namespace Isr.Client.Daemon;

/// <summary>What `isr status` shows of a check-in the daemon runs after the CLI returned (`isr checkin --background`).</summary>
public sealed record CheckinProgress(string Parcel, string State, long BytesSent, long? BytesTotal, CheckinResult? Result, string? Error)
{
    /// <summary>Committed on the server and the lock released: the user may leave the site.</summary>
    public bool SafeToLeave => State == "committed" && Result is { LockReleased: true };
}

/// <summary>One check-in running inside the daemon; keeps its last state after it ends so `isr status` can report it.</summary>
internal sealed class BackgroundCheckin
{
    private long _sent;
    private long _total = -1;
    private volatile string _state = "uploading";
    private CheckinResult? _result;
    private string? _error;

    public string Parcel { get; }
    public Task Completion { get; }
    public bool Running => !Completion.IsCompleted;

    public BackgroundCheckin(SiteDirectory site, IParcelHome home, string parcel, Action<string> log, CancellationToken ct)
    {
        Parcel = parcel;
        Completion = Task.Run(async () =>
        {
            try
            {
                _result = await Checkin.RunAsync(site, home, parcel, releaseLock: true, new InlineProgress<long>(b => Interlocked.Exchange(ref _sent, b)), ct,
                    onTotal: t => Interlocked.Exchange(ref _total, t));
                _state = "committed";
            }
            catch (Exception e)
            {
                log($"background checkin {parcel}: {e}");
                _error = e.Message;
                _state = "failed";
            }
        }, CancellationToken.None);
    }

    public CheckinProgress Snapshot()
    {
        long total = Interlocked.Read(ref _total);
        return new CheckinProgress(Parcel, _state, Interlocked.Read(ref _sent), total < 0 ? null : total, _result, _error);
    }
}
