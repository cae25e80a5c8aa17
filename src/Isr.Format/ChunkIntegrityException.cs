namespace Isr.Format;

/// <summary>A blob failed verification: its bytes do not hash to its tag, it does not decrypt, or its plaintext does not give back its key.</summary>
public sealed class ChunkIntegrityException(string message) : Exception(message);

/// <summary>A structure (page, record, descriptor, key file) is malformed or fails authentication.</summary>
public sealed class MalformedDataException(string message) : Exception(message);
