import Foundation
import Testing
import TestSupport
@testable import CohortWire

/// Each shard encoding against an independent oracle (Swift's `Float16`, the existing bf16
/// encoder, a sort), its stated error bound, the validator against every malformed payload it
/// must refuse, and error feedback over a thousand rounds. Seeded: the same cases every run.
struct ShardCodecTests {
    static let counts = [1, 127, 128, 129, 1000, 262_144]

    // MARK: Round trips within the stated bound

    @Test(arguments: ShardEncoding.allCases, Values.allCases)
    func everyEncodingRoundTripsWithinItsStatedBound(encoding: ShardEncoding, values: Values) throws {
        let codec = ShardCodec(encoding)
        for count in Self.counts where count < 262_144 || values == .normal {
            let x = values.make(count: count, seed: UInt64(count))
            let (payload, decoded) = try roundTrip(codec, x)
            #expect(payload.count == codec.maxPayloadBytes(elements: count))
            let bound = bounds(codec, x)
            let worst = (0..<count).first { !(abs(x[$0] - decoded[$0]) <= bound[$0]) }
            #expect(worst == nil, "\(encoding), \(values), \(count) elements: element \(worst ?? 0) is \(x[worst ?? 0]), decoded \(decoded[worst ?? 0]), bound \(bound[worst ?? 0])")
            if encoding == .fp32 { #expect(decoded == x) }
        }
    }

    @Test func theBoundsAreTheOnesTheProtocolStates() {
        let x: [Float] = [1, -3, 1e-30, 100_000, 0]
        #expect(bounds(ShardCodec(.fp32), x) == [0, 0, 0, 0, 0])
        #expect(bounds(ShardCodec(.bf16), x)[0...1] == [0x1p-8, 0x1p-7])         // half an ulp, 8-bit significand
        #expect(bounds(ShardCodec(.fp16), x)[0...3] == [0x1p-11, 0x1p-10, 0x1p-25, 100_000 - 65504])
        let int8 = bounds(ShardCodec(.int8), x)[0]
        #expect(int8 >= 100_000 / 127 / 2 && int8 <= 100_000 / 127 / 2 * 1.001) // half a scale
    }

    // MARK: fp16 and bf16 against independent encoders

    // Swift's Float16 exists everywhere but on Intel Macs.
    #if !(os(macOS) && arch(x86_64))
    @Test func fp16DecodesEveryBitPatternAsSwiftsFloat16Does() {
        let wrong = (0...UInt16.max).filter { bits in
            let ours = HalfPrecision.float(fp16: bits), reference = Float(Float16(bitPattern: bits))
            return ours.bitPattern != reference.bitPattern && !(ours.isNaN && reference.isNaN)
        }
        #expect(wrong.isEmpty, "fp16 patterns decoded differently: \(wrong.prefix(5))")
    }

    @Test func fp16EncodesAsSwiftsFloat16DoesAndClampsInsteadOfOverflowing() {
        var rng = SeededGenerator(seed: 0xF16)
        let wrong = (0..<200_000).compactMap { _ -> Float? in
            // Every exponent from far below fp16's subnormals to far above its range.
            let x = Float(sign: Bool.random(using: &rng) ? .minus : .plus, exponent: Int.random(in: -30...20, using: &rng),
                          significand: Float.random(in: 1..<2, using: &rng))
            let expected = x.magnitude < 65520 ? Float16(x).bitPattern : (x < 0 ? 0xFBFF : 0x7BFF)
            return HalfPrecision.fp16(x) == expected ? nil : x
        }
        #expect(wrong.isEmpty, "encoded differently from Float16: \(wrong.prefix(5))")
        let ties: [(Float, UInt16)] = [(0x1p-25, 0), (0x1.8p-24, 2), (65504, 0x7BFF), (65519.996, 0x7BFF), (65520, 0x7BFF),
                                       (.greatestFiniteMagnitude, 0x7BFF), (-.infinity, 0xFC00), (-0.0, 0x8000)]
        for (x, h) in ties { #expect(HalfPrecision.fp16(x) == h, "\(x)") }
        #expect(Float(Float16(bitPattern: HalfPrecision.fp16(.nan))).isNaN)
    }
    #endif

    @Test func bf16IsTheExistingEncoderExceptThatItClamps() {
        var rng = SeededGenerator(seed: 0xBF16)
        let wrong = (0..<200_000).compactMap { _ -> Float? in
            let x = Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng))
            let reference = BFloat16.encode(x)
            // A finite value that would round to ∞ gets the largest finite bf16 instead.
            let expected = x.isFinite && reference & 0x7FFF == 0x7F80 ? reference - 1 : reference
            return HalfPrecision.bf16(x) == expected ? nil : x
        }
        #expect(wrong.isEmpty, "encoded differently from BFloat16: \(wrong.prefix(5))")
        #expect(HalfPrecision.bf16(.greatestFiniteMagnitude) == 0x7F7F)
        #expect(HalfPrecision.bf16(-.infinity) == 0xFF80)
    }

