using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Isr.Client.Daemon;
using Isr.Client.Homes;
using Isr.Client.Session;
using Isr.Client.Site;
using Isr.Format;
using Isr.Vmm;
using Spectre.Console;

namespace Isr.Cli;

/// <summary>Options and helpers shared by the commands: where state lives, how passwords arrive, how results print, which exit code.</summary>
public static class Cli
{
    public static readonly Option<string?> Store = new("--store")
    {
        Description = "Parcel store directory (the parcel's home); default: ISR_STORE, else the store this site last used",
    };
    public static readonly Option<FileInfo?> PasswordFile = new("--password-file")
    {
        Description = "Read the password from this file (else ISR_PASSWORD, else a prompt)",
    };
    public static readonly Option<bool> Json = new("--json") { Description = "Machine-readable output (progress, if any, as JSON lines on stderr)" };
    public static readonly Argument<string> Parcel = new("PARCEL") { Description = "Parcel name" };

    public static SiteDirectory Site() => new(SiteDirectory.DefaultRoot());

    /// <summary>The store named by --store or ISR_STORE, else the store this parcel was last used from; null means the logged-in server.</summary>
    public static string? StorePath(ParseResult parse, SiteDirectory site, string? parcel) =>
        parse.GetValue(Store) ?? (Environment.GetEnvironmentVariable("ISR_STORE") is { Length: > 0 } env ? env : null)
            ?? (parcel is not null && site.ReadLocal(parcel)?.Store is { Length: > 0 } s ? s : null);

    public static IParcelHome Home(ParseResult parse, SiteDirectory site, string? parcel) =>
        HomeLocator.Open(site, StorePath(parse, site, parcel));

    /// <summary>When this process started: the origin of a resume's or check-in's trace.</summary>
    public static DateTimeOffset ProcessStarted() => System.Diagnostics.Process.GetCurrentProcess().StartTime.ToUniversalTime();

    /// <summary>The password from --password-file or ISR_PASSWORD, without prompting; null if neither is given.</summary>
    public static string? GivenPassword(ParseResult parse) =>
        parse.GetValue(PasswordFile) is { } file ? File.ReadAllText(file.FullName).TrimEnd('\r', '\n')
            : Environment.GetEnvironmentVariable("ISR_PASSWORD") is { Length: > 0 } env ? env : null;

    /// <summary>Sends a request that needs the user's keys: with no password when the site daemon holds them (after
    /// `isr login`), else with the given one or one asked for (once per command: a retried request reuses it).</summary>
    public static async Task<JsonElement?> SendNeedingKeysAsync(ParseResult parse, SiteDirectory site, DaemonRequest request, CancellationToken ct)
    {
        // Under --json as JSON lines, so that a script can act on a step as it happens ("the VM runs").
        void Report(string m)
        {
            if (parse.GetValue(Json)) Commands.Progress.WriteJsonLine("progress", System.Text.Json.Nodes.JsonValue.Create(m));
            else Console.Error.WriteLine($"isr: {m}");
        }
        request = request with { Password = request.Password ?? GivenPassword(parse) ?? _asked };
        try { return await DaemonClient.SendAsync(site, request, Report, ct); }
        catch (DaemonException e) when (e.Kind == nameof(PasswordNeededException) && request.Password is null)
        {
            _asked = Password(parse);
            return await DaemonClient.SendAsync(site, request with { Password = _asked }, Report, ct);
        }
    }

    private static string? _asked;

    public static string Password(ParseResult parse, bool confirm = false)
    {
        if (GivenPassword(parse) is { } given) return given;
        if (Console.IsInputRedirected) throw new UsageException("a password is needed: use --password-file or ISR_PASSWORD when not on a terminal");
        var password = AnsiConsole.Prompt(new TextPrompt<string>("Password:").Secret());
        if (confirm && AnsiConsole.Prompt(new TextPrompt<string>("Repeat password:").Secret()) != password)
            throw new UsageException("the passwords do not match");
        return password;
    }

    /// <summary>The result as one JSON document on stdout under --json, else as the human reads it.</summary>
    public static void Print<T>(ParseResult parse, T result, JsonTypeInfo<T> json, Action human)
    {
        if (parse.GetValue(Json)) Console.WriteLine(JsonSerializer.Serialize(result, json));
        else human();
    }

    public static async Task<int> InvokeAsync(RootCommand root, string[] args)
    {
        try
        {
            return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            var (code, message) = Classify(e);
            Console.Error.WriteLine($"isr: {message}");
            return code;
        }
    }

    private static (int Code, string Message) Classify(Exception e) => e switch
    {
        UsageException or ArgumentException => (2, e.Message),
        WrongPasswordException => (3, e.Message),
        ParcelLockedException => (5, e.Message),
        NotAuthorizedException => (9, e.Message),
        ServerUnreachableException => (8, e.Message),
        ServerException => (1, e.Message),
        ParcelNotFoundException or FileNotFoundException => (4, e.Message),
        CommitConflictException or SiteDaemonRunningException => (5, e.Message),
        SiteCannotRunException or DescriptorMismatchException or QemuNotFoundException => (6, e.Message),
        ChunkIntegrityException or MalformedDataException => (7, e.Message),
        DaemonException d => (d.Kind switch
        {
            nameof(WrongPasswordException) => 3,
            nameof(ParcelNotFoundException) or nameof(FileNotFoundException) => 4,
            nameof(CommitConflictException) or nameof(ParcelLockedException) => 5,
            nameof(ServerUnreachableException) => 8,
            nameof(NotAuthorizedException) => 9,
            nameof(SiteCannotRunException) or nameof(DescriptorMismatchException) or nameof(QemuNotFoundException) => 6,
            nameof(ChunkIntegrityException) or nameof(MalformedDataException) => 7,
            nameof(ArgumentException) or nameof(PasswordNeededException) => 2,
            _ => 1,
        }, e.Message),
        _ => (1, e.Message),
    };

    public static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / (double)(1L << 10):F1} KiB",
        _ => $"{bytes} B",
    };
}

public sealed class UsageException(string message) : Exception(message);
