import Testing
import TestSupport
@testable import CohortCoordinator
import CohortWire

/// A contribution as the data socket would deliver it: header plus payload bytes.
final class Frame {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
}

/// A received frame's payload, which the aggregator may fuse into (`writable: true`).
final class WritableFrame {
    let memory: UnsafeMutableRawBufferPointer
    init(_ values: ArraySlice<Float>) {
        memory = .allocate(byteCount: values.count * 4, alignment: 16)
        values.withUnsafeBytes { memory.copyMemory(from: $0) }
    }
    deinit { memory.deallocate() }
}

/// How a contribution reaches the aggregator: an fp32 frame received over a socket (ours to
/// fuse into), fp32 values in a member's shared-memory segment (which it can still change), or
/// a bf16 frame.
enum Arrival: String, CaseIterable, CustomTestStringConvertible {
    case fp32Frame, fp32Shared, bf16Frame
    var encoding: ShardEncoding { self == .bf16Frame ? .bf16 : .fp32 }
    /// The first contribution of several is parked without a check of its own (the pass that
    /// fuses it checks it).
    var parkedUnchecked: Bool { self != .fp32Frame }
    var testDescription: String { rawValue }
}

struct AggregatorTests {
    let layout = ShardLayout(parameterCount: 10_007, shardElements: 1024) // a short last shard

    func header(_ layout: ShardLayout, shard k: Int, step: UInt64 = 7, samples: UInt32, encoding: ShardEncoding = .fp32) -> ShardHeader {
        let r = layout.range(k)
        return ShardHeader(job: 1, step: step, kind: .gradient, encoding: encoding, shard: UInt32(k), shardCount: UInt32(layout.shardCount),
                           elementOffset: UInt64(r.lowerBound), elementCount: UInt32(r.count), sampleCount: samples)
    }

    /// `values` from `member`, arriving as `arrival` says.
    func send(_ agg: StepAggregator, _ member: String, _ h: ShardHeader, _ values: [Float], as arrival: Arrival) -> Result<StepAggregator.Outcome, Rejection> {
        if arrival == .fp32Frame {
            let f = WritableFrame(values[...])
            return agg.contribute(from: member, header: h, payload: UnsafeRawBufferPointer(f.memory), owner: f, writable: true)
        }
        // (A segment's memory stands here as bytes the aggregator may not write: `writable: false`.)
        let f = Frame(bytes(values[...], arrival.encoding))
        return f.bytes.withUnsafeBytes { agg.contribute(from: member, header: h, payload: $0, owner: f, writable: false) }
    }

    func bytes(_ values: ArraySlice<Float>, _ encoding: ShardEncoding) -> [UInt8] {
        switch encoding {
        case .fp32: return values.withUnsafeBytes { Array($0) }
        default:
            var out: [UInt8] = []
            for v in values { let b = BFloat16.encode(v); out += [UInt8(b & 0xFF), UInt8(b >> 8)] }
            return out
        }
    }

    @Test(arguments: [ShardEncoding.fp32, .bf16], [1, 2, 3, 5])
    func theResultIsTheSampleWeightedMeanWhateverTheArrivalOrder(encoding: ShardEncoding, memberCount: Int) {
        var rng = SeededGenerator(seed: UInt64(memberCount))
        let names = (0..<memberCount).map { "w\($0)" }
        let samples = names.map { _ in UInt32.random(in: 1...64, using: &rng) }
        let grads = names.map { _ in (0..<layout.parameterCount).map { _ in Float.random(in: -1...1, using: &rng) } }
        // What the aggregator sees for bf16: the values after rounding to bf16.
        let seen = grads.map { g in encoding == .bf16 ? g.map { BFloat16.decode(BFloat16.encode($0)) } : g }
        let total = Double(samples.reduce(0, +))
        let expected = (0..<layout.parameterCount).map { i in
            (0..<memberCount).reduce(0.0) { $0 + Double(seen[$1][i]) * Double(samples[$1]) } / total
        }

        let agg = StepAggregator(job: 1, layout: layout, encoding: encoding)
        agg.begin(step: 7, members: Set(names))
        var arrivals = [(Int, Int)]()
        for m in 0..<memberCount { for k in 0..<layout.shardCount { arrivals.append((m, k)) } }
        arrivals.shuffle(using: &rng)
        var completed = 0
        for (m, k) in arrivals {
            let frame = Frame(bytes(grads[m][layout.range(k)], encoding))
            let outcome = frame.bytes.withUnsafeBytes {
                agg.contribute(from: names[m], header: header(layout, shard: k, samples: samples[m], encoding: encoding), payload: $0, owner: frame)
            }
            if case .success(.complete) = outcome { completed += 1 }
            if case let .failure(r) = outcome { Issue.record("refused: \(r)") }
        }
        #expect(completed == layout.shardCount)
        var worst = 0.0
        for k in 0..<layout.shardCount {
            let g = agg.gradient(shard: k)
            for (j, i) in layout.range(k).enumerated() { worst = max(worst, abs(Double(g[j]) - expected[i])) }
        }
        #expect(worst < 1e-6, "max error \(worst)")
    }

