import Testing
import TestSupport
@testable import CohortWire

/// 100,000 seeded random, truncated, bit-flipped and oversized inputs: each decodes to an error
/// or to a message that re-encodes to exactly the same bytes; none may crash the process.
struct CodecFuzzTests {
    enum Mutation: CaseIterable { case random, truncate, flipBits, oversizeLength, splice }

    @Test func hundredThousandHostileInputsNeverCrash() throws {
        var rng = SeededGenerator(seed: 0xC0_4087)
        let limits = WireLimits(maxStringBytes: 256, maxBodyBytes: 4096, maxShardElements: 1 << 20, maxShardCount: 1024)
        var errors = 0, decoded = 0, truncations = 0
        for _ in 0..<100_000 {
            let base = CodecTests.samples.randomElement(using: &rng)!.encode()
            var bytes = base
            let mutation = Mutation.allCases.randomElement(using: &rng)!
            switch mutation {
            case .random:
                bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if Bool.random(using: &rng), bytes.count >= 8 { // keep a valid header half the time
                    bytes.replaceSubrange(0..<8, with: base[0..<8])
                }
            case .truncate:
                bytes = Array(base.prefix(Int.random(in: 0..<base.count, using: &rng)))
            case .flipBits:
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    bytes[i] ^= 1 << UInt8.random(in: 0...7, using: &rng)
                }
            case .oversizeLength:
                // Overwrite four bytes past the header with a huge little-endian length.
                if bytes.count >= 12 {
                    let i = Int.random(in: 8...(bytes.count - 4), using: &rng)
                    bytes.replaceSubrange(i..<(i + 4), with: [0xFF, 0xFF, 0xFF, UInt8.random(in: 0x7F...0xFF, using: &rng)])
                }
            case .splice:
                let other = CodecTests.samples.randomElement(using: &rng)!.encode()
                let cut = Int.random(in: 0...min(bytes.count, other.count), using: &rng)
                bytes = Array(bytes.prefix(cut)) + Array(other.dropFirst(cut))
            }
            do {
                let message = try bytes.withUnsafeBytes { try Message.decode($0, limits: limits) }
                decoded += 1
                #expect(message.encode() == bytes, "a decoded message must re-encode to its input")
            } catch {
                errors += 1
                if mutation == .truncate { truncations += 1 }
            }
        }
        #expect(errors + decoded == 100_000)
        #expect(errors > 50_000, "most hostile inputs must be refused")
        #expect(truncations > 15_000, "every truncated message must be refused")
    }
}
