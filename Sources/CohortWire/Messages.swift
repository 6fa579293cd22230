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

/// How a shard's elements are laid out in its payload frame (docs/protocol.md, "Shard payloads";
/// `ShardCodec` encodes and decodes them).
public enum ShardEncoding: UInt8, Sendable, CaseIterable {
    case fp32 = 0
    case bf16 = 1
    case fp16 = 2
    /// Blocks of `int8BlockElements`: a Float32 scale per block, then a signed byte per element.
    case int8 = 3
    /// The k elements of largest magnitude: k, their indices, their values as bf16.
    case topk = 4

    /// Elements per int8 block; the last block of a shard may be shorter.
    public static let int8BlockElements = 128
    /// Payload bytes per element a topk shard keeps: a u32 index and a bf16 value.
    public static let topKBytesPerKept = 6

    /// The encoding a job spec names (`fp32`, `bf16`, `fp16`, `int8`, `topk`), nil for another name.
    public init?(named name: String) {
        guard let match = Self.allCases.first(where: { "\($0)" == name }) else { return nil }
        self = match
    }

    /// Bytes of payload for `elements` elements; nil for topk, whose length depends on k.
    public func payloadBytes(elements: Int) -> Int? {
        switch self {
        case .fp32: return elements * 4
        case .bf16, .fp16: return elements * 2
        case .int8: return Self.int8Blocks(elements: elements) * 4 + elements
        case .topk: return nil
        }
    }

    /// Blocks (and so scales) of an int8 payload of `elements` elements.
    public static func int8Blocks(elements: Int) -> Int {
        (elements + int8BlockElements - 1) / int8BlockElements
    }

    /// Why a payload of `byteCount` bytes cannot carry `elements` elements, or nil when its
    /// length is possible. For topk that means 4 + 6k bytes with 1 ≤ k ≤ elements; whether the
    /// k field says the same is `ShardCodec.validate`'s to check, with the indices and values.
    public func payloadLengthProblem(byteCount: Int, elements: Int) -> String? {
        if let expected = payloadBytes(elements: elements) {
            return byteCount == expected ? nil : "is \(byteCount) bytes, but \(elements) \(self) elements need \(expected)"
        }
        let perKept = Self.topKBytesPerKept
        guard elements >= 1 else { return "is a topk payload for 0 elements; topk needs at least one" }
        guard byteCount >= 4 + perKept, (byteCount - 4) % perKept == 0 else {
            return "is \(byteCount) bytes, but a topk payload is 4 + \(perKept)·k bytes with k ≥ 1"
        }
        let k = (byteCount - 4) / perKept
        guard k <= elements else { return "is \(byteCount) bytes: \(k) kept elements, more than the shard's \(elements)" }
        return nil
    }
}

/// The range every contribution's values must lie in (docs/protocol.md, "Range of a
/// contribution"): below 2^64 in magnitude, NaN and ±∞ outside. Weighted by a sample count
/// (< 2^32) and summed, such values cannot overflow fp32 for up to 2^31 members. The coordinator's
/// aggregator and a site delegate apply it alike.
public enum ContributionRange {
    /// The bound on a value's magnitude (exclusive).
    public static let limit: Float = 0x1p64

    /// Whether `v` is inside the range (NaN is not).
    @inline(__always)
    public static func contains(_ v: Float) -> Bool { v.magnitude < limit }

    /// Why element `index` of shard `shard` is refused: NaN/∞, or a finite value too large.
    public static func problem(shard: Int, index: Int, value: Float) -> String {
        value.isFinite
            ? "shard \(shard) holds \(value) at element \(index); a contribution's values must stay below 2^64 (1.8e19) in magnitude"
            : "shard \(shard) holds NaN or infinity at element \(index)"
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

    /// The byte length the payload frame must have; nil for topk, whose length depends on k.
    public var payloadBytes: Int? { encoding.payloadBytes(elements: Int(elementCount)) }

    /// Checks the payload frame's length against the header (for topk, that the length is one a
    /// topk payload of this shard can have); a mismatch is a malformed message. The contents are
    /// `ShardCodec.validate`'s to check.
    public func validatePayload(byteCount: Int) throws(WireError) {
        if let problem = encoding.payloadLengthProblem(byteCount: byteCount, elements: Int(elementCount)) {
            throw .invalidValue(field: "shard.payload", reason: problem)
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
    /// A shard whose fp32 elements are in the sender's shared-memory segment at
    /// `elementOffset` (ipc only, after a `shared-memory` notice): no payload frame follows.
    case sharedShard(ShardHeader)
    case error(ErrorMessage)

    public var type: MessageType {
        switch self {
        case .apiRequest: return .apiRequest
        case .apiReply: return .apiReply
        case .heartbeat: return .heartbeat
        case .notice: return .notice
        case .shard: return .shard
        case .sharedShard: return .sharedShard
        case .error: return .error
        }
    }

    /// Frames that follow the envelope frame (a shard's payload).
    public var payloadFrameCount: Int {
        if case .shard = self { return 1 }
        return 0
    }
}