    @Test func badContributionsAreRefusedAndNeverTouchTheResult() {
        let small = ShardLayout(parameterCount: 40, shardElements: 16)
        let agg = StepAggregator(job: 1, layout: small, encoding: .fp32)
        agg.begin(step: 3, members: ["a", "b"])
        let ones = Frame(bytes(ArraySlice(repeating: 1, count: 16), .fp32))
        func send(_ member: String, _ h: ShardHeader, _ f: Frame) -> Result<StepAggregator.Outcome, Rejection> {
            f.bytes.withUnsafeBytes { agg.contribute(from: member, header: h, payload: $0, owner: f) }
        }
        #expect(send("a", header(small, shard: 0, step: 2, samples: 1), ones) == .failure(.staleStep(got: 2, expected: 3)))
        #expect(send("mallory", header(small, shard: 0, step: 3, samples: 1), ones) == .failure(.notAMember("mallory")))
        #expect(send("a", header(small, shard: 0, step: 3, samples: 0), ones) == .failure(.noSamples))
        var wrongEncoding = header(small, shard: 0, step: 3, samples: 1)
        wrongEncoding.encoding = .bf16
        #expect(send("a", wrongEncoding, ones) == .failure(.wrongEncoding(got: .bf16)))
        var wrongKind = header(small, shard: 0, step: 3, samples: 1)
        wrongKind.kind = .parameters
        #expect(send("a", wrongKind, ones) == .failure(.wrongKind(.parameters)))
        if case .failure(.wrongLayout) = send("a", header(small, shard: 0, step: 3, samples: 1), Frame([0, 0, 0, 0])) {} else {
            Issue.record("a short payload must be refused")
        }
        var shifted = header(small, shard: 1, step: 3, samples: 1)
        shifted.elementOffset = 3
        if case .failure(.wrongLayout) = send("a", shifted, ones) {} else { Issue.record("a shifted shard must be refused") }
        var poisoned = Array(repeating: Float(1), count: 16)
        poisoned[9] = .nan
        // (Received frames, checked on arrival; one in shared memory is checked when it is fused:
        // aParkedContributionIsCheckedInThePassThatFusesIt.)
        #expect(self.send(agg, "b", header(small, shard: 0, step: 3, samples: 1), poisoned, as: .fp32Frame) == .failure(.nonFinite(shard: 0, index: 9)))
        poisoned[9] = .infinity
        #expect(self.send(agg, "b", header(small, shard: 0, step: 3, samples: 1), poisoned, as: .fp32Frame) == .failure(.nonFinite(shard: 0, index: 9)))

        // The sound contributions still give the exact mean.
        #expect(send("a", header(small, shard: 0, step: 3, samples: 1), ones) == .success(.parked))
        #expect(send("a", header(small, shard: 0, step: 3, samples: 1), ones) == .failure(.duplicate(member: "a", shard: 0)))
        let threes = Frame(bytes(ArraySlice(repeating: 3, count: 16), .fp32))
        #expect(send("b", header(small, shard: 0, step: 3, samples: 3), threes) == .success(.complete(shard: 0)))
        #expect(Array(agg.gradient(shard: 0)) == Array(repeating: 2.5, count: 16)) // (1·1 + 3·3) / 4
        #expect(send("b", header(small, shard: 0, step: 3, samples: 3), threes) == .failure(.duplicate(member: "b", shard: 0)))
    }

    /// NaN or ∞ from the first, a middle or the last member to arrive (checked alone before
    /// parking or adding, in the pass itself when it overwrites the accumulator; fp32 frames,
    /// fp32 in shared memory, bf16): refused, and the sound contributions give the exact mean
    /// as if it had never come. (A bf16 or shared first contribution of several is parked
    /// unchecked and refused when it is fused: `aParkedContributionIsCheckedInThePassThatFusesIt`.)
    @Test(arguments: Arrival.allCases, [1, 2, 3])
    func aPoisonedContributionIsRefusedWhereverItArrives(arrival: Arrival, memberCount: Int) {
        let encoding = arrival.encoding
        let small = ShardLayout(parameterCount: 100, shardElements: 100)
        let names = (0..<memberCount).map { "m\($0)" }
        for poisonedIndex in [0, 37, 99] {
            for bad in [Float.nan, .infinity, -.infinity] { for poisonedMember in 0..<memberCount {
                let agg = StepAggregator(job: 1, layout: small, encoding: encoding)
                agg.begin(step: 7, members: Set(names))
                func send(_ m: Int, _ values: [Float]) -> Result<StepAggregator.Outcome, Rejection> {
                    self.send(agg, names[m], header(small, shard: 0, samples: UInt32(m + 1), encoding: encoding), values, as: arrival)
                }
                var outcomes: [Result<StepAggregator.Outcome, Rejection>] = []
                for m in 0..<memberCount {
                    var poisoned = Array(repeating: Float(m + 1), count: 100)
                    poisoned[poisonedIndex] = bad
                    // That member's poisoned copy first, then its sound one.
                    if m == poisonedMember && !(arrival.parkedUnchecked && m == 0 && memberCount > 1) {
                        #expect(send(m, poisoned) == .failure(.nonFinite(shard: 0, index: poisonedIndex)), "\(arrival) \(memberCount) members, \(bad) at \(poisonedIndex)")
                    }
                    outcomes.append(send(m, Array(repeating: Float(m + 1), count: 100)))
                }
                #expect(outcomes.last == .success(.complete(shard: 0)))
                // Σ (m+1)·(m+1) / Σ (m+1)
                let expected = Float((1...memberCount).reduce(0) { $0 + $1 * $1 }) / Float((1...memberCount).reduce(0, +))
                #expect(agg.gradient(shard: 0).allSatisfy { abs($0 - expected) < 1e-5 }, "\(arrival) \(memberCount) members: \(Array(agg.gradient(shard: 0)).prefix(3))")
            } }
        }
    }

