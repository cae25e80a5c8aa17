using System.Diagnostics;
using Npgsql;

namespace Isr.Storage.Tests.Services;

/// <summary>
/// One throwaway PostgreSQL 15 for the whole test run, started by the project's own <c>scripts/services/postgres.sh</c>;
/// every test gets a fresh database in it. Without PostgreSQL the tests are skipped with a loud message — or fail
/// under <c>ISR_REQUIRE_SERVICES=1</c> (CI), where nothing may be skipped.
/// </summary>
public sealed class PostgresServer : IDisposable
{
    private readonly string? _dir;
    private readonly string? _admin;
    private readonly string? _unavailable;
    private int _databases;

    public PostgresServer()
    {
        var script = Path.Combine(RepositoryRoot(), "scripts", "services", "postgres.sh");
        var bin = Environment.GetEnvironmentVariable("ISR_PG_BIN") ?? "/usr/lib/postgresql/15/bin";
        if (!File.Exists(Path.Combine(bin, "pg_ctl")))
        {
            _unavailable = $"PostgreSQL 15 is not installed ({bin}/pg_ctl missing; scripts/install-deps.sh installs postgresql-15)";
            return;
        }
        _dir = Directory.CreateTempSubdirectory("isr-pg-").FullName;
        var (code, output) = Run(script, "start", _dir);
        if (code != 0) throw new InvalidOperationException($"postgres.sh start failed ({code}): {output}");
        _admin = File.ReadAllText(Path.Combine(_dir, "connection")).Trim();
    }

    /// <summary>Skips (or, under ISR_REQUIRE_SERVICES=1, fails) the calling test when PostgreSQL is not here.</summary>
    public void Require()
    {
        if (_unavailable is null) return;
        var message = $"SKIPPED — REAL POSTGRESQL MISSING: {_unavailable}";
        if (Environment.GetEnvironmentVariable("ISR_REQUIRE_SERVICES") == "1")
            throw new InvalidOperationException($"{_unavailable}; ISR_REQUIRE_SERVICES=1 forbids skipping");
        Console.Error.WriteLine(message);
        throw new SkipException(message);
    }

    /// <summary>A connection string to a new, empty database.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        Require();
        var name = $"isr_test_{Environment.ProcessId}_{Interlocked.Increment(ref _databases)}";
        await using (var admin = new NpgsqlConnection(_admin))
        {
            await admin.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {name}", admin);
            await create.ExecuteNonQueryAsync();
        }
        return new NpgsqlConnectionStringBuilder(_admin) { Database = name }.ToString();
    }

    /// <summary>The files that hold the database's rows and the server's write-ahead log, after a checkpoint has
    /// written everything out.</summary>
    public async Task<IReadOnlyList<string>> DatabaseFilesAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        async Task<string> Scalar(string sql)
        {
            await using var cmd = new NpgsqlCommand(sql, connection);
            return Convert.ToString(await cmd.ExecuteScalarAsync())!;
        }
        await Scalar("CHECKPOINT");
        var root = await Scalar("SHOW data_directory");
        var oid = await Scalar("SELECT oid FROM pg_database WHERE datname = current_database()");
        return [.. Directory.EnumerateFiles(Path.Combine(root, "base", oid)), .. Directory.EnumerateFiles(Path.Combine(root, "pg_wal"))];
    }

    public void Dispose()
    {
        if (_dir is null) return;
        NpgsqlConnection.ClearAllPools();
        Run(Path.Combine(RepositoryRoot(), "scripts", "services", "postgres.sh"), "stop", _dir);
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static (int Code, string Output) Run(string script, params string[] args)
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(script);
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{script} {string.Join(' ', args)} did not finish");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "scripts", "services", "postgres.sh"))) return dir.FullName;
        throw new FileNotFoundException("scripts/services/postgres.sh not found above the test assembly");
    }
}

/// <summary>Test classes that use the shared PostgreSQL server (one per run).</summary>
[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresServer>
{
    public const string Name = "postgres";
}
