/// An api request (api endpoint, DEALER → ROUTER). The body is JSON; its shape belongs to the
/// method (docs/protocol.md lists them). `requestId` lets a client match replies to requests.
public struct ApiRequest: Sendable, Hashable {
    public var requestId: UInt64
    public var method: String
    public var body: [UInt8]

    public init(requestId: UInt64, method: String, body: [UInt8] = []) {
        self.requestId = requestId
        self.method = method
        self.body = body
    }
}

/// The reply to an `ApiRequest` with the same `requestId`.
public struct ApiReply: Sendable, Hashable {
    public enum Status: UInt16, Sendable, CaseIterable {
        case ok = 0
        case badRequest = 1
        case unauthorized = 2
        case forbidden = 3
        case notFound = 4
        case conflict = 5
        case unavailable = 6
        case internalError = 7
    }

    public var requestId: UInt64
    public var status: Status
    public var body: [UInt8]

    public init(requestId: UInt64, status: Status, body: [UInt8] = []) {
        self.requestId = requestId
        self.status = status
        self.body = body
    }
}

/// A liveness beacon on the control endpoint. The sender is known from its routing identity.
public struct Heartbeat: Sendable, Hashable {
    public var sequence: UInt64
    /// The sender's clock (nanoseconds since its epoch), echoed back to measure round trips.
    public var sentAtNanos: UInt64

    public init(sequence: UInt64, sentAtNanos: UInt64) {
        self.sequence = sequence
        self.sentAtNanos = sentAtNanos
    }
}

/// A one-way message on the control (or data) endpoint: the coordinator telling a worker to take
/// or drop a job, a worker saying it is ready or reporting metrics. `kind` names it; the body is
/// JSON whose shape belongs to the kind (docs/protocol.md lists them).
public struct Notice: Sendable, Hashable {
    public var kind: String
    public var body: [UInt8]

    public init(kind: String, body: [UInt8] = []) {
        self.kind = kind
        self.body = body
    }
}

/// How a shard's elements are laid out in its payload frame.
public enum ShardEncoding: UInt8, Sendable, CaseIterable {
    case fp32 = 0
    case bf16 = 1
    case fp16 = 2

    /// Bytes of payload for `elements` elements.
    public func payloadBytes(elements: Int) -> Int {
        switch self {
        case .fp32: return elements * 4
        case .bf16, .fp16: return elements * 2
        }
    }
}

/// The `bf16` wire encoding: the top 16 bits of an fp32, rounded to nearest even. Workers encode
/// with it; the coordinator's fusion kernels widen it back by a 16-bit shift.
public enum BFloat16 {
    @inline(__always)
    public static func encode(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x40 } // stays a (quiet) NaN
        let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    @inline(__always)
    public static func decode(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }
}

/// What a shard carries.
public enum ShardKind: UInt8, Sendable, CaseIterable {
    /// A worker's gradient contribution (worker → coordinator).
    case gradient = 0
    /// New parameters after an optimizer step (coordinator → worker).
    case parameters = 1
    /// A parameter delta (local-SGD rounds, lossy downlinks).
    case delta = 2
}

/// The header of one shard of a flat buffer (data endpoint). The elements follow in the next
/// frame, raw and little-endian, so that they can be sent and received without copying.
public struct ShardHeader: Sendable, Hashable {
    public var job: UInt64
    public var step: UInt64
    public var kind: ShardKind
    public var encoding: ShardEncoding
    /// Index of this shard and the number of shards the buffer was cut into.
    public var shard: UInt32
    public var shardCount: UInt32
    /// Where this shard starts in the flat buffer, in elements.
    public var elementOffset: UInt64
    public var elementCount: UInt32
    /// Samples behind this contribution: the aggregator weights it by n_i / Σn.
    public var sampleCount: UInt32

    public init(job: UInt64, step: UInt64, kind: ShardKind, encoding: ShardEncoding,
                shard: UInt32, shardCount: UInt32, elementOffset: UInt64, elementCount: UInt32,
                sampleCount: UInt32) {
        self.job = job
        self.step = step
        self.kind = kind
        self.encoding = encoding
        self.shard = shard
        self.shardCount = shardCount
        self.elementOffset = elementOffset
        self.elementCount = elementCount
        self.sampleCount = sampleCount
    }

    /// The byte length the payload frame must have.
    public var payloadBytes: Int { encoding.payloadBytes(elements: Int(elementCount)) }

    /// Checks the payload frame's length against the header; a mismatch is a malformed message.
    public func validatePayload(byteCount: Int) throws(WireError) {
        guard byteCount == payloadBytes else {
            throw .invalidValue(field: "shard.payload",
                                reason: "is \(byteCount) bytes, but \(elementCount) \(encoding) elements need \(payloadBytes)")
        }
    }
}

/// Sent back to a peer whose message was refused (malformed, wrong version, not allowed),
/// so that the peer can say why instead of waiting.
public struct ErrorMessage: Sendable, Hashable {
    public enum Code: UInt16, Sendable, CaseIterable {
        case malformed = 1
        case versionMismatch = 2
        case forbidden = 3
        case rejected = 4
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
}

/// Every message of protocol version 1.
public enum Message: Sendable, Hashable {
    case apiRequest(ApiRequest)
    case apiReply(ApiReply)
    case heartbeat(Heartbeat)
    case notice(Notice)
    case shard(ShardHeader)
    case error(ErrorMessage)

    public var type: MessageType {
        switch self {
        case .apiRequest: return .apiRequest
        case .apiReply: return .apiReply
        case .heartbeat: return .heartbeat
        case .notice: return .notice
        case .shard: return .shard
        case .error: return .error
        }
    }

    /// Frames that follow the envelope frame (a shard's payload).
    public var payloadFrameCount: Int {
        if case .shard = self { return 1 }
        return 0
    }
}