    /// A bf16 contribution, or one in a member's shared memory, that arrives first is parked
    /// without a pass of its own; the pass that fuses the second one with it checks both. Found
    /// out of range there, it is refused late (`takeLateRefusals`, with the element and value),
    /// nothing of it is used, the second becomes the shard's first, and its member may send the
    /// shard again. Also when both are bad, with three members, and at the deadline's close.
    @Test(arguments: [Float.nan, -Float.infinity, 0x1p64], Arrival.allCases.filter(\.parkedUnchecked))
    func aParkedContributionIsCheckedInThePassThatFusesIt(bad: Float, arrival: Arrival) {
        let small = ShardLayout(parameterCount: 300, shardElements: 300)
        let why: Rejection = bad.isFinite ? .outOfRange(shard: 0, index: 201, value: bad) : .nonFinite(shard: 0, index: 201)
        func run(_ members: [String]) -> (StepAggregator, (String, Float, Bool) -> Result<StepAggregator.Outcome, Rejection>) {
            let agg = StepAggregator(job: 1, layout: small, encoding: arrival.encoding)
            agg.begin(step: 7, members: Set(members))
            return (agg, { member, value, poisoned in
                var values = Array(repeating: value, count: 300)
                if poisoned { values[201] = bad }
                return self.send(agg, member, header(small, shard: 0, samples: UInt32(value), encoding: arrival.encoding), values, as: arrival)
            })
        }
        func refusals(_ agg: StepAggregator) -> [String] { agg.takeLateRefusals().map { "\($0.member): \($0.rejection)" } }

        // Two members: a's poison is found when b's contribution is fused with it.
        var (agg, send) = run(["a", "b"])
        #expect(send("a", 1, true) == .success(.parked))
        #expect(refusals(agg).isEmpty)
        #expect(send("b", 2, false) == .success(.parked), "b is now the shard's first")
        #expect(refusals(agg) == ["a: \(why)"])
        #expect(refusals(agg).isEmpty, "taken once")
        #expect(agg.arrived(shard: 0) == ["b"])
        #expect(send("a", 1, false) == .success(.complete(shard: 0)), "a sends the shard again")
        #expect(agg.gradient(shard: 0).allSatisfy { abs($0 - 5.0 / 3) < 1e-6 }) // (1·1 + 2·2) / 3

        // Both poisoned: b is refused at once, a late; nobody's shard is in.
        (agg, send) = run(["a", "b"])
        #expect(send("a", 1, true) == .success(.parked))
        #expect(send("b", 2, true) == .failure(why))
        #expect(refusals(agg) == ["a: \(why)"])
        #expect(agg.arrived(shard: 0).isEmpty)
        #expect(!agg.close(shard: 0))

        // Three members: the third is added to the two sound ones.
        (agg, send) = run(["a", "b", "c"])
        #expect(send("a", 1, true) == .success(.parked))
        #expect(send("b", 2, false) == .success(.parked))
        #expect(send("c", 4, false) == .success(.fused))
        #expect(refusals(agg) == ["a: \(why)"])
        #expect(send("a", 1, false) == .success(.complete(shard: 0)))
        #expect(agg.gradient(shard: 0).allSatisfy { abs($0 - 3) < 1e-6 }) // (1 + 4 + 16) / 7

        // Alone at the deadline: the close checks it, and the shard has no contribution.
        (agg, send) = run(["a", "b"])
        #expect(send("a", 1, true) == .success(.parked))
        #expect(!agg.close(shard: 0))
        #expect(refusals(agg) == ["a: \(why)"])
        #expect(!agg.isComplete(shard: 0) && agg.arrived(shard: 0).isEmpty)
        // A sound one alone closes to itself.
        #expect(send("b", 2, false) == .success(.parked))
        #expect(agg.close(shard: 0) && agg.isComplete(shard: 0))
        #expect(Array(agg.gradient(shard: 0)) == Array(repeating: 2, count: 300))
        #expect(refusals(agg).isEmpty)
    }

    /// Finite values of 2^64 or more: weighted by sample counts and summed they could overflow
    /// fp32 to ∞ (3e38 × 16 does), and the optimizer would carry that into every parameter.
    /// Refused wherever they arrive; just below the bound (the largest bf16 under it) is accepted.
    @Test(arguments: Arrival.allCases, [1, 2, 3])
    func valuesBeyondTwoToTheSixtyFourAreRefusedBeforeTheyCanOverflowTheSum(arrival: Arrival, memberCount: Int) {
        let encoding = arrival.encoding
        let small = ShardLayout(parameterCount: 300, shardElements: 300)
        let names = (0..<memberCount).map { "m\($0)" }
        for huge in [Float(3e38), -3e38, 0x1p64, -0x1p64] { for poisonedMember in 0..<memberCount {
            let agg = StepAggregator(job: 1, layout: small, encoding: encoding)
            agg.begin(step: 7, members: Set(names))
            func send(_ m: Int, _ values: [Float]) -> Result<StepAggregator.Outcome, Rejection> {
                self.send(agg, names[m], header(small, shard: 0, samples: 16, encoding: encoding), values, as: arrival)
            }
            var outcomes: [Result<StepAggregator.Outcome, Rejection>] = []
            for m in 0..<memberCount {
                // (A bf16 or shared first of several is parked unchecked: aParkedContributionIsCheckedInThePassThatFusesIt.)
                if m == poisonedMember && !(arrival.parkedUnchecked && m == 0 && memberCount > 1) {
                    var poisoned = Array(repeating: Float(1e18), count: 300) // big, and below the bound
                    poisoned[261] = huge
                    let seen = encoding == .bf16 ? BFloat16.decode(BFloat16.encode(huge)) : huge
                    #expect(send(m, poisoned) == .failure(.outOfRange(shard: 0, index: 261, value: seen)), "\(arrival) \(memberCount) members, \(huge)")
                }
                outcomes.append(send(m, Array(repeating: m == 0 ? 0x1.fep63 : 1e18, count: 300)))
            }
            #expect(outcomes.allSatisfy { if case .success = $0 { true } else { false } }, "\(outcomes)")
            #expect(outcomes.last == .success(.complete(shard: 0)))
            #expect(agg.gradient(shard: 0).allSatisfy { $0.isFinite }, "\(arrival) \(memberCount) members: \(Array(agg.gradient(shard: 0)).prefix(3))")
        } }
    }

