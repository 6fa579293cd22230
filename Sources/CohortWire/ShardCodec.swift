internal import CKernels

/// Encodes a shard of a flat Float32 buffer into its payload frame and back, for every
/// `ShardEncoding` (byte layouts and error bounds: docs/protocol.md, "Shard payloads").
/// Pointer-based and allocation-free: the data loops call it once per shard.
///
/// Decoding is integer work and exact float arithmetic, bit-identical on every machine, and
/// `add` gives exactly what `decode` and then `+=` would: the two ends of a lossy downlink keep
/// one replica θ̃ in step by each adding the same decoded shards.
///
/// `decode`, `accumulate` and `add` expect a payload that passed `validate` (the receiver's
/// check of peer bytes); on other bytes they may give garbage, but never write outside
/// `count` elements (a wrong length or topk index is a precondition failure).
public struct ShardCodec: Sendable, Hashable {
    public let encoding: ShardEncoding
    /// The share of a shard that `.topk` keeps: k = max(1, ⌈count × fraction⌉). 0 when
    /// `topKCount` is set instead.
    public let topKFraction: Double
    /// The number of elements `.topk` keeps per shard (fewer only when the shard is shorter),
    /// when given directly instead of as a fraction.
    public let topKCount: Int?

    public init(_ encoding: ShardEncoding, topKFraction: Double = 0.01) {
        precondition(topKFraction > 0 && topKFraction <= 1, "topKFraction must be in (0, 1], got \(topKFraction)")
        self.encoding = encoding
        self.topKFraction = topKFraction
        topKCount = nil
    }

    /// A `.topk` codec that keeps `k` elements of every shard.
    public init(topK k: Int) {
        precondition(k >= 1, "topk must keep at least one element, got k = \(k)")
        encoding = .topk
        topKFraction = 0
        topKCount = k
    }

    /// How many elements `.topk` keeps of a shard of `count` elements: 1 … count.
    public func keptCount(elements count: Int) -> Int {
        let k = topKCount ?? Int((Double(count) * topKFraction).rounded(.up))
        return min(count, max(1, k))
    }

    /// Upper bound of payload bytes for `count` elements (size a send buffer with it). It is
    /// also the exact length `encode` writes: for topk, k follows from `count`.
    public func maxPayloadBytes(elements count: Int) -> Int {
        encoding.payloadBytes(elements: count) ?? 4 + ShardEncoding.topKBytesPerKept * keptCount(elements: count)
    }

    /// Encodes x[0..<count] into `out` (at least `maxPayloadBytes`, not overlapping x), returns
    /// bytes written.
    /// Finite values always encode to finite ones (clamped where a format ends); NaN and ±∞
    /// go out as values the receiver's `validate` refuses.
    public func encode(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) -> Int {
        precondition(count >= 0, "a shard cannot have \(count) elements")
        switch encoding {
        case .fp32, .bf16, .fp16: Elementwise.encode(encoding, x, count: count, into: out)
        case .int8: Int8Blocks.encode(x, count: count, into: out)
        case .topk:
            precondition(count >= 1, "topk needs a shard of at least one element")
            TopK.encode(x, count: count, k: keptCount(elements: count), into: out)
        }
        return maxPayloadBytes(elements: count)
    }

    /// A lossy downlink's step for `count` elements: encodes target − replica into `out` and
    /// adds what that payload decodes to onto `replica`, bit for bit what `encode` of the
    /// difference followed by `add` gives (the workers' side). The element-wise encodings do it in
    /// one pass over the three buffers; int8 and topk go through `scratch` (`count` floats).
    /// The buffers must not overlap.
    /// Returns the bytes written.
    public func encodeDifference(_ target: UnsafePointer<Float>, replica: UnsafeMutablePointer<Float>, count: Int,
                                 scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutableRawPointer) -> Int {
        switch encoding {
        case .fp32, .bf16, .fp16:
            Elementwise.encodeDifference(encoding, target, replica: replica, count: count, into: out)
            return maxPayloadBytes(elements: count)
        case .int8, .topk:
            for i in 0..<count { scratch[i] = target[i] - replica[i] }
            let bytes = encode(scratch, count: count, into: out)
            add(UnsafeRawBufferPointer(start: out, count: bytes), count: count, into: replica)
            return bytes
        }
    }

    /// Checks a received payload for `count` elements completely: its length, the topk header
    /// and indices, and that every decoded value is finite (fp32/bf16/fp16 values, int8
    /// scales). The error names the field and the first problem: the element, block or index.
    public func validate(_ payload: UnsafeRawBufferPointer, elements count: Int) throws(WireError) {
        if let problem = encoding.payloadLengthProblem(byteCount: payload.count, elements: count) {
            throw .invalidValue(field: "shard.payload", reason: problem)
        }
        guard let base = payload.baseAddress else { return } // the empty payload of an empty shard
        switch encoding {
        case .fp32, .bf16, .fp16: try Elementwise.validate(encoding, base, count: count)
        case .int8: try Int8Blocks.validate(base, count: count)
        case .topk: try TopK.validate(base, byteCount: payload.count, count: count)
        }
    }

