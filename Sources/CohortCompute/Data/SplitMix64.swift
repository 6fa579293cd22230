/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator whose output is the same on
/// every machine and Swift version, which the system generator does not promise. Every
/// permutation in Cohort's data layer (epoch order, train/test splits) comes from it.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound, without modulo bias (rejection of the short top range).
    public mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        let threshold = (0 &- bound) % bound
        while true {
            let r = next()
            if r >= threshold { return r % bound }
        }
    }

    /// 0..<count shuffled by Fisher–Yates (Durstenfeld) with this generator.
    public mutating func permutation(count: Int) -> [Int] {
        var order = Array(0..<count)
        order.withUnsafeMutableBufferPointer { p in
            var i = count - 1
            while i > 0 {
                let j = Int(next(below: UInt64(i + 1)))
                p.swapAt(i, j)
                i -= 1
            }
        }
        return order
    }

    /// The generator for one (seed, stream) pair, e.g. (job seed, epoch): distinct streams of one
    /// seed are decorrelated by running the pair through the mixer once.
    public static func stream(seed: UInt64, _ stream: UInt64) -> SplitMix64 {
        var mixer = SplitMix64(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        return SplitMix64(seed: mixer.next())
    }
}