    @Test func atTheDeadlineAShardCompletesWithTheContributionsThatArrived() {
        let small = ShardLayout(parameterCount: 20, shardElements: 20)
        let agg = StepAggregator(job: 1, layout: small, encoding: .fp32)
        agg.begin(step: 1, members: ["a", "b", "c"])
        #expect(!agg.close(shard: 0), "nobody sent it: it cannot complete")
        let twos = Frame(bytes(ArraySlice(repeating: 2, count: 20), .fp32))
        _ = twos.bytes.withUnsafeBytes { agg.contribute(from: "a", header: header(small, shard: 0, step: 1, samples: 5), payload: $0, owner: twos) }
        #expect(agg.close(shard: 0))
        #expect(Array(agg.gradient(shard: 0)) == Array(repeating: 2, count: 20), "one arrival: its own values, weight 1")

        agg.begin(step: 2, members: ["a", "b", "c"])
        let sixes = Frame(bytes(ArraySlice(repeating: 6, count: 20), .fp32))
        for (m, f, n) in [("a", twos, UInt32(1)), ("b", sixes, UInt32(3))] {
            _ = f.bytes.withUnsafeBytes { agg.contribute(from: m, header: header(small, shard: 0, step: 2, samples: n), payload: $0, owner: f) }
        }
        #expect(agg.close(shard: 0))
        #expect(Array(agg.gradient(shard: 0)) == Array(repeating: 5, count: 20), "(2·1 + 6·3) / 4 among those that arrived")
        #expect(agg.arrived(shard: 0) == ["a", "b"])
    }

    @Test func bf16RoundsToNearestEven() {
        #expect(BFloat16.encode(1.0) == 0x3F80)
        #expect(BFloat16.encode(Float(bitPattern: 0x3F80_8000)) == 0x3F80) // tie → even
        #expect(BFloat16.encode(Float(bitPattern: 0x3F81_8000)) == 0x3F82) // tie → even (up)
        #expect(BFloat16.encode(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(BFloat16.encode(-2.5) == 0xC020)
        #expect(BFloat16.encode(.nan) & 0x7FC0 == 0x7FC0)
    }
}

/// fp16, int8 and top-k contributions: decoded and fused into the same sample-weighted mean of
/// what the members' encodings carry; a payload that does not decode is refused, never applied.
struct DecodingAggregatorTests {
    let layout = ShardLayout(parameterCount: 5_003, shardElements: 1024)

    func encoded(_ codec: ShardCodec, _ values: ArraySlice<Float>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: codec.maxPayloadBytes(elements: values.count))
        let n = values.withContiguousStorageIfAvailable { v in
            out.withUnsafeMutableBytes { codec.encode(v.baseAddress!, count: v.count, into: $0.baseAddress!) }
        }!
        return Array(out[..<n])
    }

    @Test(arguments: [ShardEncoding.fp16, .int8, .topk])
    func theResultIsTheWeightedMeanOfWhatTheEncodingsCarry(encoding: ShardEncoding) {
        let codec = ShardCodec(encoding, topKFraction: 0.1)
        var rng = SeededGenerator(seed: 41)
        let names = ["a", "b", "c"]
        let samples: [UInt32] = [5, 17, 42]
        let agg = StepAggregator(job: 1, layout: layout, encoding: encoding, topKFraction: 0.1)
        agg.begin(step: 3, members: Set(names))
        var expected = [Double](repeating: 0, count: layout.parameterCount)
        var completed = 0
        for (m, name) in names.enumerated() {
            let g = (0..<layout.parameterCount).map { _ in Float.random(in: -2...2, using: &rng) }
            for k in 0..<layout.shardCount {
                let r = layout.range(k)
                let payload = encoded(codec, g[r])
                var decoded = [Float](repeating: 0, count: r.count)
                payload.withUnsafeBytes { p in decoded.withUnsafeMutableBufferPointer { codec.decode(p, count: r.count, into: $0.baseAddress!) } }
                for i in r { expected[i] += Double(decoded[i - r.lowerBound]) * Double(samples[m]) / 64 }
                let h = ShardHeader(job: 1, step: 3, kind: .gradient, encoding: encoding, shard: UInt32(k), shardCount: UInt32(layout.shardCount),
                                    elementOffset: UInt64(r.lowerBound), elementCount: UInt32(r.count), sampleCount: samples[m])
                let frame = Frame(payload)
                let outcome = frame.bytes.withUnsafeBytes { agg.contribute(from: name, header: h, payload: $0, owner: frame) }
                if case .success(.complete) = outcome { completed += 1 }
                if case let .failure(reason) = outcome { Issue.record("refused: \(reason)") }
            }
        }
        #expect(completed == layout.shardCount)
        var worst = 0.0
        for k in 0..<layout.shardCount {
            let g = agg.gradient(shard: k)
            for (j, i) in layout.range(k).enumerated() { worst = max(worst, abs(Double(g[j]) - expected[i])) }
        }
        #expect(worst < 1e-5, "worst difference from the weighted mean of the decoded values: \(worst)")
    }

    /// An int8 block whose (finite) scale, or a top-k value, decodes beyond ±2^64 is refused
    /// after decoding, before anything of it reaches the accumulator; fp16 cannot carry such a
    /// value (it clamps at 65504) and is accepted.
    @Test(arguments: [ShardEncoding.fp16, .int8, .topk])
    func decodedValuesBeyondTwoToTheSixtyFourAreRefused(encoding: ShardEncoding) {
        let codec = ShardCodec(encoding, topKFraction: 0.1)
        let agg = StepAggregator(job: 1, layout: layout, encoding: encoding, topKFraction: 0.1)
        agg.begin(step: 0, members: ["a", "b"])
        var values = [Float](repeating: 0.5, count: 1024)
        values[700] = 3e38
        let h = ShardHeader(job: 1, step: 0, kind: .gradient, encoding: encoding, shard: 0, shardCount: UInt32(layout.shardCount),
                            elementOffset: 0, elementCount: 1024, sampleCount: 16)
        let frame = Frame(encoded(codec, values[...]))
        let outcome = frame.bytes.withUnsafeBytes { agg.contribute(from: "a", header: h, payload: $0, owner: frame) }
        if encoding == .fp16 {
            #expect(outcome == .success(.fused))
            return
        }
        guard case let .failure(.outOfRange(shard, index, value)) = outcome else {
            Issue.record("expected a refusal, got \(outcome)")
            return
        }
        #expect(shard == 0 && index == 700 && value.magnitude >= 0x1p64, "\(index) \(value)")
        // Nothing of it was kept: b alone completes the shard with its own values.
        let sound = Frame(encoded(codec, [Float](repeating: 0.5, count: 1024)[...]))
        #expect(sound.bytes.withUnsafeBytes { agg.contribute(from: "a", header: h, payload: $0, owner: sound) } == .success(.fused))
        #expect(sound.bytes.withUnsafeBytes { agg.contribute(from: "b", header: h, payload: $0, owner: sound) } == .success(.complete(shard: 0)))
        #expect(agg.gradient(shard: 0).allSatisfy { $0.isFinite })
    }

    @Test func anInt8ShardWithANaNScaleIsRefusedAndLeavesTheStepOpen() {
        let codec = ShardCodec(.int8)
        let agg = StepAggregator(job: 1, layout: layout, encoding: .int8)
        agg.begin(step: 0, members: ["a"])
        var payload = encoded(codec, ArraySlice([Float](repeating: 0.5, count: 1024)))
        payload.replaceSubrange(0..<4, with: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { Array($0) })
        let h = ShardHeader(job: 1, step: 0, kind: .gradient, encoding: .int8, shard: 0, shardCount: UInt32(layout.shardCount),
                            elementOffset: 0, elementCount: 1024, sampleCount: 8)
        let frame = Frame(payload)
        let outcome = frame.bytes.withUnsafeBytes { agg.contribute(from: "a", header: h, payload: $0, owner: frame) }
        guard case let .failure(.malformed(shard, reason)) = outcome else {
            Issue.record("expected a refusal, got \(outcome)")
            return
        }
        #expect(shard == 0 && reason.contains("NaN"), "\(reason)")
        #expect(!agg.isComplete(shard: 0))
    }
}

