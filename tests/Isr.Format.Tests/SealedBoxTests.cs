using System.Text;
using Isr.Format;

namespace Isr.Format.Tests;

public class SealedBoxTests
{
    private static readonly byte[] Key = TestData.Secret(40);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(1000)]
    public void RoundTrip(int length)
    {
        var plaintext = TestData.Random(length, length);
        var box = SealedBox.Seal(Key, plaintext, "test context");
        Assert.Equal(length + SealedBox.Overhead, box.Length);
        Assert.Equal(plaintext, SealedBox.Open(Key, box, "test context"));
    }

    [Fact]
    public void RoundTripWithExtraAad()
    {
        var plaintext = TestData.Random(100, 1);
        var box = SealedBox.Seal(Key, plaintext, "ctx", "extra"u8);
        Assert.Equal(plaintext, SealedBox.Open(Key, box, "ctx", "extra"u8));
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, box, "ctx", "extrb"u8));
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, box, "ctx"));
    }

    [Fact]
    public void SealingTwiceGivesDifferentBoxes()
    {
        var plaintext = TestData.Random(100, 2);
        Assert.NotEqual(SealedBox.Seal(Key, plaintext, "ctx"), SealedBox.Seal(Key, plaintext, "ctx"));
    }

    [Fact]
    public void CiphertextHidesPlaintext()
    {
        var plaintext = Encoding.ASCII.GetBytes("a secret key that must never rest in plaintext");
        var box = SealedBox.Seal(Key, plaintext, "ctx");
        Assert.Equal(-1, box.AsSpan().IndexOf("secret key"u8));
    }

    [Fact]
    public void WrongKeyIsRejected()
    {
        var box = SealedBox.Seal(Key, TestData.Random(100, 3), "ctx");
        var e = Assert.Throws<MalformedDataException>(() => SealedBox.Open(TestData.Secret(41), box, "ctx"));
        Assert.Contains("ctx", e.Message);
    }

    [Fact]
    public void WrongContextIsRejected()
    {
        var box = SealedBox.Seal(Key, TestData.Random(100, 4), "isr user secrets v1");
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, box, "isr parcel key v1"));
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, box, "isr user secrets v2"));
    }

    [Fact]
    public void ContextAndExtraAadCannotBeShifted()
    {
        // "ab" + extra "c" must not authenticate as "a" + extra "bc".
        var box = SealedBox.Seal(Key, TestData.Random(10, 5), "ab", "c"u8);
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, box, "a", "bc"u8));
    }

    [Fact]
    public void EveryAlteredByteIsRejected()
    {
        var box = SealedBox.Seal(Key, TestData.Random(40, 6), "ctx");
        for (int i = 0; i < box.Length; i++)
        {
            var altered = box.ToArray();
            altered[i] ^= 0x01;
            Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, altered, "ctx"));
        }
    }

    [Fact]
    public void TruncatedBoxIsRejected()
    {
        var box = SealedBox.Seal(Key, TestData.Random(40, 7), "ctx");
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, box[..^1], "ctx"));
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, box[..(SealedBox.Overhead - 1)], "ctx"));
        Assert.Throws<MalformedDataException>(() => SealedBox.Open(Key, [], "ctx"));
    }
}
