import CohortWire

/// How a flat buffer of `parameterCount` elements is cut into shards of `shardElements`.
public struct ShardLayout: Sendable, Hashable {
    public let parameterCount: Int
    public let shardElements: Int

    public init(parameterCount: Int, shardElements: Int) {
        precondition(parameterCount > 0 && shardElements > 0, "a layout needs elements and a shard size")
        self.parameterCount = parameterCount
        self.shardElements = shardElements
    }

    public var shardCount: Int { (parameterCount + shardElements - 1) / shardElements }

    public func range(_ shard: Int) -> Range<Int> {
        let start = shard * shardElements
        return start..<min(start + shardElements, parameterCount)
    }
}

/// Why a contribution was refused. A refused contribution is never applied.
public enum Rejection: Error, Sendable, Hashable, CustomStringConvertible {
    case wrongJob(got: UInt64, expected: UInt64)
    case staleStep(got: UInt64, expected: UInt64)
    case notAMember(String)
    case duplicate(member: String, shard: Int)
    case wrongLayout(String)
    case wrongEncoding(got: ShardEncoding)
    case wrongKind(ShardKind)
    case nonFinite(shard: Int, index: Int)
    /// A finite value of 2^64 or more in magnitude (see `Fusion.limit`).
    case outOfRange(shard: Int, index: Int, value: Float)
    case malformed(shard: Int, reason: String)
    /// A fusing pass read a value out of range, and a second read found none: the member's
    /// shared memory changed after it sent the shard.
    case changedAfterSending(shard: Int)
    case noSamples

    public var description: String {
        switch self {
        case let .wrongJob(got, expected): return "shard for job \(got) sent to job \(expected)'s step"
        case let .staleStep(got, expected): return "shard for step \(got), but step \(expected) is in progress"
        case let .notAMember(m): return "\(m) is not a member of this step"
        case let .duplicate(m, shard): return "\(m) already sent shard \(shard) of this step"
        case let .wrongLayout(what): return "shard does not match the job's layout: \(what)"
        case let .wrongEncoding(got): return "shard encoded as \(got), which this job does not use"
        case let .wrongKind(kind): return "a \(kind) shard where another kind was expected"
        case let .nonFinite(shard, index): return ContributionRange.problem(shard: shard, index: index, value: .nan)
        case let .outOfRange(shard, index, value): return ContributionRange.problem(shard: shard, index: index, value: value)
        case let .malformed(shard, reason): return "shard \(shard) does not decode: \(reason)"
        case let .changedAfterSending(shard):
            return "shard \(shard) held a value out of range when it was fused, and its values changed after it was sent "
                + "(a worker must not write its shared memory again before the step's parameters come)"
        case .noSamples: return "a contribution of 0 samples"
        }
    }
}

/// One job's synchronous step on the coordinator: fuses each member's gradient shard into an
/// fp32 accumulator as it lands, weighting member i by n_i/Σn, and says when shard k is complete
/// so the optimizer can update parameter shard k and send it out while later shards still
/// arrive. The first contribution of a shard is parked (its frame kept, nothing copied); the
/// second is fused with it in one pass; the last with the 1/Σn scale in the same pass.
/// Owned by one thread (the data loop); not `Sendable`.
///
/// A shard's sum that is not built in a frame (bf16 and the other encodings, a segment's
/// contribution) goes into a shard-sized buffer from a pool, taken when the shard's first
/// fusing pass runs and given back when the shard is released or the next step begins. The
/// pool hands out the buffer given back last, so a step whose shards complete one after another
/// keeps fusing into the same few buffers, still in the CPU's cache, instead of walking a
/// parameter-sized accumulator whose every line is first fetched from memory (16M bf16 pairs
/// on the benchmark host: 4.3 ms into the cold accumulator, 2.4 ms into a reused buffer). With
/// global clipping every shard holds its buffer until the step's end: the pool then grows to
/// the parameter count, what the single accumulator was.
public final class StepAggregator {
    public enum Outcome: Equatable {
        case parked
        case fused
        /// Every member's shard k is in: `gradient(shard:)` holds the weighted mean.
        case complete(shard: Int)
    }