extension AggregatorTests {
    /// fp32 contributions in frames the aggregator may overwrite: the shard's sum is built in the
    /// second contribution's frame (or the only one's) instead of the accumulator, with the same
    /// arithmetic, so the same bits; the frame lives until the shard is released.
    @Test(arguments: [1, 2, 3, 5])
    func fusingInTheFramesGivesTheAccumulatorsBits(memberCount: Int) {
        var rng = SeededGenerator(seed: 100 + UInt64(memberCount))
        let names = (0..<memberCount).map { "w\($0)" }
        let samples = names.map { _ in UInt32.random(in: 1...64, using: &rng) }
        let grads = names.map { _ in (0..<layout.parameterCount).map { _ in Float.random(in: -1...1, using: &rng) } }
        var arrivals = [(Int, Int)]()
        for m in 0..<memberCount { for k in 0..<layout.shardCount { arrivals.append((m, k)) } }
        arrivals.shuffle(using: &rng)
        let reference = StepAggregator(job: 1, layout: layout, encoding: .fp32), inPlace = StepAggregator(job: 1, layout: layout, encoding: .fp32)
        reference.begin(step: 7, members: Set(names))
        inPlace.begin(step: 7, members: Set(names))
        for (m, k) in arrivals {
            let h = header(layout, shard: k, samples: samples[m])
            let frame = Frame(bytes(grads[m][layout.range(k)], .fp32))
            let a = frame.bytes.withUnsafeBytes { reference.contribute(from: names[m], header: h, payload: $0, owner: frame) }
            let writable = WritableFrame(grads[m][layout.range(k)])
            let b = inPlace.contribute(from: names[m], header: h, payload: UnsafeRawBufferPointer(writable.memory), owner: writable, writable: true)
            #expect(a == b)
        }
        for k in 0..<layout.shardCount {
            #expect(Array(reference.gradient(shard: k)).map(\.bitPattern) == Array(inPlace.gradient(shard: k)).map(\.bitPattern), "shard \(k)")
            let accumulatorOwned = ObjectIdentifier(reference.gradientOwner(shard: k)) == ObjectIdentifier(reference)
            let frameOwned = inPlace.gradientOwner(shard: k) is WritableFrame
            #expect(accumulatorOwned)
            #expect(frameOwned, "shard \(k) was summed in a frame")
        }
        // Released, the frame goes (nothing else holds it).
        weak var frame: WritableFrame?
        frame = inPlace.gradientOwner(shard: 0) as? WritableFrame
        #expect(frame != nil)
        inPlace.release(shard: 0)
        #expect(frame == nil)
    }

