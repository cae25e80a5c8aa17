namespace Isr.BlockDevice;

/// <summary>
/// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md). All integers are big-endian.
/// <para>Fixed newstyle handshake, as served here:</para>
/// <code>
/// S: "NBDMAGIC" (u64) | IHAVEOPT (u64) | handshake flags (u16: FIXED_NEWSTYLE | NO_ZEROES)
/// C: client flags (u32)
/// repeat:
///   C: IHAVEOPT (u64) | option (u32) | length (u32) | data
///   S: OptionReplyMagic (u64) | option (u32) | reply type (u32) | length (u32) | data   (one or more)
/// until OPT_GO is acknowledged (REP_INFO* then REP_ACK) or OPT_EXPORT_NAME
/// (answered by size u64 | transmission flags u16 | 124 zero bytes unless NO_ZEROES), or OPT_ABORT.
/// </code>
/// <para>Transmission:</para>
/// <code>
/// C: RequestMagic (u32) | command flags (u16) | type (u16) | handle (u64) | offset (u64) | length (u32) | payload (WRITE)
/// S: simple reply:     SimpleReplyMagic (u32) | error (u32) | handle (u64) | payload (READ without structured replies)
/// S: structured chunk: StructuredReplyMagic (u32) | flags (u16) | type (u16) | handle (u64) | length (u32) | payload
/// </code>
/// Replies may be sent in any order; the handle ties them to requests.
/// </summary>
internal static class NbdConstants
{
    // Handshake
    public const ulong InitMagic = 0x4E42444D41474943; // "NBDMAGIC"
    public const ulong OptionMagic = 0x49484156454F5054; // "IHAVEOPT"
    public const ulong OptionReplyMagic = 0x0003E889045565A9;

    public const ushort FlagFixedNewstyle = 1 << 0;
    public const ushort FlagNoZeroes = 1 << 1;
    public const uint ClientFlagFixedNewstyle = 1 << 0;
    public const uint ClientFlagNoZeroes = 1 << 1;

    // Options
    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptList = 3;
    public const uint OptStartTls = 5;
    public const uint OptInfo = 6;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptListMetaContext = 9;
    public const uint OptSetMetaContext = 10;

    // Option replies
    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000000 | 1;
    public const uint RepErrPolicy = 0x80000000 | 2;
    public const uint RepErrInvalid = 0x80000000 | 3;
    public const uint RepErrUnknown = 0x80000000 | 6;
    public const uint RepErrTooBig = 0x80000000 | 9;

    // NBD_REP_INFO payload types
    public const ushort InfoExport = 0;
    public const ushort InfoName = 1;
    public const ushort InfoDescription = 2;
    public const ushort InfoBlockSize = 3;

    // Transmission flags
    public const ushort TxHasFlags = 1 << 0;
    public const ushort TxReadOnly = 1 << 1;
    public const ushort TxSendFlush = 1 << 2;
    public const ushort TxSendFua = 1 << 3;
    public const ushort TxSendTrim = 1 << 5;
    public const ushort TxSendWriteZeroes = 1 << 6;
    public const ushort TxSendDf = 1 << 7;

    // Requests
    public const uint RequestMagic = 0x25609513;
    public const int RequestHeaderSize = 28;

    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisc = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdTrim = 4;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdBlockStatus = 7;

    public const ushort CmdFlagFua = 1 << 0;
    public const ushort CmdFlagNoHole = 1 << 1;
    public const ushort CmdFlagDf = 1 << 2;
    public const ushort CmdFlagReqOne = 1 << 3;

    // Replies
    public const uint SimpleReplyMagic = 0x67446698;
    public const int SimpleReplySize = 16;
    public const uint StructuredReplyMagic = 0x668E33EF;
    public const int StructuredHeaderSize = 20;

    public const ushort ReplyFlagDone = 1 << 0;
    public const ushort ReplyTypeNone = 0;
    public const ushort ReplyTypeOffsetData = 1;
    public const ushort ReplyTypeOffsetHole = 2;
    public const ushort ReplyTypeBlockStatus = 5;
    public const ushort ReplyTypeError = 0x8000 | 1;

    // base:allocation
    public const string BaseAllocation = "base:allocation";
    public const uint BaseAllocationContextId = 1;
    public const uint StateHole = 1 << 0;
    public const uint StateZero = 1 << 1;

    // Error values (errno-like, fixed by the spec)
    public const uint EPerm = 1;
    public const uint EIo = 5;
    public const uint EInval = 22;
    public const uint ENoSpc = 28;
    public const uint EOverflow = 75;
    public const uint EShutdown = 108;

    /// <summary>Largest option payload we accept; names and queries are limited to 4096 bytes by the spec.</summary>
    public const int MaxOptionLength = 64 * 1024;
    public const int MaxStringLength = 4096;
}