    public let job: UInt64
    public let layout: ShardLayout
    public let encoding: ShardEncoding
    /// Decodes the encodings that the fusion kernels do not read directly (fp16, int8, topk).
    public let codec: ShardCodec
    /// Gradients in `sync` mode, parameter deltas in `local` mode.
    public let kind: ShardKind
    public private(set) var step: UInt64 = 0
    public private(set) var members: Set<String> = []
    /// Shard-sized sum buffers not in use, the one given back last at the end.
    private var pool: [UnsafeMutablePointer<Float>] = []
    /// Every sum buffer allocated (pool and in use), freed with the aggregator.
    private var allocated: [UnsafeMutablePointer<Float>] = []
    /// One shard of decoded fp16, int8 or topk values, checked before they are added; in an
    /// fp32 job, a copy of a contribution from a member's shared memory that is added to a
    /// running sum (so that the check and the sum read the same values).
    private let scratch: UnsafeMutableBufferPointer<Float>
    private var shards: [ShardState]
    /// Parked contributions that their fusing pass (or the deadline's close) found a value
    /// outside ±2^64 in, after `contribute` had accepted them: see `takeLateRefusals()`.
    private var lateRefusals: [(member: String, rejection: Rejection)] = []

    private struct ShardState {
        var arrived: Set<String> = []
        var weight: Double = 0
        /// The first contribution, kept in its frame until the second arrives. An fp32 one in a
        /// frame was checked on arrival (the second may be fused into it in place); a bf16 one,
        /// and one in a member's shared memory, is checked by the pass that fuses it, or by
        /// `close(shard:)`. `stable`: in a received frame, which nobody else can write; one in
        /// a member's shared memory is not (the member can still change it), so it is only
        /// fused by a pass that checks it.
        var parked: (member: String, owner: AnyObject, payload: Payload, weight: Float, stable: Bool)?
        /// Where the shard's sum is when it is not in a pool buffer: an fp32 contribution's own
        /// frame, fused into in place (kept alive by `owner`).
        var inPlace: (sum: UnsafeMutablePointer<Float>, owner: AnyObject)?
        /// The pool buffer the shard's sum is built in, once a fusing pass has needed one.
        var buffer: UnsafeMutablePointer<Float>?
        var complete = false
        /// `release(shard:)` was called: the sum is gone.
        var released = false
    }

    public init(job: UInt64, layout: ShardLayout, encoding: ShardEncoding, kind: ShardKind = .gradient, topKFraction: Double = 0.01) {
        self.job = job
        codec = ShardCodec(encoding, topKFraction: topKFraction)
        self.kind = kind
        self.layout = layout
        self.encoding = encoding
        // bf16 contributions always come in frames; fp32 ones may come from shared memory.
        let decoded = encoding == .bf16 ? 0 : min(layout.shardElements, layout.parameterCount)
        scratch = .allocate(capacity: decoded)
        scratch.initialize(repeating: 0)
        shards = Array(repeating: ShardState(), count: layout.shardCount)
    }

    deinit {
        for buffer in allocated { buffer.deallocate() }
        scratch.deallocate()
    }

    /// Starts `step` with these members; anything left of the previous step is dropped.
    public func begin(step: UInt64, members: Set<String>) {
        self.step = step
        self.members = members
        for i in shards.indices {
            if let buffer = shards[i].buffer { pool.append(buffer) }
            shards[i] = ShardState()
        }
    }

