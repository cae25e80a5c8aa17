using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Isr.BlockDevice;

/// <summary>
/// A raw image file as a block device (benchmarks, local images). On Linux, holes are found with
/// SEEK_DATA/SEEK_HOLE and trims punch holes, so sparse files stay sparse; elsewhere everything maps as data.
/// </summary>
public sealed class FileBlockDevice : IBlockDevice, IDisposable
{
    private const int SeekData = 3, SeekHole = 4;
    private const int FallocKeepSize = 0x01, FallocPunchHole = 0x02;
    private const int ENXIO = 6;

    private readonly SafeFileHandle _handle;
    private bool _sparseSupported = OperatingSystem.IsLinux();

    public FileBlockDevice(string path, bool readOnly = false, int preferredBlockSize = 64 * 1024)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(preferredBlockSize);
        _handle = File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite,
            FileShare.ReadWrite, FileOptions.Asynchronous);
        Size = RandomAccess.GetLength(_handle);
        PreferredBlockSize = preferredBlockSize;
    }

    public long Size { get; }

    public int PreferredBlockSize { get; }

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        while (buffer.Length > 0)
        {
            int n = await RandomAccess.ReadAsync(_handle, buffer, offset, ct).ConfigureAwait(false);
            if (n == 0)
            {
                buffer.Span.Clear(); // file shrank underneath us: past EOF reads as zeros
                return;
            }
            buffer = buffer[n..];
            offset += n;
        }
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken ct)
    {
        await RandomAccess.WriteAsync(_handle, data, offset, ct).ConfigureAwait(false);
        if (fua) RandomAccess.FlushToDisk(_handle);
    }

    public async ValueTask WriteZeroesAsync(long offset, long length, bool fua, CancellationToken ct)
    {
        if (!TryPunchHole(offset, length))
        {
            byte[] zeros = new byte[(int)Math.Min(length, 1 << 20)];
            for (long done = 0; done < length; done += zeros.Length)
                await RandomAccess.WriteAsync(_handle, zeros.AsMemory(0, (int)Math.Min(zeros.Length, length - done)), offset + done, ct).ConfigureAwait(false);
        }
        if (fua) RandomAccess.FlushToDisk(_handle);
    }

    public ValueTask TrimAsync(long offset, long length, CancellationToken ct)
    {
        TryPunchHole(offset, length); // a trim is only a hint: ignoring it is correct
        return ValueTask.CompletedTask;
    }

    public ValueTask FlushAsync(CancellationToken ct)
    {
        RandomAccess.FlushToDisk(_handle);
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<Extent>> MapAsync(long offset, long length, CancellationToken ct)
    {
        var extents = new List<Extent>(2);
        long end = offset + length, position = offset;
        while (position < end)
        {
            long data = Seek(position, SeekData);
            if (data < 0) break; // unsupported: report data
            if (data == long.MaxValue || data >= end)
            {
                extents.Add(new Extent(end - position, true));
                return new ValueTask<IReadOnlyList<Extent>>(extents);
            }
            if (data > position)
            {
                extents.Add(new Extent(data - position, true));
                position = data;
            }
            long hole = Seek(position, SeekHole);
            if (hole < 0) break;
            long dataEnd = Math.Min(hole, end);
            extents.Add(new Extent(dataEnd - position, false));
            position = dataEnd;
        }
        if (position < end) extents.Add(new Extent(end - position, false));
        return new ValueTask<IReadOnlyList<Extent>>(extents);
    }

    /// <summary>lseek(2) for SEEK_DATA/SEEK_HOLE: the offset, long.MaxValue for "none", -1 if unsupported.</summary>
    private long Seek(long position, int whence)
    {
        if (!_sparseSupported) return -1;
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            long result = NativeMethods.lseek((int)_handle.DangerousGetHandle(), position, whence);
            if (result >= 0) return result;
            int errno = Marshal.GetLastPInvokeError();
            if (errno == ENXIO) return long.MaxValue;
            _sparseSupported = false;
            return -1;
        }
        catch (EntryPointNotFoundException)
        {
            _sparseSupported = false;
            return -1;
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    private bool TryPunchHole(long offset, long length)
    {
        if (!OperatingSystem.IsLinux() || length == 0) return length == 0;
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            return NativeMethods.fallocate((int)_handle.DangerousGetHandle(), FallocPunchHole | FallocKeepSize, offset, length) == 0;
        }
        catch (EntryPointNotFoundException)
        {
            return false;
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    public void Dispose() => _handle.Dispose();

    private static class NativeMethods
    {
        [DllImport("libc", SetLastError = true)]
        public static extern long lseek(int fd, long offset, int whence);

        [DllImport("libc", SetLastError = true)]
        public static extern int fallocate(int fd, int mode, long offset, long length);
    }
}
