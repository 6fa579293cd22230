import Foundation
import Testing
import TestSupport
@testable import CohortWire

/// The C loops (Sources/CKernels) against the Swift code they replace, bit for bit: the bf16
/// encoder this CPU's loader picked (AVX-512, AVX2 or baseline) against `HalfPrecision.bf16`,
/// and the cache-bypassing copy against the bytes it was given, at every length and alignment
/// where a vector loop's head or tail could go wrong.
struct KernelTests {
    /// Bit patterns where rounding, clamping and NaN handling turn: zeros, subnormals, ties both
    /// ways, the largest finite values and those just past them, infinities, quiet and
    /// signalling NaNs with low payload bits only (which bf16 would drop).
    static let edges: [UInt32] = [
        0, 0x8000_0000, 0x0000_0001, 0x8000_7FFF, 0x0000_8000, 0x0001_8000, 0x0000_8001, 0x3F80_8000, 0x3F81_8000,
        0x7F7F_0000, 0x7F7F_7FFF, 0x7F7F_8000, 0x7F7F_FFFF, 0xFF7F_8000, 0xFF7F_FFFF, 0x7F80_0000, 0xFF80_0000,
        0x7F80_0001, 0xFF80_0001, 0x7FC0_0000, 0xFFC0_0000, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7F80_8000, 0x0080_0000,
    ]