    /// Checks one contribution and, if it is sound, fuses it. `payload` must stay valid while
    /// `owner` is alive; a parked contribution keeps `owner` until it is fused.
    ///
    /// `writable`: the payload's memory is the coordinator's alone (a received frame, never a
    /// segment a worker shares) and may be overwritten. An fp32 shard's sum is then built in the
    /// second contribution's frame (or the only one's), which the CPU has just written, instead
    /// of in a pool buffer; the frame is kept until the shard is released or the next step
    /// begins. Memory that is not writable (a member's shared-memory segment) may still change
    /// after it was checked: a parked fp32 one is not checked on arrival but by the pass that
    /// fuses it (never into a frame in place), and one added to a running sum is copied first.
    public func contribute(from member: String, header h: ShardHeader, payload: UnsafeRawBufferPointer,
                           owner: AnyObject, writable: Bool = false) -> Result<Outcome, Rejection> {
        guard h.job == job else { return .failure(.wrongJob(got: h.job, expected: job)) }
        guard h.step == step else { return .failure(.staleStep(got: h.step, expected: step)) }
        guard h.kind == kind else { return .failure(.wrongKind(h.kind)) }
        guard members.contains(member) else { return .failure(.notAMember(member)) }
        guard h.encoding == encoding else { return .failure(.wrongEncoding(got: h.encoding)) }
        let k = Int(h.shard)
        guard Int(h.shardCount) == layout.shardCount, k < layout.shardCount else {
            return .failure(.wrongLayout("\(h.shardCount) shards, expected \(layout.shardCount)"))
        }
        let range = layout.range(k)
        guard Int(h.elementOffset) == range.lowerBound, Int(h.elementCount) == range.count else {
            return .failure(.wrongLayout("shard \(k) covers \(h.elementOffset)+\(h.elementCount), expected \(range.lowerBound)+\(range.count)"))
        }
        guard h.sampleCount > 0 else { return .failure(.noSamples) }
        guard !shards[k].arrived.contains(member), !shards[k].complete else { return .failure(.duplicate(member: member, shard: k)) }
        guard encoding == .fp32 || encoding == .bf16 else {
            return decodeAndAdd(from: member, shard: k, range: range, samples: h.sampleCount, payload: payload)
        }
        guard payload.count == range.count * (encoding == .fp32 ? 4 : 2), let base = payload.baseAddress else {
            return .failure(.wrongLayout("payload of \(payload.count) bytes for \(range.count) elements"))
        }
        let x = Payload(base: base, encoding: encoding == .bf16 ? .bf16 : .fp32)
        let w = Float(h.sampleCount)
        let arrivedBefore = shards[k].arrived.count
        let last = arrivedBefore + 1 == members.count
        let weight = shards[k].weight + Double(h.sampleCount)
        let scale = last ? Float(1 / weight) : 1
        // In the frame itself: fp32, ours to overwrite, and aligned for Float.
        let own = writable && encoding == .fp32 && Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0
            ? UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Float.self)) : nil
        // Checked for NaN, ±∞ and values beyond ±2^64 before anything of it is used: in the pass
        // that overwrites the accumulator where that is the first use (single, firstTwo, which
        // also checks a contribution parked unchecked), else in a pass of its own.
        if arrivedBefore == 0 {
            if last, let own {
                if let bad = Fusion.singleInPlace(own, w * scale, count: range.count) { return .failure(rejection(x, shard: k, index: bad)) }
                shards[k].inPlace = (own, owner)
            } else if last {
                guard Fusion.single(sum(k), x, w * scale, count: range.count) else { return .failure(outOfRange(x, shard: k, count: range.count)) }
            } else {
                // Parked: an fp32 contribution in a frame is checked now (the second may be fused
                // into its own frame, which would be gone by the time this one turned out bad).
                // A bf16 one, and one in a member's shared memory, is checked by the pass that
                // fuses the two into a pool buffer, which reads it anyway and leaves both
                // payloads as they were (a segment's must be checked there in any case: its
                // member can change it meanwhile).
                if encoding == .fp32, writable, let bad = Fusion.firstOutOfRange(x, count: range.count) { return .failure(rejection(x, shard: k, index: bad)) }
                shards[k].parked = (member, owner, x, w, writable)
                shards[k].arrived.insert(member)
                shards[k].weight = weight
                return .success(.parked)
            }
        } else if let parked = shards[k].parked {
            if let own, parked.stable {
                // (fp32 like every contribution of this job: `own` is only for fp32 jobs.)
                if let bad = Fusion.firstTwoInPlace(own, w * scale, fp32: parked.payload.base, parked.weight * scale, count: range.count) {
                    return .failure(rejection(x, shard: k, index: bad))
                }
                shards[k].inPlace = (own, owner)
            } else {
                let found = Fusion.firstTwo(sum(k), parked.payload, parked.weight * scale, x, w * scale, count: range.count)
                if found.contains(.first) { refuseParked(shard: k) }
                if found.contains(.second) { return .failure(outOfRange(x, shard: k, count: range.count)) }
                // The parked one was refused: this one is now the shard's first.
                if !found.isEmpty { return contribute(from: member, header: h, payload: payload, owner: owner, writable: writable) }
            }
            shards[k].parked = nil
        } else {
            var x = x
            if !writable && encoding == .fp32 {
                // A member's shared memory, which it can still change: copied and checked in one
                // pass, then added from the copy (still in the cache), so that what is added is
                // what was checked.
                let copy = scratch.baseAddress!
                if let bad = Fusion.copyChecked(copy, fp32: base, count: range.count) { return .failure(Self.rejection(shard: k, index: bad, value: copy[bad])) }
                x = Payload(base: UnsafeRawPointer(copy), encoding: .fp32)
            } else if let bad = Fusion.firstOutOfRange(x, count: range.count) {
                return .failure(rejection(x, shard: k, index: bad))
            }
            Fusion.add(sum(k), x, w, scale: scale, count: range.count)
        }
        shards[k].arrived.insert(member)
        shards[k].weight = weight
        if last {
            shards[k].complete = true
            return .success(.complete(shard: k))
        }
        return .success(.fused)
    }

    /// Parked contributions refused after they were accepted (their member, why), since the
    /// last call: the range of a bf16 contribution, or of one in a member's shared memory, is
    /// checked when the second contribution of its shard is fused with it (or at the deadline),
    /// not on arrival. The caller counts and records them as it does a rejected `contribute`;
    /// the refused member's shard k is no longer among `arrived(shard:)`, and nothing of it is
    /// used.
    public func takeLateRefusals() -> [(member: String, rejection: Rejection)] {
        defer { lateRefusals.removeAll() }
        return lateRefusals
    }

    /// Drops shard k's parked contribution, found out of range, as if it had been refused on arrival.
    private func refuseParked(shard k: Int) {
        guard let parked = shards[k].parked else { return }
        shards[k].parked = nil
        shards[k].arrived.remove(parked.member)
        shards[k].weight = 0 // it was the only one in
        lateRefusals.append((parked.member, outOfRange(parked.payload, shard: k, count: layout.range(k).count)))
    }

    /// The rejection of a contribution a fusing pass found a value outside ±2^64 in, naming
    /// the element and value read again now (memory its member can still write may no longer
    /// hold it).
    private func outOfRange(_ x: Payload, shard k: Int, count: Int) -> Rejection {
        guard let i = Fusion.firstOutOfRange(x, count: count) else { return .changedAfterSending(shard: k) }
        return rejection(x, shard: k, index: i)
    }

    /// NaN or ±∞ at element i, or a finite value too large.
    private func rejection(_ x: Payload, shard k: Int, index i: Int) -> Rejection {
        Self.rejection(shard: k, index: i, value: Fusion.value(x, i))
    }

    private static func rejection(shard k: Int, index i: Int, value v: Float) -> Rejection {
        v.isFinite ? .outOfRange(shard: k, index: i, value: v) : .nonFinite(shard: k, index: i)
    }

    /// fp16, int8 and topk shards: checked whole (structure, indices, finite values), decoded,
    /// the decoded values checked against ±2^64, then added into the accumulator with their
    /// weight (nothing is parked: these encodings are for slow links, where decoding is not
    /// what the round waits on).
    private func decodeAndAdd(from member: String, shard k: Int, range: Range<Int>, samples: UInt32,
                              payload: UnsafeRawBufferPointer) -> Result<Outcome, Rejection> {
        do { try codec.validate(payload, elements: range.count) } catch {
            return .failure(.malformed(shard: k, reason: "\(error)"))
        }
        // Decoded whole first: an int8 block's scale or a topk value can be finite and still
        // decode beyond ±2^64.
        let values = scratch.baseAddress!
        codec.decode(payload, count: range.count, into: values)
        if let bad = Fusion.firstOutOfRange(values, count: range.count) {
            return .failure(Self.rejection(shard: k, index: bad, value: values[bad]))
        }
        shards[k].arrived.insert(member)
        shards[k].weight += Double(samples)
        let acc = sum(k)
        if shards[k].arrived.count == 1 { acc.update(repeating: 0, count: range.count) }
        Fusion.add(acc, Payload(base: UnsafeRawPointer(values), encoding: .fp32), Float(samples), scale: 1, count: range.count)
        guard shards[k].arrived.count == members.count else { return .success(.fused) }
        Fusion.scale(acc, Float(1 / shards[k].weight), count: range.count)
        shards[k].complete = true
        return .success(.complete(shard: k))
    }

    /// At the step's deadline: completes shard k with the contributions that arrived, weighted
    /// among themselves. False when nobody sent it (the step cannot complete), which includes
    /// a parked contribution found out of range now (see `takeLateRefusals()`).
    public func close(shard k: Int) -> Bool {
        if shards[k].complete { return true }
        guard !shards[k].arrived.isEmpty else { return false }
        let range = layout.range(k)
        let acc = sum(k)
        if let parked = shards[k].parked {
            // Checked here when it was not on arrival; if it is out of range, nobody sent shard k.
            guard Fusion.single(acc, parked.payload, 1, count: range.count) else {
                refuseParked(shard: k)
                return false
            }
            shards[k].parked = nil
        } else {
            Fusion.scale(acc, Float(1 / shards[k].weight), count: range.count)
        }
        shards[k].complete = true
        return true
    }

    public func isComplete(shard k: Int) -> Bool { shards[k].complete }

    /// Members whose shard k arrived.
    public func arrived(shard k: Int) -> Set<String> { shards[k].arrived }

    /// The weighted mean gradient of shard k (valid once complete, until it is released or the
    /// next `begin`).
    public func gradient(shard k: Int) -> UnsafeBufferPointer<Float> {
        precondition(!shards[k].released, "shard \(k)'s gradient was released")
        return UnsafeBufferPointer(start: sum(k), count: layout.range(k).count)
    }

    /// What keeps `gradient(shard:)`'s memory alive (a frame, or this aggregator): the owner to
    /// give a zero-copy send of it.
    public func gradientOwner(shard k: Int) -> AnyObject { shards[k].inPlace?.owner ?? self }

    /// Shard k's gradient is no longer needed (the optimizer has used it): a frame it was
    /// fused into goes back to the allocator, and a pool buffer to the pool, now rather than
    /// at the next step.
    public func release(shard k: Int) {
        shards[k].inPlace = nil
        if let buffer = shards[k].buffer { pool.append(buffer) }
        shards[k].buffer = nil
        shards[k].released = true
    }

    /// Where shard k's sum is built: its frame, or its pool buffer (taken now if it has none).
    private func sum(_ k: Int) -> UnsafeMutablePointer<Float> {
        if let inPlace = shards[k].inPlace { return inPlace.sum }
        if let buffer = shards[k].buffer { return buffer }
        let buffer: UnsafeMutablePointer<Float>
        if let reused = pool.popLast() {
            buffer = reused
        } else {
            // Cache-line aligned, the size of the layout's largest shard.
            let raw = UnsafeMutableRawPointer.allocate(byteCount: layout.range(0).count * MemoryLayout<Float>.stride, alignment: 64)
            buffer = raw.initializeMemory(as: Float.self, repeating: 0, count: layout.range(0).count)
            allocated.append(buffer)
        }
        shards[k].buffer = buffer
        return buffer
    }
}
