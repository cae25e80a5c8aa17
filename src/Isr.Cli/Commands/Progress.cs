using System.Buffers;
using System.CommandLine;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Isr.Client.Session;
using Spectre.Console;

namespace Isr.Cli.Commands;

/// <summary>A progress bar on a terminal; nothing when output is redirected or --json is given.</summary>
public static class Progress
{
    public static async Task<T> RunAsync<T>(ParseResult parse, string description, Func<IProgress<double>, Task<T>> work)
    {
        if (parse.GetValue(Cli.Json) || Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
            return await work(new Progress<double>());
        T result = default!;
        await AnsiConsole.Progress().AutoClear(true).StartAsync(async context =>
        {
            var task = context.AddTask(description, maxValue: 1.0);
            result = await work(new Progress<double>(v => task.Value = v));
            task.Value = 1.0;
        });
        return result;
    }

    /// <summary>For work whose total is not known up front (an upload asks the home what is missing first): a spinner and bytes so far.</summary>
    public static async Task<T> RunBytesAsync<T>(ParseResult parse, string description, Func<IProgress<long>, Task<T>> work)
    {
        if (parse.GetValue(Cli.Json) || Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
            return await work(new Progress<long>());
        T result = default!;
        await AnsiConsole.Progress().AutoClear(true).StartAsync(async context =>
        {
            var task = context.AddTask(description).IsIndeterminate();
            result = await work(new Progress<long>(bytes => task.Description = $"{description}: {Cli.Bytes(bytes)} sent"));
            task.Value = task.MaxValue;
        });
        return result;
    }

    /// <summary>A wait on something that reports how far it is. A bar on a terminal (shown from the first report, so a
    /// wait that ends at once shows nothing); otherwise a line on stderr when the words change, or under --json the
    /// report's <see cref="Waiting.Json"/> as a line {"waiting":…} on stderr (stdout keeps the one result).</summary>
    public static async Task WaitAsync(ParseResult parse, Func<IProgress<Waiting>, Task> work)
    {
        if (parse.GetValue(Cli.Json))
        {
            await work(new InlineProgress<Waiting>(w => WriteJsonLine("waiting", w.Json)));
            return;
        }
        if (Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            string? last = null;
            await work(new InlineProgress<Waiting>(w => { if (w.Text != last) Console.Error.WriteLine($"isr: {last = w.Text}"); }));
            return;
        }
        await AnsiConsole.Progress().AutoClear(true).StartAsync(async context =>
        {
            ProgressTask? task = null;
            await work(new InlineProgress<Waiting>(w =>
            {
                task ??= context.AddTask(w.Text, maxValue: 1.0);
                task.Description = w.Text;
                task.IsIndeterminate = w.Fraction is null;
                if (w.Fraction is { } f) task.Value = f;
            }));
        });
    }

    /// <summary>One line {"NAME":VALUE} on stderr, what a script reads under --json while a command runs (stdout keeps
    /// the one result). Written around the value rather than as an object's properties, so that a plain string (the
    /// daemon's progress during a resume) costs the CLI no serializer metadata.</summary>
    public static void WriteJsonLine(string name, JsonNode value)
    {
        var line = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(line))
        {
            json.WriteStartObject();
            json.WritePropertyName(name);
            value.WriteTo(json);
            json.WriteEndObject();
        }
        Console.Error.WriteLine(Encoding.UTF8.GetString(line.WrittenSpan));
    }

    public sealed record Waiting(string Text, double? Fraction, JsonObject Json);
}
