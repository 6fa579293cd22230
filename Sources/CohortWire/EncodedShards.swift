/// The encoded shards of one flat Float buffer, each in its own fixed slot (sized for the
/// largest payload its shard can have), so that shard k can go out zero-copy from its slot
/// while later shards are still being encoded. The owner of those zero-copy frames: the bytes
/// of slot k must not change until the peer has them (the next round's shard k).
public final class EncodedShards: @unchecked Sendable { // written by its owner thread, read by libzmq after each send
    public let codec: ShardCodec
    public let parameterCount: Int
    public let shardElements: Int
    public let shardCount: Int
    private let slotOffsets: [Int]
    private var lengths: [Int]
    private let base: UnsafeMutableRawPointer

    public init(codec: ShardCodec, parameterCount: Int, shardElements: Int) {
        precondition(parameterCount > 0 && shardElements > 0, "encoded shards need elements and a shard size")
        self.codec = codec
        self.parameterCount = parameterCount
        self.shardElements = shardElements
        shardCount = (parameterCount + shardElements - 1) / shardElements
        var offsets: [Int] = []
        var total = 0
        for k in 0..<shardCount {
            offsets.append(total)
            let count = min(shardElements, parameterCount - k * shardElements)
            total += (codec.maxPayloadBytes(elements: count) + 63) & ~63
        }
        slotOffsets = offsets
        lengths = Array(repeating: 0, count: shardCount)
        base = .allocate(byteCount: max(total, 64), alignment: 64)
    }

    deinit { base.deallocate() }

    /// Elements `range(k)` of the flat buffer form shard k.
    public func range(_ k: Int) -> Range<Int> {
        let start = k * shardElements
        return start..<min(start + shardElements, parameterCount)
    }

    /// Encodes shard k of `flat` (the whole buffer's first element), through `feedback` when
    /// given (the residual of what earlier rounds lost is added, and what this one loses kept).
    @discardableResult
    public func encode(shard k: Int, of flat: UnsafePointer<Float>, feedback: ErrorFeedback? = nil) -> UnsafeRawBufferPointer {
        let r = range(k)
        let out = base + slotOffsets[k]
        if let feedback {
            lengths[k] = feedback.encode(codec, flat, offset: r.lowerBound, count: r.count, into: out)
        } else {
            lengths[k] = codec.encode(flat + r.lowerBound, count: r.count, into: out)
        }
        return payload(shard: k)
    }

    /// Encodes shard k from its own elements (`range(k).count` of them, wherever they are).
    @discardableResult
    public func encode(shard k: Int, elements: UnsafePointer<Float>) -> UnsafeRawBufferPointer {
        lengths[k] = codec.encode(elements, count: range(k).count, into: base + slotOffsets[k])
        return payload(shard: k)
    }

    /// A lossy downlink's shard k: encodes target − replica (both whole flat buffers) and adds
    /// the decoded payload onto the replica's shard k, as the receivers will
    /// (`ShardCodec.encodeDifference`; `scratch` is a flat buffer int8 and topk need).
    @discardableResult
    public func encodeDifference(shard k: Int, target: UnsafePointer<Float>, replica: UnsafeMutablePointer<Float>,
                                 scratch: UnsafeMutablePointer<Float>) -> UnsafeRawBufferPointer {
        let r = range(k)
        lengths[k] = codec.encodeDifference(target + r.lowerBound, replica: replica + r.lowerBound, count: r.count,
                                            scratch: scratch + r.lowerBound, into: base + slotOffsets[k])
        return payload(shard: k)
    }

    /// Shard k's payload as last encoded.
    public func payload(shard k: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + slotOffsets[k], count: lengths[k])
    }
}
