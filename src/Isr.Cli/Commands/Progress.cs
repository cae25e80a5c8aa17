using System.CommandLine;
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
}