    // MARK: int8

    @Test(arguments: [1, 127, 128, 129, 300, 1000])
    func int8BlocksKeepEachElementWithinHalfItsBlocksScale(count: Int) throws {
        var x = Values.mixed.make(count: count, seed: 8)
        if count > 256 { for i in 128..<256 { x[i] = 0 } } // an all-zero block
        let (payload, decoded) = try roundTrip(ShardCodec(.int8), x)
        let blocks = (count + 127) / 128
        #expect(payload.count == blocks * 4 + count)
        for b in 0..<blocks {
            let range = b * 128..<min(b * 128 + 128, count)
            let absmax = range.map { x[$0].magnitude }.max()!
            let scale = payload.withUnsafeBytes { Float(bitPattern: $0.loadUnaligned(fromByteOffset: 4 * b, as: UInt32.self)) }
            #expect(scale == absmax / 127)
            for i in range {
                let code = Int8(bitPattern: payload[blocks * 4 + i])
                #expect(code >= -127 && code <= 127 && decoded[i] == Float(code) * scale)
                #expect(abs(x[i] - decoded[i]) <= scale / 2 * (1 + 0x1p-12), "element \(i) of block \(b)")
                if absmax == 0 { #expect(code == 0) }
            }
        }
    }

    // MARK: topk

    @Test(arguments: [1, 127, 128, 129, 1000, 262_144], [false, true])
    func topkKeepsExactlyTheLargestMagnitudesAndZerosTheRest(count: Int, ties: Bool) throws {
        var rng = SeededGenerator(seed: UInt64(count))
        // With ties, magnitudes come from a handful of values, so the k-th largest is shared.
        let x: [Float] = ties ? (0..<count).map { _ in Float(Int.random(in: -4...4, using: &rng)) }
                              : Values.normal.make(count: count, seed: UInt64(count))
        let codec = ShardCodec(.topk, topKFraction: 0.01)
        let k = codec.keptCount(elements: count)
        #expect(k == max(1, Int((Double(count) * 0.01).rounded(.up))))
        let (payload, decoded) = try roundTrip(codec, x)
        #expect(payload.count == 4 + 6 * k)
        // The oracle: sort by magnitude, largest first, the lower index first among equals.
        let expected = Array(x.indices.sorted { (x[$0].magnitude, -$0) > (x[$1].magnitude, -$1) }.prefix(k)).sorted()
        let sent = payload.withUnsafeBytes { p in (0..<k).map { Int(p.loadUnaligned(fromByteOffset: 4 + 4 * $0, as: UInt32.self)) } }
        #expect(sent == expected)
        let kept = Set(expected)
        let wrong = (0..<count).first { i in decoded[i] != (kept.contains(i) ? BFloat16.decode(BFloat16.encode(x[i])) : 0) }
        #expect(wrong == nil, "element \(wrong ?? 0): kept values are their bf16, the others 0")
    }

    @Test func topkCountCanBeGivenDirectly() throws {
        let x = Values.normal.make(count: 1000, seed: 3)
        let codec = ShardCodec(topK: 37)
        #expect(codec.keptCount(elements: 1000) == 37 && codec.keptCount(elements: 20) == 20)
        let (payload, _) = try roundTrip(codec, x)
        #expect(payload.count == 4 + 6 * 37)
        #expect(ShardCodec(.topk, topKFraction: 0.01).keptCount(elements: 262_144) == 2622)
    }

    // MARK: Validation

    @Test(arguments: ShardEncoding.allCases)
    func validateRefusesAWrongLength(encoding: ShardEncoding) throws {
        let codec = ShardCodec(encoding)
        let (payload, _) = try roundTrip(codec, Values.normal.make(count: 300, seed: 1))
        for bad in [Array(payload.dropLast()), payload + [0], []] {
            let text = try #require(problem(codec, bad, elements: 300))
            #expect(text.contains("shard.payload") && text.contains("\(bad.count) bytes"), "\(text)")
        }
        #expect(problem(codec, payload, elements: 300) == nil)
    }

    @Test(arguments: [ShardEncoding.fp32, .bf16, .fp16], [Float.nan, .infinity, -.infinity])
    func validateNamesTheFirstNonFiniteElement(encoding: ShardEncoding, bad: Float) throws {
        var x = Values.normal.make(count: 100, seed: 2)
        x[17] = bad
        x[60] = .nan
        let codec = ShardCodec(encoding)
        let (payload, _) = try roundTrip(codec, x, validating: false)
        let text = try #require(problem(codec, payload, elements: 100))
        #expect(text.contains("element 17") && text.contains(nonFiniteName(bad)), "\(text)")
    }

    @Test func validateRefusesABadInt8ScaleOrCode() throws {
        let codec = ShardCodec(.int8)
        let (good, _) = try roundTrip(codec, Values.normal.make(count: 300, seed: 4))
        for (scale, name) in [(Float.nan, "NaN"), (.infinity, "+infinity"), (-1, "negative"), (.greatestFiniteMagnitude, "overflows")] {
            var payload = good
            withUnsafeBytes(of: scale.bitPattern.littleEndian) { payload.replaceSubrange(4..<8, with: $0) }
            let text = try #require(problem(codec, payload, elements: 300))
            #expect(text.contains("block 1") && text.contains(name), "\(text)")
        }
        // The encoder sends a block holding NaN with a NaN scale, which the receiver refuses.
        var x = Values.normal.make(count: 300, seed: 4)
        x[260] = .nan
        let (nanBlock, _) = try roundTrip(codec, x, validating: false)
        #expect(problem(codec, nanBlock, elements: 300)?.contains("block 2") == true)
        var payload = good
        payload[3 * 4 + 17] = 0x80
        #expect(problem(codec, payload, elements: 300)?.contains("-128 at element 17") == true)
    }

    @Test func validateRefusesMalformedTopkHeadersIndicesAndValues() throws {
        let codec = ShardCodec(.topk)
        let one = BFloat16.encode(1)
        func payload(k: UInt32, _ indices: [UInt32], _ values: [UInt16]) -> [UInt8] {
            var bytes: [UInt8] = []
            withUnsafeBytes(of: k.littleEndian) { bytes += $0 }
            for i in indices { withUnsafeBytes(of: i.littleEndian) { bytes += $0 } }
            for v in values { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
            return bytes
        }
        #expect(problem(codec, payload(k: 3, [2, 5, 9], [one, one, one]), elements: 10) == nil)
        let cases: [([UInt8], String)] = [
            (payload(k: 0, [2], [one]), "k = 0"),
            (payload(k: 11, Array(0..<11), Array(repeating: one, count: 11)), "more than the shard's 10"),
            (payload(k: 2, [2, 5, 9], [one, one, one]), "k = 2 but is 22 bytes"),
            (payload(k: 3, [2, 5, 5], [one, one, one]), "index 5 at position 2, not above the previous 5"),
            (payload(k: 3, [2, 7, 5], [one, one, one]), "index 5 at position 2, not above the previous 7"),
            (payload(k: 3, [2, 5, 10], [one, one, one]), "index 10 at position 2, beyond the shard's 10"),
            (payload(k: 3, [2, 5, 9], [one, 0x7FC0, one]), "NaN at element 5"),
            (payload(k: 3, [2, 5, 9], [one, one, 0xFF80]), "-infinity at element 9"),
            (Array(payload(k: 1, [2], [one]).dropLast()), "is 9 bytes"),
        ]
        for (bytes, reason) in cases {
            let text = problem(codec, bytes, elements: 10)
            #expect(text?.contains(reason) == true, "expected “\(reason)”, got \(text ?? "no error")")
        }
    }

    @Test func theShardHeaderAcceptsTheLengthsATopkPayloadCanHave() throws {
        let header = ShardHeader(job: 1, step: 1, kind: .gradient, encoding: .topk, shard: 0, shardCount: 1,
                                 elementOffset: 0, elementCount: 10, sampleCount: 1)
        #expect(header.payloadBytes == nil)
        for k in 1...10 { #expect(throws: Never.self) { try header.validatePayload(byteCount: 4 + 6 * k) } }
        for bytes in [0, 4, 9, 11, 4 + 6 * 11] { #expect(throws: WireError.self) { try header.validatePayload(byteCount: bytes) } }
        let envelope = Message.shard(header).encode()
        let payload = [UInt8](repeating: 0, count: 4 + 6 * 3)
        let decoded = try envelope.withUnsafeBytes { e in try payload.withUnsafeBytes { try Message.decode(frames: [e, $0]) } }
        #expect(decoded == .shard(header))
        var int8 = header
        int8.encoding = .int8
        #expect(int8.payloadBytes == 4 + 10)
    }

    @Test func encodingNumbersAndNamesAreFixedByTheProtocol() {
        #expect(ShardEncoding.allCases.map(\.rawValue) == [0, 1, 2, 3, 4])
        #expect(ShardEncoding.allCases.map { ShardEncoding(named: "\($0)") } == ShardEncoding.allCases)
        #expect(ShardEncoding(named: "int4") == nil)
    }

    // MARK: decode, accumulate and add agree bit for bit

    @Test(arguments: ShardEncoding.allCases)
    func accumulateAndAddAreDecodeThenAddBitForBit(encoding: ShardEncoding) throws {
        let codec = ShardCodec(encoding, topKFraction: 0.05)
        for count in [1, 129, 1000] {
            let x = Values.mixed.make(count: count, seed: 5)
            let (payload, decoded) = try roundTrip(codec, x)
            // A frame at an odd address: loads must not assume alignment.
            let unaligned = [0xAA] + payload
            let start = Values.normal.make(count: count, seed: 6)
            let weight: Float = 0.37
            var accumulated = start, added = start
            unaligned.withUnsafeBytes { raw in
                let p = UnsafeRawBufferPointer(rebasing: raw[1...])
                accumulated.withUnsafeMutableBufferPointer { codec.accumulate(p, count: count, weight: weight, into: $0.baseAddress!) }
                added.withUnsafeMutableBufferPointer { codec.add(p, count: count, into: $0.baseAddress!) }
            }
            #expect(accumulated.map(\.bitPattern) == (0..<count).map { (start[$0] + weight * decoded[$0]).bitPattern })
            #expect(added.map(\.bitPattern) == (0..<count).map { (start[$0] + decoded[$0]).bitPattern })
        }
    }

    /// The coordinator's one-pass downlink step gives the bytes the plain encoder gives for
    /// target − replica, and leaves its replica exactly where the workers' `add` leaves theirs.
    @Test(arguments: ShardEncoding.allCases)
    func encodeDifferenceIsEncodeThenAddBitForBit(encoding: ShardEncoding) {
        let codec = ShardCodec(encoding, topKFraction: 0.05)
        for count in [1, 15, 129, 1000] {
            let target = Values.mixed.make(count: count, seed: 7)
            let start = Values.normal.make(count: count, seed: 8)
            let difference = (0..<count).map { target[$0] - start[$0] }
            var plain = [UInt8](repeating: 0, count: codec.maxPayloadBytes(elements: count))
            let plainBytes = plain.withUnsafeMutableBytes { codec.encode(difference, count: count, into: $0.baseAddress!) }
            var workers = start
            plain.withUnsafeBytes { p in workers.withUnsafeMutableBufferPointer { codec.add(UnsafeRawBufferPointer(rebasing: p[..<plainBytes]), count: count, into: $0.baseAddress!) } }

            var fused = [UInt8](repeating: 0, count: codec.maxPayloadBytes(elements: count))
            var replica = start
            var scratch = [Float](repeating: 0, count: count)
            let fusedBytes = fused.withUnsafeMutableBytes { out in
                replica.withUnsafeMutableBufferPointer { r in
                    scratch.withUnsafeMutableBufferPointer { codec.encodeDifference(target, replica: r.baseAddress!, count: count, scratch: $0.baseAddress!, into: out.baseAddress!) }
                }
            }
            #expect(fusedBytes == plainBytes && fused == plain, "\(encoding), \(count) elements: the payloads differ")
            #expect(replica.map(\.bitPattern) == workers.map(\.bitPattern), "\(encoding), \(count) elements: the replicas differ")
        }
    }

    // MARK: Error feedback

    @Test(arguments: [ShardCodec(.int8), ShardCodec(.topk, topKFraction: 0.01), ShardCodec(.fp16), ShardCodec(.bf16)])
    func errorFeedbackLosesNothingOverAThousandRounds(codec: ShardCodec) throws {
        // Two shards of an odd size (not a multiple of the int8 block) cut one flat buffer.
        let n = 2 * 400, shards = [0..<400, 400..<800]
        var rng = SeededGenerator(seed: 0xEF)
        let bias = (0..<n).map { _ in Float.random(in: -0.5...0.5, using: &rng) } // gradients that keep a direction
        let feedback = ErrorFeedback(count: n)
        var sentSum = [Double](repeating: 0, count: n), decodedSum = sentSum, rounding = sentSum
        var out = [UInt8](repeating: 0, count: codec.maxPayloadBytes(elements: 400))
        var largestX: Float = 0
        var largestResidual = [Float](repeating: 0, count: 1000)
        var broken: [String] = [] // the first rounds that break a per-round property
        for round in 0..<1000 {
            let x = (0..<n).map { bias[$0] + gaussian(&rng) }
            largestX = max(largestX, x.map(\.magnitude).max()!)
            for range in shards {
                let before = Array(feedback.residual[range])
                let e = range.map { before[$0 - range.lowerBound] + x[$0] }
                let bytes = x.withUnsafeBufferPointer { xp in
                    out.withUnsafeMutableBytes { feedback.encode(codec, xp.baseAddress!, offset: range.lowerBound, count: range.count, into: $0.baseAddress!) }
                }
                let decoded = try out[..<bytes].withUnsafeBytes { p in
                    try codec.validate(p, elements: range.count)
                    return [Float](unsafeUninitializedCapacity: range.count) { d, filled in
                        codec.decode(p, count: range.count, into: d.baseAddress!)
                        filled = range.count
                    }
                }
                let r = Array(feedback.residual[range])
                if let j = r.indices.first(where: { r[$0].bitPattern != (e[$0] - decoded[$0]).bitPattern }) {
                    broken.append("round \(round), element \(range.lowerBound + j): r ≠ e − decode(q)")
                }
                if codec.encoding != .topk {
                    let bound = bounds(codec, e)
                    if let j = r.indices.first(where: { r[$0].magnitude > bound[$0] }) {
                        broken.append("round \(round), element \(range.lowerBound + j): |r| = \(r[j].magnitude) beyond one round's bound \(bound[j])")
                    }
                }
                for (j, i) in range.enumerated() {
                    sentSum[i] += Double(x[i])
                    decodedSum[i] += Double(decoded[j])
                    rounding[i] += Double(e[j].magnitude) * 0x1p-24 // e = x + r is the one inexact step
                }
            }
            largestResidual[round] = feedback.residual.map(\.magnitude).max()!
        }
        #expect(broken.isEmpty, "\(broken.count) times, first: \(broken.prefix(3))")
        // Telescoping: Σ x − Σ decoded is the final residual, up to the rounding of e = x + r.
        let gaps = (0..<n).map { sentSum[$0] - decodedSum[$0] - Double(feedback.residual[$0]) }
        let open = (0..<n).first { gaps[$0].magnitude > rounding[$0] + 1e-9 }
        #expect(open == nil, "element \(open ?? 0): Σx − Σdecoded − r = \(gaps[open ?? 0])")
        // The residual stays bounded: one round's error for the rounding encodings; for topk it
        // settles (each element waits its turn) instead of growing with the rounds.
        let worst = largestResidual.max()!
        switch codec.encoding {
        case .int8: #expect(worst <= largestX / 250)
        case .fp16: #expect(worst <= largestX * 0x1p-10)
        case .bf16: #expect(worst <= largestX * 0x1p-7)
        default:
            #expect(worst <= 10 * largestX)
            #expect(largestResidual[500...].max()! <= 1.25 * largestResidual[..<500].max()!)
        }
    }

    @Test func errorFeedbackTouchesOnlyItsShardAndResets() {
        let feedback = ErrorFeedback(count: 300)
        let x = Values.normal.make(count: 300, seed: 9)
        var out = [UInt8](repeating: 0, count: 1000)
        _ = x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBytes { feedback.encode(ShardCodec(.int8), xp.baseAddress!, offset: 100, count: 150, into: $0.baseAddress!) }
        }
        #expect(feedback.residual[..<100].allSatisfy { $0 == 0 } && feedback.residual[250...].allSatisfy { $0 == 0 })
        #expect(feedback.residual[100..<250].contains { $0 != 0 })
        feedback.reset()
        #expect(feedback.residual.allSatisfy { $0 == 0 })
    }
}

// MARK: Helpers

/// Shapes of shard contents: the ordinary, the extremes, and the edges of the formats.
enum Values: CaseIterable, Sendable {
    case normal, tiny, huge, zeros, mixed, edges

    func make(count: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator.stream(seed: seed, UInt64(Self.allCases.firstIndex(of: self)!))
        let edges: [Float] = [0, -0.0, 65504, -65519.99, 65520, 1e6, 0x1p-14, 0x1p-24, 0x1p-25, 1e-8,
                              .leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude, -3.3e38]
        return (0..<count).map { i in
            switch self {
            case .normal: return gaussian(&rng)
            case .tiny: return gaussian(&rng) * 0x1p-136 // fp32 subnormals, mostly
            case .huge: return gaussian(&rng) * 1e30
            case .zeros: return 0
            case .mixed: return gaussian(&rng) * Float(sign: .plus, exponent: Int.random(in: -40...40, using: &rng), significand: 1)
            case .edges: return edges[i % edges.count]
            }
        }
    }
}

/// A standard normal sample (Box–Muller), from the seeded generator.
func gaussian(_ rng: inout SeededGenerator) -> Float {
    let u = Double.random(in: .ulpOfOne..<1, using: &rng), v = Double.random(in: 0..<1, using: &rng)
    return Float((-2 * log(u)).squareRoot() * cos(2 * .pi * v))
}

/// Encodes `x`, checks the payload with `validate`, and decodes it.
func roundTrip(_ codec: ShardCodec, _ x: [Float], validating: Bool = true) throws -> (payload: [UInt8], decoded: [Float]) {
    var payload = [UInt8](repeating: 0, count: codec.maxPayloadBytes(elements: x.count))
    let written = x.withUnsafeBufferPointer { xp in payload.withUnsafeMutableBytes { codec.encode(xp.baseAddress!, count: x.count, into: $0.baseAddress!) } }
    #expect(written == payload.count)
    if validating { try payload.withUnsafeBytes { try codec.validate($0, elements: x.count) } }
    let decoded = [Float](unsafeUninitializedCapacity: x.count) { d, filled in
        payload.withUnsafeBytes { codec.decode($0, count: x.count, into: d.baseAddress!) }
        filled = x.count
    }
    return (payload, decoded)
}

func bounds(_ codec: ShardCodec, _ x: [Float]) -> [Float] {
    [Float](unsafeUninitializedCapacity: x.count) { b, filled in
        x.withUnsafeBufferPointer { codec.errorBounds($0.baseAddress!, count: x.count, into: b.baseAddress!) }
        filled = x.count
    }
}

/// `validate`'s error text, or nil when it accepts the payload.
func problem(_ codec: ShardCodec, _ payload: [UInt8], elements: Int) -> String? {
    do {
        try payload.withUnsafeBytes { try codec.validate($0, elements: elements) }
        return nil
    } catch {
        return "\(error)"
    }
}
