/// The aggregator's inner loops (DESIGN.md, "One synchronous step"): each contribution is read
/// once and fused into the accumulator in the same pass, SIMD16 at a time. Contributions arrive
/// as fp32 or bf16 payloads (little-endian, unaligned is fine: loads are unaligned); the
/// accumulator is always fp32. Shapes: every buffer holds `count` elements.
enum Fusion {
    /// acc = wa·a + wb·b   (the parked first contribution and the second, in one pass)
    static func firstTwo(_ acc: UnsafeMutablePointer<Float>, _ a: Payload, _ wa: Float, _ b: Payload, _ wb: Float, count: Int) {
        var i = 0
        while i + 16 <= count {
            (a.load16(i) * wa + b.load16(i) * wb).store(acc + i)
            i += 16
        }
        while i < count { acc[i] = a.load(i) * wa + b.load(i) * wb; i += 1 }
    }

    /// acc = w·x   (a single contribution: the only member, or the only one that arrived)
    static func single(_ acc: UnsafeMutablePointer<Float>, _ x: Payload, _ w: Float, count: Int) {
        var i = 0
        while i + 16 <= count { (x.load16(i) * w).store(acc + i); i += 16 }
        while i < count { acc[i] = x.load(i) * w; i += 1 }
    }

    /// acc = (acc + w·x)·scale   (scale = 1 until the last contribution, then 1/Σw)
    static func add(_ acc: UnsafeMutablePointer<Float>, _ x: Payload, _ w: Float, scale: Float, count: Int) {
        var i = 0
        if scale == 1 {
            while i + 16 <= count { (SIMD16<Float>.load(acc + i) + x.load16(i) * w).store(acc + i); i += 16 }
            while i < count { acc[i] += x.load(i) * w; i += 1 }
        } else {
            while i + 16 <= count { ((SIMD16<Float>.load(acc + i) + x.load16(i) * w) * scale).store(acc + i); i += 16 }
            while i < count { acc[i] = (acc[i] + x.load(i) * w) * scale; i += 1 }
        }
    }

    /// acc ·= scale
    static func scale(_ acc: UnsafeMutablePointer<Float>, _ scale: Float, count: Int) {
        var i = 0
        while i + 16 <= count { (SIMD16<Float>.load(acc + i) * scale).store(acc + i); i += 16 }
        while i < count { acc[i] *= scale; i += 1 }
    }

    /// The index of the first NaN or infinity, if any (checked before anything is fused, so a
    /// bad contribution never touches the accumulator).
    static func firstNonFinite(_ x: Payload, count: Int) -> Int? {
        var i = 0
        while i + 16 <= count {
            let v = x.load16(i)
            // A finite float times zero is zero; NaN and ±∞ times zero are NaN, which ≠ itself.
            let z = v * 0
            if any(z .!= z) { break }
            i += 16
        }
        while i < count {
            if !x.load(i).isFinite { return i }
            i += 1
        }
        return nil
    }
}

/// A contribution's elements in place in its received frame.
struct Payload {
    let base: UnsafeRawPointer
    let encoding: Encoding
    enum Encoding { case fp32, bf16 }

    @inline(__always) func load(_ i: Int) -> Float {
        switch encoding {
        case .fp32: return base.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
        case .bf16: return Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16)
        }
    }

    @inline(__always) func load16(_ i: Int) -> SIMD16<Float> {
        switch encoding {
        case .fp32: return base.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        case .bf16:
            let h = base.loadUnaligned(fromByteOffset: i * 2, as: SIMD16<UInt16>.self)
            return unsafeBitCast(SIMD16<UInt32>(truncatingIfNeeded: h) &<< 16, to: SIMD16<Float>.self)
        }
    }
}

extension SIMD16<Float> {
    @inline(__always) static func load(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
    }

    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: self, as: SIMD16<Float>.self)
    }
}