    /// A poisoned second contribution is checked a block at a time before its frame is
    /// overwritten: refused with the element and value, the parked first one untouched, and
    /// a sound second contribution then gives the exact mean.
    @Test(arguments: [Float.nan, 1e30, -Float.infinity])
    func aPoisonedFrameIsRefusedBeforeItIsFusedInto(bad: Float) {
        let small = ShardLayout(parameterCount: 600, shardElements: 600)
        let agg = StepAggregator(job: 1, layout: small, encoding: .fp32)
        agg.begin(step: 7, members: ["a", "b"])
        let a = WritableFrame(ArraySlice((0..<600).map { Float($0) }))
        #expect(agg.contribute(from: "a", header: header(small, shard: 0, samples: 1), payload: UnsafeRawBufferPointer(a.memory), owner: a, writable: true)
            == .success(.parked))
        var poisoned = [Float](repeating: 2, count: 600)
        poisoned[300] = bad
        let b = WritableFrame(poisoned[...])
        let refused = agg.contribute(from: "b", header: header(small, shard: 0, samples: 3), payload: UnsafeRawBufferPointer(b.memory), owner: b, writable: true)
        let why: Rejection = bad.isFinite ? .outOfRange(shard: 0, index: 300, value: bad) : .nonFinite(shard: 0, index: 300)
        #expect(refused == .failure(why))
        #expect(!agg.isComplete(shard: 0))
        let sound = WritableFrame(ArraySlice(repeating: 2, count: 600))
        #expect(agg.contribute(from: "b", header: header(small, shard: 0, samples: 3), payload: UnsafeRawBufferPointer(sound.memory), owner: sound, writable: true)
            == .success(.complete(shard: 0)))
        let g = Array(agg.gradient(shard: 0))
        let mean: [Float] = (0..<600).map { i in Float(i) * 0.25 + 2 * 0.75 }
        #expect(g == mean)
    }

    /// A contribution in a member's shared memory (`writable: false`) can change after it was
    /// checked. Parked, it is checked again by the pass that fuses it, even when the second
    /// contribution is a frame that could be fused into in place: a NaN written there meanwhile
    /// is refused late, and never reaches the sum.
    @Test func aSharedContributionThatChangesWhileParkedNeverReachesTheSum() {
        let small = ShardLayout(parameterCount: 600, shardElements: 600)
        let agg = StepAggregator(job: 1, layout: small, encoding: .fp32)
        agg.begin(step: 7, members: ["a", "b"])
        let segment = WritableFrame(ArraySlice((0..<600).map { Float($0) })) // stands for a's segment
        #expect(agg.contribute(from: "a", header: header(small, shard: 0, samples: 1), payload: UnsafeRawBufferPointer(segment.memory),
                               owner: segment, writable: false) == .success(.parked))
        segment.memory.storeBytes(of: Float.nan, toByteOffset: 4 * 123, as: Float.self) // a writes again
        let b = WritableFrame(ArraySlice(repeating: 2, count: 600))
        #expect(agg.contribute(from: "b", header: header(small, shard: 0, samples: 3), payload: UnsafeRawBufferPointer(b.memory),
                               owner: b, writable: true) == .success(.parked))
        #expect(agg.takeLateRefusals().map(\.member) == ["a"])
        #expect(!agg.isComplete(shard: 0))
        // a sends it again, sound: the exact mean.
        segment.memory.storeBytes(of: Float(123), toByteOffset: 4 * 123, as: Float.self)
        #expect(agg.contribute(from: "a", header: header(small, shard: 0, samples: 1), payload: UnsafeRawBufferPointer(segment.memory),
                               owner: segment, writable: false) == .success(.complete(shard: 0)))
        let mean: [Float] = (0..<600).map { i in Float(i) * 0.25 + 2 * 0.75 }
        #expect(Array(agg.gradient(shard: 0)) == mean)
    }
}

extension AggregatorTests {
    /// bf16 payloads of random patterns with every edge a check turns on: values just below and
    /// at ±2^64, ±∞, NaNs, zeros, subnormals.
    static func bf16Payload(count: Int, seed: UInt64, finiteOnly: Bool) -> [UInt8] {
        var rng = SeededGenerator(seed: seed)
        let edges: [UInt16] = [0x0000, 0x8000, 0x0001, 0x5F7F, 0xDF7F, 0x5F80, 0xDF80, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x3F80]
        var out: [UInt8] = []
        for i in 0..<count {
            var h = i < edges.count ? edges[i] : UInt16.random(in: 0...UInt16.max, using: &rng)
            // Finite and below 2^64: keep the exponent under 191 (0x5F8 in the top bits).
            if finiteOnly && (h & 0x7F80) >= 0x5F80 { h &= 0xBFFF }
            out += [UInt8(h & 0xFF), UInt8(h >> 8)]
        }
        return out
    }

    /// The first index where two results' bits differ.
    func firstDifference(_ x: [UInt32], _ y: [UInt32]) -> Int? { x.indices.first { x[$0] != y[$0] } }