    /// out[i] = decoded[i] for i in 0..<count (topk writes zeros where nothing was kept).
    /// `streaming`: out is a replica larger than the caches (`ReplicaCopy.streams`), so a bf16
    /// payload is decoded into it with stores that bypass the cache.
    public func decode(_ payload: UnsafeRawBufferPointer, count: Int, into out: UnsafeMutablePointer<Float>, streaming: Bool = false) {
        if streaming, encoding == .bf16, let base = payload.baseAddress {
            precondition(payload.count == 2 * count, "a bf16 payload of \(payload.count) bytes for \(count) elements: validate it first")
            cohort_bf16_decode(out, base, count, 1)
            return
        }
        run(payload, count: count, .overwrite, out)
    }

    /// acc[i] += weight · decoded[i] (topk: only at the kept indices).
    public func accumulate(_ payload: UnsafeRawBufferPointer, count: Int, weight: Float, into acc: UnsafeMutablePointer<Float>) {
        run(payload, count: count, .addScaled(weight), acc)
    }

    /// acc[i] += decoded[i], bit for bit what `decode` then `+=` gives: how both ends of a lossy
    /// downlink update their replica θ̃.
    public func add(_ payload: UnsafeRawBufferPointer, count: Int, into acc: UnsafeMutablePointer<Float>) {
        run(payload, count: count, .add, acc)
    }

    private func run(_ payload: UnsafeRawBufferPointer, count: Int, _ sink: Sink, _ out: UnsafeMutablePointer<Float>) {
        precondition(encoding.payloadLengthProblem(byteCount: payload.count, elements: count) == nil,
                     "a \(encoding) payload of \(payload.count) bytes for \(count) elements: validate it first")
        guard let base = payload.baseAddress else { return }
        switch encoding {
        case .fp32, .bf16, .fp16: Elementwise.decode(encoding, base, count: count, sink, into: out)
        case .int8: Int8Blocks.decode(base, count: count, sink, into: out)
        case .topk: TopK.decode(base, byteCount: payload.count, count: count, sink, into: out)
        }
    }

    /// The stated bound on |x[i] − decode(encode(x))[i]|, written to bound[i] for i in 0..<count
    /// (docs/protocol.md gives each encoding's; tests hold the codec to it). Infinite where
    /// x[i] is not finite. Not for hot paths: it works element by element.
    public func errorBounds(_ x: UnsafePointer<Float>, count: Int, into bound: UnsafeMutablePointer<Float>) {
        switch encoding {
        case .fp32:
            for i in 0..<count { bound[i] = x[i].isFinite ? 0 : .infinity }
        case .bf16:
            for i in 0..<count { bound[i] = Elementwise.bf16Bound(x[i]) }
        case .fp16:
            for i in 0..<count { bound[i] = Elementwise.fp16Bound(x[i]) }
        case .int8:
            Int8Blocks.errorBounds(x, count: count, into: bound)
        case .topk:
            precondition(count >= 1, "topk needs a shard of at least one element")
            TopK.errorBounds(x, count: count, k: keptCount(elements: count), into: bound)
        }
    }
}

extension ShardCodec: CustomStringConvertible {
    /// `int8`, `topk(1%)`, `topk(k=37)`: for logs and test names.
    public var description: String {
        guard encoding == .topk else { return "\(encoding)" }
        if let k = topKCount { return "topk(k=\(k))" }
        return "topk(\(topKFraction * 100)%)"
    }
}

/// Where decoded elements go. `decode`, `accumulate` and `add` differ only here, so each
/// encoding has one reading loop, which inlining specialises three ways.
enum Sink {
    case overwrite
    case add
    case addScaled(Float)

    /// out[i] (=, +=, += w·) element(i) for i in `range`.
    @inline(__always)
    func run(_ range: Range<Int>, _ out: UnsafeMutablePointer<Float>, _ element: (Int) -> Float) {
        switch self {
        case .overwrite: for i in range { out[i] = element(i) }
        case .add: for i in range { out[i] += element(i) }
        case let .addScaled(w): for i in range { out[i] += w * element(i) }
        }
    }

    @inline(__always)
    func put(_ value: Float, _ out: UnsafeMutablePointer<Float>) {
        switch self {
        case .overwrite: out.pointee = value
        case .add: out.pointee += value
        case let .addScaled(w): out.pointee += w * value
        }
    }
}

/// The first i in 0..<count whose flag is nonzero, or nil. Flags are OR-ed a chunk at a time
/// (a loop that vectorises, unlike an early exit); only a flagged chunk is searched.
@inline(__always)
func firstFlagged<Flag: FixedWidthInteger>(_ count: Int, _ flag: (Int) -> Flag) -> Int? {
    var start = 0
    while start < count {
        let end = min(start + 4096, count)
        var any: Flag = 0
        for i in start..<end { any |= flag(i) }
        if any != 0 { return (start..<end).first { flag($0) != 0 } }
        start = end
    }
    return nil
}

/// "NaN", "+infinity" or "-infinity": what a refused value was.
func nonFiniteName(_ v: Float) -> String { v.isNaN ? "NaN" : v > 0 ? "+infinity" : "-infinity" }