    static func values(count: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        var x = edges.map { Float(bitPattern: $0) }
        while x.count < count { x.append(Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng))) }
        return Array(x.prefix(count))
    }

    @Test func theBF16EncoderIsHalfPrecisionsAtEveryLengthAndAlignment() {
        let x = Self.values(count: 1 << 18, seed: 0xC0DE)
        let codec = ShardCodec(.bf16)
        // Long: every random and edge pattern, into an unaligned buffer.
        var out = [UInt8](repeating: 0xAA, count: 2 * x.count + 3)
        _ = out.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { codec.encode($0.baseAddress!, count: x.count, into: o.baseAddress! + 1) } }
        func sent(_ i: Int) -> UInt16 { UInt16(out[1 + 2 * i]) | UInt16(out[2 + 2 * i]) << 8 }
        let wrong = x.indices.first { sent($0) != HalfPrecision.bf16(x[$0]) }
        #expect(wrong == nil, "element \(wrong ?? 0): \(x[wrong ?? 0].bitPattern) encoded differently")
        #expect(out[0] == 0xAA && out[out.count - 2] == 0xAA && out[out.count - 1] == 0xAA, "wrote outside its elements")
        // Short: every length around the vector widths, from every start; nothing past the end.
        for count in 0...70 {
            for start in 0..<3 {
                var small = [UInt8](repeating: 0x55, count: 2 * count + 8)
                _ = small.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { codec.encode($0.baseAddress! + start, count: count, into: o.baseAddress! + 3) } }
                for i in 0..<count {
                    let got = UInt16(small[3 + 2 * i]) | UInt16(small[4 + 2 * i]) << 8
                    #expect(got == HalfPrecision.bf16(x[start + i]), "count \(count), element \(i)")
                }
                #expect(small[0..<3].allSatisfy { $0 == 0x55 } && small[(3 + 2 * count)...].allSatisfy { $0 == 0x55 }, "count \(count): wrote outside")
            }
        }
    }

    @Test func theBF16DifferenceStepIsTheScalarOne() {
        // Targets and replicas of similar magnitude (a downlink's case) and random patterns.
        var rng = SeededGenerator(seed: 0xD1FF)
        let n = 70_001
        let target = (0..<n).map { i in i < 1000 ? Float(bitPattern: Self.edges[i % Self.edges.count]) : Float.random(in: -4...4, using: &rng) }
        let start = (0..<n).map { i in i % 3 == 0 ? Float.random(in: -4...4, using: &rng) : Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng)) }
        var expectedReplica = start
        var expectedOut = [UInt16](repeating: 0, count: n)
        for i in 0..<n {
            let h = HalfPrecision.bf16(target[i] - expectedReplica[i])
            expectedOut[i] = h
            expectedReplica[i] += HalfPrecision.float(bf16: h)
        }
        var replica = start
        var out = [UInt8](repeating: 0, count: 2 * n + 1)
        var scratch = [Float](repeating: 0, count: n)
        _ = out.withUnsafeMutableBytes { o in
            replica.withUnsafeMutableBufferPointer { r in
                scratch.withUnsafeMutableBufferPointer { s in
                    target.withUnsafeBufferPointer { ShardCodec(.bf16).encodeDifference($0.baseAddress!, replica: r.baseAddress!, count: n, scratch: s.baseAddress!, into: o.baseAddress! + 1) }
                }
            }
        }
        func sent(_ i: Int) -> UInt16 { UInt16(out[1 + 2 * i]) | UInt16(out[2 + 2 * i]) << 8 }
        let wrongOut = (0..<n).first { sent($0) != expectedOut[$0] }
        // Bit for bit, except which NaN a NaN operand gives (IEEE leaves the payload open, and
        // a vectorised add may take its operands in the other order).
        let wrongReplica = (0..<n).first { i in
            replica[i].bitPattern != expectedReplica[i].bitPattern && !(replica[i].isNaN && expectedReplica[i].isNaN)
        }
        #expect(wrongOut == nil, "payload element \(wrongOut ?? 0)")
        #expect(wrongReplica == nil, "replica element \(wrongReplica ?? 0)")
    }

    @Test(arguments: [false, true])
    func aReplicaCopyIsTheBytesItWasGiven(streaming: Bool) {
        var rng = SeededGenerator(seed: 0xC0FF)
        let source = (0..<4200).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for count in Array(0...130) + [1000, 4096] {
            for (from, to) in [(0, 0), (1, 0), (0, 5), (3, 13), (4, 8)] {
                var dst = [UInt8](repeating: 0xEE, count: count + 32)
                dst.withUnsafeMutableBytes { d in
                    source.withUnsafeBytes { ReplicaCopy.copy($0.baseAddress! + from, to: d.baseAddress! + to, byteCount: count, streaming: streaming) }
                }
                #expect(Array(dst[to..<(to + count)]) == Array(source[from..<(from + count)]), "\(count) bytes from +\(from) to +\(to)")
                #expect(dst[..<to].allSatisfy { $0 == 0xEE } && dst[(to + count)...].allSatisfy { $0 == 0xEE }, "\(count) bytes: wrote outside")
            }
        }
    }

    /// bf16 decoding (plain, and streaming into a large replica) and a replica's bf16 addition
    /// give `HalfPrecision.float`'s values, at every length and alignment.
    @Test func theBF16DecodeAndAddAreHalfPrecisions() {
        var rng = SeededGenerator(seed: 0xDEC0)
        let halves = (0..<5000).map { i in i < Self.edges.count ? UInt16(Self.edges[i] >> 16) : UInt16.random(in: 0...UInt16.max, using: &rng) }
        var payload = [UInt8](repeating: 0, count: 2 * halves.count + 1)
        for (i, h) in halves.enumerated() { (payload[1 + 2 * i], payload[2 + 2 * i]) = (UInt8(h & 0xFF), UInt8(h >> 8)) }
        let start = (0..<halves.count + 8).map { _ in Float.random(in: -4...4, using: &rng) }
        let codec = ShardCodec(.bf16)
        for count in Array(0...70) + [1000, 4999] {
            for to in [0, 1, 3] { // float offsets into the output: 4-, 8- and 16-byte aligned starts
                for streaming in [false, true] {
                    var out = [Float](repeating: -7, count: halves.count + 8)
                    out.withUnsafeMutableBufferPointer { o in
                        payload.withUnsafeBytes { codec.decode(UnsafeRawBufferPointer(rebasing: $0[1..<(1 + 2 * count)]), count: count, into: o.baseAddress! + to, streaming: streaming) }
                    }
                    let wrong = (0..<count).first { out[to + $0].bitPattern != HalfPrecision.float(bf16: halves[$0]).bitPattern }
                    #expect(wrong == nil, "decode, \(count) values to +\(to), streaming \(streaming): element \(wrong ?? 0)")
                    #expect(out[..<to].allSatisfy { $0 == -7 } && out[(to + count)...].allSatisfy { $0 == -7 }, "decode \(count): wrote outside")
                }
                var acc = start
                acc.withUnsafeMutableBufferPointer { a in
                    payload.withUnsafeBytes { codec.add(UnsafeRawBufferPointer(rebasing: $0[1..<(1 + 2 * count)]), count: count, into: a.baseAddress! + to) }
                }
                let wrong = (0..<count).first { i in
                    let expected = start[to + i] + HalfPrecision.float(bf16: halves[i])
                    return acc[to + i].bitPattern != expected.bitPattern && !(acc[to + i].isNaN && expected.isNaN)
                }
                #expect(wrong == nil, "add, \(count) values to +\(to): element \(wrong ?? 0)")
                #expect(acc[..<to] == start[..<to] && acc[(to + count)...] == start[(to + count)...], "add \(count): wrote outside")
            }
        }
    }

    @Test func onlyAReplicaLargerThanTheCachesIsCopiedPastThem() {
        #expect(!ReplicaCopy.streams(parameterCount: 1_000_000))
        #expect(ReplicaCopy.streams(parameterCount: 16 << 20))
    }
}
