import CohortWire

/// What a parameter shard from the coordinator (or a site delegate) does to a worker's replica.
enum ParameterShard {
    enum Landing: Equatable {
        /// In the replica.
        case applied
        /// Not used, and nothing lost: under an fp32 downlink a `parameters` shard carries the
        /// whole values, and the next step's copy of it replaces what this one would have written.
        case skipped(String)
        /// Not used, and the replica can no longer be trusted: under a lossy downlink a `delta`
        /// shard is the difference to add, and every later one builds on it (so does every one
        /// after a run's start, the only time θ̃ comes whole). Only the whole of θ̃ from the
        /// coordinator mends that.
        case replicaLost(String)
    }

    /// Writes shard `h` (its `payload`) into `replica` (the whole parameter vector): a
    /// `parameters` shard is copied in (fp32 only), a `delta` shard added after its payload is
    /// checked against `downlink` (the job's downlink encoding and codec). `streaming`: the
    /// replica is larger than the caches (`ReplicaCopy.streams`). The caller has checked that
    /// the shard lies inside the replica.
    static func land(_ h: ShardHeader, payload: UnsafeRawBufferPointer, into replica: UnsafeMutablePointer<Float>,
                     downlink: ShardCodec, streaming: Bool) -> Landing {
        let count = Int(h.elementCount)
        let target = replica + Int(h.elementOffset)
        if h.kind == .parameters {
            // The full parameters (a run's start, or an fp32 downlink): copied in.
            guard h.encoding == .fp32, payload.count == count * 4, let src = payload.baseAddress else {
                let why = "a parameters shard must be \(count) fp32 values (\(count * 4) bytes), got \(payload.count) bytes as \(h.encoding)"
                // Under a lossy downlink whole values come only at a run's start: nothing replaces them.
                return downlink.encoding == .fp32 ? .skipped(why) : .replicaLost(why)
            }
            ReplicaCopy.copy(src, to: target, byteCount: count * 4, streaming: streaming)
            return .applied
        }
        // A lossy downlink: the difference to add to the replica, exactly as the coordinator
        // added it to its copy.
        guard h.encoding == downlink.encoding else {
            return .replicaLost("a difference encoded as \(h.encoding), but the job's downlink is \(downlink.encoding)")
        }
        do { try downlink.validate(payload, elements: count) } catch {
            return .replicaLost("the difference does not decode: \(error)")
        }
        downlink.add(payload, count: count, into: target)
        return .applied
    }
}
