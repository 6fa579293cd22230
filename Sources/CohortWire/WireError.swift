/// Everything that can be wrong with bytes that arrive from a peer. Decoding never traps:
/// it returns one of these, and its description says what was wrong and where.
public enum WireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The frame is shorter than the field being read.
    case truncated(field: String, needed: Int, available: Int)
    /// The frame does not start with Cohort's magic bytes: not a Cohort peer.
    case badMagic(found: UInt32)
    /// The peer speaks another protocol version.
    case versionMismatch(peer: UInt16, ours: UInt16)
    /// The message type is not one this version knows.
    case unknownMessageType(UInt16)
    /// A length or count is larger than the configured limit.
    case limitExceeded(field: String, value: Int, limit: Int)
    /// A field holds a value outside its domain (an unknown enum, an inconsistent size).
    case invalidValue(field: String, reason: String)
    /// Bytes were left over after the last field.
    case trailingBytes(message: String, count: Int)
    /// The message expects a number of frames that did not arrive.
    case frameCount(message: String, expected: Int, got: Int)

    public var description: String {
        switch self {
        case let .truncated(field, needed, available):
            return "malformed message: `\(field)` needs \(needed) bytes but only \(available) remain"
        case let .badMagic(found):
            return "not a Cohort message: magic 0x\(String(found, radix: 16)) (expected 0x\(String(Envelope.magic, radix: 16)), \"CHRT\")"
        case let .versionMismatch(peer, ours):
            return "protocol version mismatch: the peer speaks version \(peer), this build speaks version \(ours); run the same Cohort release on both sides"
        case let .unknownMessageType(raw):
            return "unknown message type 0x\(String(raw, radix: 16)) for protocol version \(Envelope.version)"
        case let .limitExceeded(field, value, limit):
            return "message rejected: `\(field)` is \(value), above the limit of \(limit)"
        case let .invalidValue(field, reason):
            return "malformed message: `\(field)` \(reason)"
        case let .trailingBytes(message, count):
            return "malformed \(message) message: \(count) unexpected bytes after its last field"
        case let .frameCount(message, expected, got):
            return "malformed \(message) message: expected \(expected) frame(s), got \(got)"
        }
    }
}
