/// The envelope that starts the first frame of every Cohort message (docs/protocol.md):
///
///     offset 0  magic    u32 LE  0x54524843 ("CHRT")
///     offset 4  version  u16 LE  protocol version
///     offset 6  type     u16 LE  high byte: family (1 api, 2 control, 3 data); low byte: message
///     offset 8  fields of that message type
///
/// Tensor payloads never go inside the envelope: they follow as separate raw frames so they can
/// be sent and received without copying.
public enum Envelope {
    public static let magic: UInt32 = 0x5452_4843
    /// Bump on any change that an older peer would misread (docs/protocol.md, "Versioning").
    public static let version: UInt16 = 1
    public static let headerSize = 8
}

/// The family a message belongs to decides which endpoint carries it.
public enum MessageFamily: UInt8, Sendable, CaseIterable {
    case api = 1
    case control = 2
    case data = 3
}

/// Every message type of this protocol version. The raw value is the `type` field.
public enum MessageType: UInt16, Sendable, CaseIterable {
    case apiRequest = 0x0101
    case apiReply = 0x0102
    case heartbeat = 0x0201
    case notice = 0x0202
    case shard = 0x0301
    /// A shard whose elements are in a shared-memory segment, not in a payload frame.
    case sharedShard = 0x0302
    case error = 0x0401

    public var family: MessageFamily? { MessageFamily(rawValue: UInt8(truncatingIfNeeded: rawValue >> 8)) }
}
