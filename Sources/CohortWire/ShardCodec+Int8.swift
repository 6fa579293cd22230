/// int8 payloads: the shard is cut into blocks of `ShardEncoding.int8BlockElements` (the last may
/// be shorter); block b has a scale s_b = absmax_b / 127 and element i of it the code
/// c_i = round(x_i / s_b) in −127…127 (to nearest, ties to even), so x̂_i = c_i · s_b and
/// |x_i − x̂_i| ≤ s_b / 2 plus float rounding.
///
/// Layout: all B scales first (f32 each), then all `count` codes (i8 each), so that the scales
/// are checked in one short scan and the codes form one contiguous run.
enum Int8Blocks {
    static let block = ShardEncoding.int8BlockElements

    static func encode(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        let blocks = ShardEncoding.int8Blocks(elements: count)
        let codes = out + 4 * blocks
        for b in 0..<blocks {
            let lo = b * block, hi = min(lo + block, count)
            let absmax = self.absmax(x, lo..<hi)
            var scale = absmax / 127
            // Near Float.max, 127 · scale can round to ∞; one ulp less keeps every code finite.
            if !(scale * 127).isFinite, scale.isFinite { scale = scale.nextDown }
            out.storeBytes(of: scale.bitPattern.littleEndian, toByteOffset: 4 * b, as: UInt32.self)
            let inverse = 127 / absmax
            if scale == 0 || !scale.isFinite {
                // All zeros (or below 127 · 2^-149), or NaN/∞, whose scale the receiver refuses.
                for i in lo..<hi { codes.storeBytes(of: 0, toByteOffset: i, as: Int8.self) }
            } else if inverse.isFinite {
                for i in lo..<hi { codes.storeBytes(of: code(x[i] * inverse), toByteOffset: i, as: Int8.self) }
            } else {
                // A subnormal absmax, whose reciprocal overflows: divide instead.
                for i in lo..<hi { codes.storeBytes(of: code(x[i] / scale), toByteOffset: i, as: Int8.self) }
            }
        }
    }

    /// The largest |x| in `range`, found on the bit patterns: with the sign cleared they order
    /// as the magnitudes do, and a NaN sorts above ∞, so a NaN anywhere makes the scale NaN.
    @inline(__always)
    static func absmax(_ x: UnsafePointer<Float>, _ range: Range<Int>) -> Float {
        var m: UInt32 = 0
        for i in range { m = max(m, x[i].bitPattern & 0x7FFF_FFFF) }
        return Float(bitPattern: m)
    }

    /// round(t) clamped to −127…127, ties to even. Adding 1.5·2^23 puts the value where the
    /// float ulp is 1, so the adder rounds it; the integer is then in the low mantissa bits.
    /// (Swift's `rounded(.toNearestOrEven)` is a libm call per element on baseline x86-64.)
    @inline(__always)
    static func code(_ t: Float) -> Int8 {
        let clamped = min(max(t, -127), 127)
        return Int8(truncatingIfNeeded: (clamped + 0x1.8p23).bitPattern &- 0x4B40_0000)
    }

    static func decode(_ p: UnsafeRawPointer, count: Int, _ sink: Sink, into out: UnsafeMutablePointer<Float>) {
        let blocks = ShardEncoding.int8Blocks(elements: count)
        let codes = p + 4 * blocks
        for b in 0..<blocks {
            let s = scale(p, b)
            sink.run(b * block..<min(b * block + block, count), out) { i in
                Float(codes.load(fromByteOffset: i, as: Int8.self)) * s
            }
        }
    }

    @inline(__always)
    static func scale(_ p: UnsafeRawPointer, _ b: Int) -> Float {
        Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * b, as: UInt32.self)))
    }

    /// Scales must be finite, not negative, and small enough that 127 · scale is finite; codes
    /// must be in −127…127 (the encoder never writes −128).
    static func validate(_ p: UnsafeRawPointer, count: Int) throws(WireError) {
        let blocks = ShardEncoding.int8Blocks(elements: count)
        // Bit patterns at or above +∞'s are NaN, ∞ or negative (sign bit set).
        let badScale = firstFlagged(blocks) { b -> UInt32 in
            let s = scale(p, b)
            return s.bitPattern >= 0x7F80_0000 || !(s * 127).isFinite ? 1 : 0
        }
        if let b = badScale {
            let s = scale(p, b)
            let what = !s.isFinite ? nonFiniteName(s) : s.sign == .minus ? "negative (\(s))" : "\(s), so large that 127 × scale overflows"
            throw .invalidValue(field: "shard.payload",
                                reason: "has int8 block \(b) (elements \(b * block)..<\(min(b * block + block, count))) scaled by \(what)")
        }
        let codes = p + 4 * blocks
        if let i = firstFlagged(count, { i -> UInt8 in codes.load(fromByteOffset: i, as: UInt8.self) == 0x80 ? 1 : 0 }) {
            throw .invalidValue(field: "shard.payload", reason: "has int8 code -128 at element \(i); codes are -127…127")
        }
    }

    /// s_b/2 plus float rounding: computing x/s and c·s each cost under 2^-13 · s here. The
    /// 2^-117 covers blocks so small (absmax < 2^-119) that their scale is subnormal and loses
    /// relative precision.
    static func errorBounds(_ x: UnsafePointer<Float>, count: Int, into bound: UnsafeMutablePointer<Float>) {
        for b in 0..<ShardEncoding.int8Blocks(elements: count) {
            let range = b * block..<min(b * block + block, count)
            let absmax = self.absmax(x, range)
            let limit = absmax.isFinite ? (absmax / 127) * (0.5 + 0x1p-12) + 0x1p-117 : .infinity
            for i in range { bound[i] = limit }
        }
    }
}