    /// The fusion loops a round runs (C kernels) against the Swift loops (`Fusion.Reference`)
    /// for payloads x and y, each pass starting from `start`: the same verdicts, and the same
    /// bits wherever the verdict lets the result be used. `add` only with a clean x (its
    /// contribution is checked before it is called).
    func expectKernelsMatchTheSwiftLoops(_ x: Payload, _ y: Payload, count: Int, firstIsClean: Bool, start: [Float],
                                         sourceLocation: SourceLocation = #_sourceLocation) {
        func run<Verdict>(_ body: (UnsafeMutablePointer<Float>) -> Verdict) -> ([UInt32], Verdict) {
            var acc = start
            let verdict = acc.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
            return (acc.map(\.bitPattern), verdict)
        }
        let two = run { Fusion.firstTwo($0, x, 0.25, y, 0.75, count: count) }
        let twoRef = run { Fusion.Reference.firstTwo($0, x, 0.25, y, 0.75, count: count) }
        #expect(two.1 == twoRef.1, "firstTwo's verdict, count \(count)", sourceLocation: sourceLocation)
        if twoRef.1.isEmpty { #expect(firstDifference(two.0, twoRef.0) == nil, "firstTwo, count \(count)", sourceLocation: sourceLocation) }
        let one = run { Fusion.single($0, y, 3, count: count) }
        let oneRef = run { Fusion.Reference.single($0, y, 3, count: count) }
        #expect(one.1 == oneRef.1, "single's verdict, count \(count)", sourceLocation: sourceLocation)
        if oneRef.1 { #expect(firstDifference(one.0, oneRef.0) == nil, "single, count \(count)", sourceLocation: sourceLocation) }
        for scale: Float in [1, 0.3] where firstIsClean {
            let add = run { Fusion.add($0, x, 7, scale: scale, count: count); return true }
            let addRef = run { Fusion.Reference.add($0, x, 7, scale: scale, count: count); return true }
            #expect(firstDifference(add.0, addRef.0) == nil, "add, scale \(scale), count \(count)", sourceLocation: sourceLocation)
        }
    }

    /// The bf16 fusion loops in C (CKernels) give the Swift loops' bits and verdicts, at every
    /// length around the vector widths, from unaligned payloads.
    @Test func theBF16FusionKernelsAreTheSwiftLoops() {
        let n = 4099
        let a = Self.bf16Payload(count: n + 1, seed: 1, finiteOnly: true)
        let clean = Self.bf16Payload(count: n + 1, seed: 2, finiteOnly: true)
        let poisoned = Self.bf16Payload(count: n + 1, seed: 3, finiteOnly: false)
        var rng = SeededGenerator(seed: 4)
        let start = (0..<n).map { _ in Float.random(in: -100...100, using: &rng) }
        for count in Array(0...70) + [255, 256, 257, 4095, 4096, n] {
            // Either operand poisoned, or both: the pass reports each (the parked one is checked there).
            for (a, b) in [(a, clean), (a, poisoned), (poisoned, clean), (poisoned, poisoned)] {
                let aIsClean = a != poisoned
                a.withUnsafeBytes { pa in
                    b.withUnsafeBytes { pb in
                        // One byte in: the payloads are unaligned, as a received frame may be.
                        let x = pa.baseAddress! + 2, y = pb.baseAddress! + 2
                        expectKernelsMatchTheSwiftLoops(Payload(base: x, encoding: .bf16), Payload(base: y, encoding: .bf16),
                                                        count: count, firstIsClean: aIsClean, start: start)
                        #expect(Fusion.firstOutOfRange(Payload(base: y, encoding: .bf16), count: count)
                            == Fusion.Reference.firstOutOfRange(bf16: y, count: count), "firstOutOfRange, count \(count)")
                    }
                }
            }
        }
        // The check finds a lone bad value wherever it is, and only it.
        var lone = Self.bf16Payload(count: 10_000, seed: 5, finiteOnly: true)
        #expect(lone.withUnsafeBytes { Fusion.firstOutOfRange(Payload(base: $0.baseAddress!, encoding: .bf16), count: 10_000) } == nil)
        for at in [0, 1, 4095, 4096, 9_999] {
            let saved = (lone[2 * at], lone[2 * at + 1])
            (lone[2 * at], lone[2 * at + 1]) = (0x80, 0x5F) // 2^64
            #expect(lone.withUnsafeBytes { Fusion.firstOutOfRange(Payload(base: $0.baseAddress!, encoding: .bf16), count: 10_000) } == at)
            (lone[2 * at], lone[2 * at + 1]) = saved
        }
    }

    /// Sums that are not built in frames go into shard-sized buffers from a pool: a released
    /// shard's buffer is the next one fused into (still in the cache), and the sums are those
    /// of a fresh aggregator whatever buffer they landed in.
    @Test func aReleasedShardsBufferIsTheNextOneFusedInto() {
        let names = ["a", "b"]
        var rng = SeededGenerator(seed: 6)
        let grads = names.map { _ in (0..<layout.parameterCount).map { _ in Float.random(in: -1...1, using: &rng) } }
        let pooled = StepAggregator(job: 1, layout: layout, encoding: .bf16)
        for step: UInt64 in [7, 8] {
            pooled.begin(step: step, members: Set(names))
            var previous: UnsafePointer<Float>?
            for k in 0..<layout.shardCount {
                for (m, name) in names.enumerated() {
                    let frame = Frame(bytes(grads[m][layout.range(k)], .bf16))
                    _ = frame.bytes.withUnsafeBytes {
                        pooled.contribute(from: name, header: header(layout, shard: k, step: step, samples: UInt32(m + 1), encoding: .bf16), payload: $0, owner: frame)
                    }
                }
                #expect(pooled.isComplete(shard: k))
                let g = pooled.gradient(shard: k)
                if let previous { #expect(g.baseAddress == previous, "shard \(k) reused the buffer shard \(k - 1) gave back") }
                let fresh = StepAggregator(job: 1, layout: layout, encoding: .bf16)
                fresh.begin(step: step, members: Set(names))
                for (m, name) in names.enumerated() {
                    let frame = Frame(bytes(grads[m][layout.range(k)], .bf16))
                    _ = frame.bytes.withUnsafeBytes {
                        fresh.contribute(from: name, header: header(layout, shard: k, step: step, samples: UInt32(m + 1), encoding: .bf16), payload: $0, owner: frame)
                    }
                }
                #expect(Array(g).map(\.bitPattern) == Array(fresh.gradient(shard: k)).map(\.bitPattern), "step \(step), shard \(k)")
                previous = g.baseAddress
                pooled.release(shard: k)
            }
        }
    }
}

extension AggregatorTests {
    /// The fp32 in-frame fusion and the fp32 check in C give the Swift loops' bits, verdicts
    /// and untouched blocks: a bad value anywhere stops the pass before its block of 256 is
    /// overwritten, with its index.
    @Test func theFP32InFrameKernelsAreTheSwiftLoops() {
        var rng = SeededGenerator(seed: 7)
        let n = 1100
        let a = (0..<n + 1).map { _ in Float.random(in: -50...50, using: &rng) }
        let start = (0..<n).map { _ in Float.random(in: -50...50, using: &rng) }
        var aBytes = [UInt8](repeating: 0, count: 4 * (n + 1) + 1)
        aBytes.withUnsafeMutableBytes { d in a.withUnsafeBytes { d.baseAddress!.advanced(by: 1).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        for count in Array(0...40) + [255, 256, 257, 600, n] {
            for bad in [nil, 0, 255, 256, 599, n - 1] as [Int?] {
                for poison: Float in [.nan, -.infinity, 0x1p64] {
                    if let bad, bad >= count { continue }
                    var b = start
                    if let bad { b[bad] = poison }
                    aBytes.withUnsafeBytes { pa in
                        let x = pa.baseAddress! + 1 // unaligned, as a parked frame may be
                        var c = b, r = b
                        let got = c.withUnsafeMutableBufferPointer { Fusion.firstTwoInPlace($0.baseAddress!, 0.75, fp32: x, 0.25, count: count) }
                        let want = r.withUnsafeMutableBufferPointer { Fusion.Reference.firstTwoInPlace($0.baseAddress!, 0.75, fp32: x, 0.25, count: count) }
                        #expect(got == want && got == bad, "firstTwoInPlace, count \(count), bad at \(bad ?? -1)")
                        #expect(firstDifference(c.map(\.bitPattern), r.map(\.bitPattern)) == nil, "firstTwoInPlace's bits, count \(count), bad at \(bad ?? -1)")
                        var d = b, s = b
                        let one = d.withUnsafeMutableBufferPointer { Fusion.singleInPlace($0.baseAddress!, 3, count: count) }
                        let oneRef = s.withUnsafeMutableBufferPointer { Fusion.Reference.singleInPlace($0.baseAddress!, 3, count: count) }
                        #expect(one == oneRef && one == bad, "singleInPlace, count \(count)")
                        #expect(firstDifference(d.map(\.bitPattern), s.map(\.bitPattern)) == nil, "singleInPlace's bits, count \(count)")
                    }
                    let checked = b.withUnsafeBytes { Fusion.firstOutOfRange(Payload(base: $0.baseAddress!, encoding: .fp32), count: count) }
                    #expect(checked == bad, "firstOutOfRange, count \(count), bad at \(bad ?? -1)")
                    #expect(checked == b.withUnsafeBytes { Fusion.Reference.firstOutOfRange(fp32: $0.baseAddress!, count: count) })
                }
            }
        }
    }

    /// The fp32 fusion loops into a pool buffer (contributions read from a worker's shared
    /// memory) and the checked copy in C give the Swift loops' bits and verdicts, at every
    /// length around the vector widths, from unaligned payloads, with either operand poisoned
    /// or both.
    @Test func theFP32PoolFusionKernelsAreTheSwiftLoops() {
        var rng = SeededGenerator(seed: 8)
        let n = 1100
        func payload(poisonAt bad: [Int], with poison: Float) -> [UInt8] {
            var values = (0..<n + 1).map { _ in Float.random(in: -1e6...1e6, using: &rng) }
            values[1] = -0.0
            values[2] = 0x1.fffffep63 // the largest value in range
            values[3] = .leastNonzeroMagnitude
            for i in bad { values[i] = poison }
            var bytes = [UInt8](repeating: 0, count: 4 * values.count + 1)
            bytes.withUnsafeMutableBytes { d in values.withUnsafeBytes { d.baseAddress!.advanced(by: 1).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            return bytes
        }
        let start = (0..<n).map { _ in Float.random(in: -100...100, using: &rng) }
        func verdict(_ a: [UInt8], _ b: [UInt8], count: Int) -> Fusion.OutOfRange {
            var acc = start
            return a.withUnsafeBytes { pa in
                b.withUnsafeBytes { pb in
                    acc.withUnsafeMutableBufferPointer {
                        Fusion.firstTwo($0.baseAddress!, Payload(base: pa.baseAddress! + 1, encoding: .fp32), 1,
                                        Payload(base: pb.baseAddress! + 1, encoding: .fp32), 1, count: count)
                    }
                }
            }
        }
        for poison: Float in [.nan, -.infinity, 0x1p64] {
            let clean = payload(poisonAt: [], with: poison), cleanToo = payload(poisonAt: [], with: poison)
            let early = payload(poisonAt: [0], with: poison), late = payload(poisonAt: [n - 1], with: poison)
            // Inside the vector loop's body, not its first element or its tail, from count 38 on.
            let middle = payload(poisonAt: [37], with: poison)
            for count in Array(0...40) + [255, 256, 257, 600, n] {
                for (a, b) in [(clean, cleanToo), (clean, late), (early, cleanToo), (early, late), (late, clean),
                               (clean, middle), (middle, clean), (middle, middle), (early, middle)] {
                    a.withUnsafeBytes { pa in
                        b.withUnsafeBytes { pb in
                            let x = pa.baseAddress! + 1, y = pb.baseAddress! + 1 // unaligned, as a payload may be
                            expectKernelsMatchTheSwiftLoops(Payload(base: x, encoding: .fp32), Payload(base: y, encoding: .fp32),
                                                            count: count, firstIsClean: a == clean, start: start)
                        }
                    }
                }
                // The checked copy (a third contribution from shared memory): the Swift loops'
                // verdict, and the payload's bits when it is sound.
                for x in [clean, early, middle, late] {
                    x.withUnsafeBytes { px in
                        var copy = [Float](repeating: 7, count: n), copyRef = copy
                        let got = copy.withUnsafeMutableBufferPointer { Fusion.copyChecked($0.baseAddress!, fp32: px.baseAddress! + 1, count: count) }
                        let want = copyRef.withUnsafeMutableBufferPointer { Fusion.Reference.copyChecked($0.baseAddress!, fp32: px.baseAddress! + 1, count: count) }
                        #expect(got == want, "copyChecked's verdict, count \(count)")
                        if want == nil { #expect(firstDifference(copy.map(\.bitPattern), copyRef.map(\.bitPattern)) == nil, "copyChecked, count \(count)") }
                    }
                }
                // The verdicts name the right operand, wherever the bad value lies.
                let want: Fusion.OutOfRange = [count > 0 ? .first : [], count == n ? .second : []]
                #expect(verdict(early, late, count: count) == want, "firstTwo's verdict names the operands, count \(count)")
                #expect(verdict(clean, middle, count: count) == (count > 37 ? .second : []), "a bad second operand, count \(count)")
                #expect(verdict(middle, clean, count: count) == (count > 37 ? .first : []), "a bad first operand, count \(count)")
            }
        }
    }
}
