using Isr.Storage;
using Isr.Storage.S3;

namespace Isr.Server.Tests;

/// <summary>Parsing of <c>--chunks</c>: the one place that turns a URL into a chunk store.</summary>
public sealed class ChunkStoreUrlTests
{
    private static readonly Func<string, string?> Keys = name => name switch
    {
        "AWS_ACCESS_KEY_ID" => "env-access", "AWS_SECRET_ACCESS_KEY" => "env-secret", _ => null,
    };
    private static readonly Func<string, string?> NoKeys = _ => null;

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("  ")]
    public void Empty_means_the_data_directory(string? url)
    {
        var parsed = ChunkStoreUrl.Parse(url, NoKeys);
        Assert.Null(parsed.S3);
        using var dir = new TempDir();
        var store = Assert.IsType<DirectoryChunkStore>(parsed.Open(dir.Path));
        Assert.Equal(DataLayout.Chunks(dir.Path), store.Root);
    }

    [Fact]
    public void An_s3_url_names_bucket_prefix_endpoint_and_takes_keys_from_the_environment()
    {
        var s3 = ChunkStoreUrl.Parse("s3://isr-chunks/site/a?endpoint=http%3A%2F%2F127.0.0.1%3A7480&region=eu-west-1&concurrency=8", Keys).S3!;
        Assert.Equal("isr-chunks", s3.Bucket);
        Assert.Equal("site/a/", s3.Prefix);
        Assert.Equal(new Uri("http://127.0.0.1:7480"), s3.Endpoint);
        Assert.Equal("eu-west-1", s3.Region);
        Assert.Equal(8, s3.Concurrency);
        Assert.Equal(("env-access", "env-secret"), (s3.AccessKey, s3.SecretKey));
        Assert.Equal("chunks/", ChunkStoreUrl.Parse("s3://isr-chunks?endpoint=http://h:1", Keys).S3!.Prefix);
    }

    [Fact]
    public void Keys_in_the_url_win_and_are_never_shown()
    {
        var parsed = ChunkStoreUrl.Parse("s3://isr-chunks?endpoint=http://h:1&access_key=url-access&secret_key=url-secret", Keys);
        Assert.Equal(("url-access", "url-secret"), (parsed.S3!.AccessKey, parsed.S3.SecretKey));
        using var store = Assert.IsType<S3ChunkStore>(parsed.Open(""));
        foreach (var shown in new[] { parsed.ToString(), parsed.S3.ToString(), store.ToString() })
        {
            Assert.DoesNotContain("url-secret", shown);
            Assert.DoesNotContain("url-access", shown);
        }
        Assert.Equal("s3://isr-chunks at http://h:1/", parsed.ToString());
    }

    [Theory]
    [InlineData("/srv/chunks", "s3://BUCKET")]
    [InlineData("file:///srv/chunks", "s3://BUCKET")]
    [InlineData("s3://ab?endpoint=http://h:1", "not an S3 bucket name")]
    [InlineData("s3://Upper?endpoint=http://h:1", "not an S3 bucket name")]
    [InlineData("s3://isr-chunks?endpoint=ftp://h:1", "http:// or https://")]
    [InlineData("s3://isr-chunks?endpoint=http://h:1&secret=x", "unknown parameter 'secret'")]
    [InlineData("s3://isr-chunks?endpoint=http://h:1&concurrency=0", "concurrency")]
    public void Bad_urls_are_refused_with_the_reason(string url, string reason)
    {
        var e = Assert.Throws<ArgumentException>(() => ChunkStoreUrl.Parse(url, Keys));
        Assert.Contains(reason, e.Message);
    }

    [Fact]
    public void An_s3_url_without_credentials_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => ChunkStoreUrl.Parse("s3://isr-chunks?endpoint=http://h:1", NoKeys));
        Assert.Contains("AWS_ACCESS_KEY_ID", e.Message);
    }
}
