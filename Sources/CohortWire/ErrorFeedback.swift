/// Error feedback for lossy shard encodings (EF-SGD, Karimireddy et al. 2019; the "residual" of
/// 1-bit SGD, Seide et al. 2014): what one send loses to rounding, clamping or dropping is
/// added to the next send of the same elements, so it is delayed, never lost. With a residual
/// r per element of the whole flat buffer, sending x gives
///
///     e = x + r;  q = encode(e);  r = e − decode(q)
///
/// and over any number of rounds Σ decode(q) = Σ x − r (the sums telescope): what has arrived
/// differs from what was meant by the current residual only.
///
/// One owner (the thread that encodes a worker's shards); not `Sendable`. A NaN or ∞ sent once
/// stays in the residual until `reset`.
public final class ErrorFeedback {
    private let r: UnsafeMutableBufferPointer<Float>

    /// A zero residual for a flat buffer of `count` elements.
    public init(count: Int) {
        precondition(count >= 0, "a buffer cannot have \(count) elements")
        r = .allocate(capacity: count)
        r.initialize(repeating: 0)
    }

    deinit { r.deallocate() }

    /// Encodes elements [offset, offset + count) of the flat buffer `x` (x points at element 0)
    /// with the residual added, into `out` (at least `codec.maxPayloadBytes(elements: count)`),
    /// and keeps what the encoding lost for the next call. Returns bytes written.
    public func encode(_ codec: ShardCodec, _ x: UnsafePointer<Float>, offset: Int, count: Int,
                       into out: UnsafeMutableRawPointer) -> Int {
        precondition(offset >= 0 && count >= 0 && offset + count <= r.count,
                     "elements \(offset)..<\(offset + count) are outside a residual of \(r.count)")
        let e = r.baseAddress! + offset, shard = x + offset
        for i in 0..<count { e[i] += shard[i] }
        let bytes = codec.encode(e, count: count, into: out)
        // r = e − decode(q): adding −1 · decoded subtracts exactly, and touches only the kept
        // elements of a topk shard.
        codec.accumulate(UnsafeRawBufferPointer(start: out, count: bytes), count: count, weight: -1, into: e)
        return bytes
    }

    /// Zeroes the residual (a worker rejoining, whose old residual belongs to a stale model).
    public func reset() { r.update(repeating: 0) }

    /// The residual, one element per element of the flat buffer; valid while this object lives.
    public var residual: UnsafeBufferPointer<Float> { UnsafeBufferPointer(r) }
}

@available(*, unavailable, message: "ErrorFeedback has one owner thread")
extension ErrorFeedback: Sendable {}
