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
}
