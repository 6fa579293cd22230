/// The 16-bit element formats of shard payloads, converted by integer bit manipulation so that
/// the loops over them vectorise: Swift's `Float16` conversion calls a compiler-rt routine per
/// element on x86-64 without F16C (the default target), and does not clamp.
///
/// Encoding keeps every finite value finite: a value beyond a format's largest finite one is
/// clamped to it (error feedback carries the rest). NaN and ±∞ stay NaN and ±∞, so that a
/// receiver refuses them instead of training on a clamped infinity. Decoding is exact integer
/// work (fp16 subnormals: one exact float subtraction), the same on every machine.
enum HalfPrecision {
    // MARK: fp16 (IEEE 754 binary16)

    /// The largest finite fp16, 65504.
    static let fp16Max: Float = 65504

    /// Round to nearest even; |x| ≥ 65520 (which would round to ∞) gives ±65504.
    @inline(__always)
    static func fp16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let a = bits & 0x7FFF_FFFF
        let sign = UInt16(truncatingIfNeeded: bits >> 16) & 0x8000
        // |x| ≥ 2^-14 (fp16 normal): rebias the exponent by −112 and round the 13 dropped
        // mantissa bits: adding 0xFFF plus the kept lowest bit carries exactly when the dropped
        // part is above half, or half with the kept part odd. A carry out of the mantissa
        // steps the exponent, which is the right rounding too.
        let normal = (a &+ 0xC800_0FFF &+ ((a >> 13) & 1)) >> 13
        // |x| < 2^-14: 0.5's ulp is 2^-24, fp16's subnormal step, so the float adder rounds
        // |x| + 0.5 to that step (to nearest even); the sum's mantissa bits are the fp16 code.
        let subnormal = (Float(bitPattern: a) + 0.5).bitPattern &- 0x3F00_0000
        var h = a < 0x3880_0000 ? subnormal : normal
        h = min(h, 0x7BFF)
        if a >= 0x7F80_0000 { h = a == 0x7F80_0000 ? 0x7C00 : 0x7E00 }
        return UInt16(truncatingIfNeeded: h) | sign
    }

    @inline(__always)
    static func float(fp16 h: UInt16) -> Float {
        let bits = UInt32(h)
        let exponent = bits & 0x7C00
        let shifted = (bits & 0x7FFF) << 13
        // Normal: rebias the exponent by +112; ∞ and NaN: by +224, to fp32's all-ones exponent.
        let normal = shifted &+ (exponent == 0x7C00 ? 0x7000_0000 : 0x3800_0000)
        // Subnormal m·2^-24: build 2^-14 + m·2^-24, then subtract 2^-14 (exact).
        let subnormal = (Float(bitPattern: shifted &+ 0x3880_0000) - 0x1p-14).bitPattern
        let magnitude = exponent == 0 ? subnormal : normal
        return Float(bitPattern: magnitude | (bits & 0x8000) << 16)
    }

    /// Whether an fp16 bit pattern is NaN or ±∞, as a nonzero flag (a branch-free test that
    /// vectorises): the exponent field plus one carries into bit 15 only when it is all ones.
    @inline(__always)
    static func nonFiniteFlag(fp16 h: UInt16) -> UInt16 { ((h & 0x7C00) &+ 0x0400) & 0x8000 }

    // MARK: bf16 (the top half of an fp32)

    /// `BFloat16.encode` (round to nearest even, NaN stays NaN) except that a finite value that
    /// would round to ∞ gives the largest finite bf16 (±3.3895e38).
    @inline(__always)
    static func bf16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let a = bits & 0x7FFF_FFFF
        var r = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16
        if a > 0x7F80_0000 {
            r = (bits >> 16) | 0x40
        } else if a < 0x7F80_0000, r & 0x7FFF == 0x7F80 {
            r &-= 1
        }
        return UInt16(truncatingIfNeeded: r)
    }

    /// The largest finite bf16.
    static let bf16Max = Float(bitPattern: 0x7F7F_0000)

    @inline(__always)
    static func float(bf16 b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    @inline(__always)
    static func nonFiniteFlag(bf16 b: UInt16) -> UInt16 { ((b & 0x7F80) &+ 0x0080) & 0x8000 }

    /// Half an ulp of `x` in a format with `precision` significand bits (the implicit one
    /// included) whose normal numbers start at 2^`minExponent`: the rounding error bound.
    static func halfUlp(_ x: Float, precision: Int, minExponent: Int) -> Float {
        Float(sign: .plus, exponent: max(x.exponent, minExponent) - precision, significand: 1)
    }
}

extension Float {
    /// Whether the fp32 bit pattern is NaN or ±∞, as a nonzero flag (see `HalfPrecision`).
    @inline(__always)
    static func nonFiniteFlag(bits: UInt32) -> UInt32 { ((bits & 0x7F80_0000) &+ 0x0080_0000) & 0x8000_0000 }
}
