import Foundation

/// Seeded, platform-independent randomness for initialisation, dropout and tests
/// (never `SystemRandomNumberGenerator`: every replica must draw the same numbers).

/// SplitMix64: used to expand a seed, and as a stateless hash for counter-based streams.
@inline(__always)
func splitMix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
public struct Xoshiro256: RandomNumberGenerator, Sendable {
    private var s0, s1, s2, s3: UInt64

    public init(seed: UInt64) {
        var x = seed
        func next() -> UInt64 { x = x &+ 0x9E37_79B9_7F4A_7C15; return splitMix64(x &- 0x9E37_79B9_7F4A_7C15) }
        s0 = next(); s1 = next(); s2 = next(); s3 = next()
        if s0 | s1 | s2 | s3 == 0 { s0 = 1 }
    }

    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Standard normal (Box–Muller; one of the pair is discarded to keep the stream simple).
    public mutating func nextNormal() -> Double {
        var u1 = nextUnit()
        while u1 <= 0 { u1 = nextUnit() }
        let u2 = nextUnit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// A uniform Float in [0, 1) from a counter: dropout masks depend only on (seed, stream, index),
/// not on how work is split across threads.
@inline(__always)
func counterUniform(seed: UInt64, stream: UInt64, index: UInt64) -> Float {
    let h = splitMix64(seed ^ splitMix64(stream &* 0xD1B5_4A32_D192_ED03 &+ index))
    return Float(h >> 40) * 0x1.0p-24
}
