import CohortWire
internal import CKernels

/// The aggregator's inner loops (DESIGN.md, "One synchronous step"): each contribution is read
/// once and fused into the accumulator in the same pass. Contributions arrive as fp32 or bf16
/// payloads (little-endian, unaligned is fine: loads are unaligned); the accumulator is always
/// fp32. Shapes: every buffer holds `count` elements.
///
/// The loops are plain scalar code over a concrete element reader, one specialisation per
/// encoding, which the optimiser vectorises (a SIMD16 widening of bf16 here went through an
/// unspecialised standard-library conversion and cost more than the fusion itself). The loops
/// a training round runs (bf16's, fp32's in frames and in pool buffers, and the checks) are
/// the same loops in C (`CKernels`), built for each x86-64 vector width (the fp32 ones into a
/// pool buffer up to AVX2, where the AVX-512 clone measured slower): the baseline target widens
/// four bf16 values at a time and AVX-512 sixteen. The Swift loops they replace stay as the
/// reference their tests hold them to (`Fusion.Reference`).
///
/// Every contribution's values must lie within ±`limit` (2^64): NaN and ±∞ are outside, and
/// so is a finite value so large that weighting it by a sample count (< 2^32) and summing could
/// overflow fp32 to ∞ (with values below 2^64, a sum stays below 2^128 for up to 2^31 members),
/// which would turn the optimizer's step and then every parameter into ∞ or NaN.
///
/// Where the accumulator's old contents do not matter (`single`, `firstTwo`: they overwrite
/// it), the new contribution's range is checked in the same pass and reported; the caller
/// then rejects it and the shard stays incomplete, so nothing of it is ever used. `add` reads
/// the accumulator, so its contribution is checked first (`firstOutOfRange`).
enum Fusion {
    /// The bound on a contribution's magnitudes (exclusive).
    static let limit = ContributionRange.limit

    /// Which operands of a pass held a value outside ±`limit`.
    struct OutOfRange: OptionSet, Equatable {
        let rawValue: Int32
        static let first = OutOfRange(rawValue: 1)
        static let second = OutOfRange(rawValue: 2)
    }

    /// acc = wa·a + wb·b (the parked first contribution and the second, in one pass that also
    /// checks both: a contribution parked unchecked is checked here, where its values are read
    /// anyway, instead of in a pass of its own). Empty when both lie within ±`limit`; else acc
    /// is garbage and a and b are as they were.
    static func firstTwo(_ acc: UnsafeMutablePointer<Float>, _ a: Payload, _ wa: Float, _ b: Payload, _ wb: Float, count: Int) -> OutOfRange {
        switch (a.encoding, b.encoding) {
        case (.fp32, .fp32): return OutOfRange(rawValue: cohort_fp32_fuse_two(acc, a.base, wa, b.base, wb, count))
        case (.bf16, .bf16): return OutOfRange(rawValue: cohort_bf16_fuse_two(acc, a.base, wa, b.base, wb, count))
        case (.fp32, .bf16): return firstTwo(acc, FP32(a.base), wa, BF16(b.base), wb, count)
        case (.bf16, .fp32): return firstTwo(acc, BF16(a.base), wa, FP32(b.base), wb, count)
        }
    }

    /// acc = w·x (a single contribution: the only member, or the only one that arrived). False
    /// when x holds a value outside ±`limit`.
    @discardableResult
    static func single(_ acc: UnsafeMutablePointer<Float>, _ x: Payload, _ w: Float, count: Int) -> Bool {
        switch x.encoding {
        case .fp32: return cohort_fp32_fuse_single(acc, x.base, w, count) != 0
        case .bf16: return cohort_bf16_fuse_single(acc, x.base, w, count) != 0
        }
    }

    /// acc = (acc + w·x)·scale (scale = 1 until the last contribution, then 1/Σw). x must have
    /// been checked.
    static func add(_ acc: UnsafeMutablePointer<Float>, _ x: Payload, _ w: Float, scale: Float, count: Int) {
        switch x.encoding {
        case .fp32: cohort_fp32_fuse_add(acc, x.base, w, scale, count)
        case .bf16: cohort_bf16_fuse_add(acc, x.base, w, scale, count)
        }
    }

    /// b = wa·a + wb·b, in b's own memory (an fp32 contribution in a received frame: the
    /// accumulator is then memory the CPU has just written, not a line it must first fetch).
    /// Checked a block at a time before the block is overwritten: the index of b's first value
    /// outside ±`limit` (that value still in place), or nil when all of b was fused.
    static func firstTwoInPlace(_ b: UnsafeMutablePointer<Float>, _ wb: Float, fp32 a: UnsafeRawPointer, _ wa: Float, count: Int) -> Int? {
        let i = cohort_fp32_fuse_two_in_place(b, wb, a, wa, count)
        return i < count ? i : nil
    }

    /// b = w·b in b's own memory (see `firstTwoInPlace`).
    static func singleInPlace(_ b: UnsafeMutablePointer<Float>, _ w: Float, count: Int) -> Int? {
        let i = cohort_fp32_scale_in_place(b, w, count)
        return i < count ? i : nil
    }

    /// acc ·= scale
    static func scale(_ acc: UnsafeMutablePointer<Float>, _ scale: Float, count: Int) {
        for i in 0..<count { acc[i] *= scale }
    }

    /// The index of the first value outside ±`limit` (NaN and ±∞ included), if any.
    static func firstOutOfRange(_ x: Payload, count: Int) -> Int? {
        switch x.encoding {
        case .fp32:
            let i = cohort_fp32_first_out_of_range(x.base, count)
            return i < count ? i : nil
        case .bf16:
            let i = cohort_bf16_first_out_of_range(x.base, count)
            return i < count ? i : nil
        }
    }

    /// dst = x (fp32, possibly unaligned), checked in the same pass: the index of the first
    /// value of the copy outside ±`limit`, if any (the copy then stops after its block). For
    /// memory that can change while it is read: what dst holds is what was checked.
    static func copyChecked(_ dst: UnsafeMutablePointer<Float>, fp32 x: UnsafeRawPointer, count: Int) -> Int? {
        let i = cohort_fp32_copy_checked(dst, x, count)
        return i < count ? i : nil
    }

    /// The index of the first value of x[0..<count] outside ±`limit`, if any.
    static func firstOutOfRange(_ x: UnsafePointer<Float>, count: Int) -> Int? {
        firstOutOfRange(Payload(base: UnsafeRawPointer(x), encoding: .fp32), count: count)
    }

    /// Element i of a payload, as fp32.
    static func value(_ x: Payload, _ i: Int) -> Float {
        switch x.encoding {
        case .fp32: return FP32(x.base)[i]
        case .bf16: return BF16(x.base)[i]
        }
    }

    /// The Swift loops that the C kernels replace, kept as the reference tests hold the kernels
    /// to, bit for bit.
    enum Reference {
        static func firstTwo(_ acc: UnsafeMutablePointer<Float>, _ a: Payload, _ wa: Float, _ b: Payload, _ wb: Float,
                             count: Int) -> OutOfRange {
            switch (a.encoding, b.encoding) {
            case (.fp32, .fp32): return Fusion.firstTwo(acc, FP32(a.base), wa, FP32(b.base), wb, count)
            case (.bf16, .bf16): return Fusion.firstTwo(acc, BF16(a.base), wa, BF16(b.base), wb, count)
            case (.fp32, .bf16), (.bf16, .fp32): return Fusion.firstTwo(acc, a, wa, b, wb, count: count)
            }
        }
        static func single(_ acc: UnsafeMutablePointer<Float>, _ x: Payload, _ w: Float, count: Int) -> Bool {
            x.encoding == .fp32 ? Fusion.single(acc, FP32(x.base), w, count) : Fusion.single(acc, BF16(x.base), w, count)
        }
        static func add(_ acc: UnsafeMutablePointer<Float>, _ x: Payload, _ w: Float, scale: Float, count: Int) {
            x.encoding == .fp32 ? Fusion.add(acc, FP32(x.base), w, scale, count) : Fusion.add(acc, BF16(x.base), w, scale, count)
        }
        static func firstOutOfRange(bf16 x: UnsafeRawPointer, count: Int) -> Int? { Fusion.firstOutOfRange(BF16(x), count) }
        static func firstOutOfRange(fp32 x: UnsafeRawPointer, count: Int) -> Int? { Fusion.firstOutOfRange(FP32(x), count) }
        static func copyChecked(_ dst: UnsafeMutablePointer<Float>, fp32 x: UnsafeRawPointer, count: Int) -> Int? {
            UnsafeMutableRawPointer(dst).copyMemory(from: x, byteCount: count * 4)
            return Fusion.firstOutOfRange(FP32(UnsafeRawPointer(dst)), count)
        }
        static func firstTwoInPlace(_ b: UnsafeMutablePointer<Float>, _ wb: Float, fp32 a: UnsafeRawPointer, _ wa: Float, count: Int) -> Int? {
            let a = FP32(a)
            return Fusion.inPlace(b, count) { i in a[i] * wa + b[i] * wb }
        }
        static func singleInPlace(_ b: UnsafeMutablePointer<Float>, _ w: Float, count: Int) -> Int? {
            Fusion.inPlace(b, count) { i in b[i] * w }
        }
    }

    // MARK: Specialised loops

    private static func firstTwo<A: Reader, B: Reader>(_ acc: UnsafeMutablePointer<Float>, _ a: A, _ wa: Float, _ b: B, _ wb: Float,
                                                       _ count: Int) -> OutOfRange {
        var flagsA: UInt32 = 0, flagsB: UInt32 = 0
        for i in 0..<count {
            let x = a[i], y = b[i]
            flagsA |= outOfRangeFlag(x)
            flagsB |= outOfRangeFlag(y)
            acc[i] = x * wa + y * wb
        }
        return OutOfRange(rawValue: (flagsA == 0 ? 0 : 1) | (flagsB == 0 ? 0 : 2))
    }

    private static func single<X: Reader>(_ acc: UnsafeMutablePointer<Float>, _ x: X, _ w: Float, _ count: Int) -> Bool {
        var flags: UInt32 = 0
        for i in 0..<count {
            let y = x[i]
            flags |= outOfRangeFlag(y)
            acc[i] = y * w
        }
        return flags == 0
    }

    private static func add<X: Reader>(_ acc: UnsafeMutablePointer<Float>, _ x: X, _ w: Float, _ scale: Float, _ count: Int) {
        if scale == 1 {
            for i in 0..<count { acc[i] += x[i] * w }
        } else {
            for i in 0..<count { acc[i] = (acc[i] + x[i] * w) * scale }
        }
    }

    /// b[i] = value(i) over blocks of 256, each checked (b's values against ±`limit`) before it
    /// is overwritten; stops at the first block with a value outside.
    @inline(__always)
    private static func inPlace(_ b: UnsafeMutablePointer<Float>, _ count: Int, _ value: (Int) -> Float) -> Int? {
        var start = 0
        while start < count {
            let end = min(start + 256, count)
            if let bad = firstOutOfRange(Floats(b), start..<end) { return bad }
            for i in start..<end { b[i] = value(i) }
            start = end
        }
        return nil
    }

    /// The first index in `block` whose value is outside ±`limit`: a branch-free OR over the
    /// block (vectorised), the exact index only on a hit.
    @inline(__always)
    private static func firstOutOfRange<X: Reader>(_ x: X, _ block: Range<Int>) -> Int? {
        var flags: UInt32 = 0
        for i in block { flags |= outOfRangeFlag(x[i]) }
        return flags == 0 ? nil : block.first { !ContributionRange.contains(x[$0]) }
    }

    private static func firstOutOfRange<X: Reader>(_ x: X, _ count: Int) -> Int? {
        var start = 0
        while start < count {
            let end = min(start + 256, count)
            if let bad = firstOutOfRange(x, start..<end) { return bad }
            start = end
        }
        return nil
    }

    /// The sign bit set exactly when the biased exponent is 191 or more, i.e. |v| ≥ 2^64 (NaN
    /// and ±∞, whose exponent is all ones, included): 0x2080_0000 + (191 << 23) = 0x8000_0000.
    @inline(__always)
    private static func outOfRangeFlag(_ v: Float) -> UInt32 { ((v.bitPattern & 0x7F80_0000) &+ 0x2080_0000) & 0x8000_0000 }
}

/// A contribution's elements in place in its received frame.
struct Payload {
    let base: UnsafeRawPointer
    let encoding: Encoding
    enum Encoding { case fp32, bf16 }
}

/// Reads element i of a payload as fp32.
private protocol Reader {
    subscript(_ i: Int) -> Float { get }
}

private struct FP32: Reader {
    let base: UnsafeRawPointer
    init(_ base: UnsafeRawPointer) { self.base = base }
    @inline(__always) subscript(_ i: Int) -> Float {
        Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)))
    }
}

private struct Floats: Reader {
    let base: UnsafePointer<Float>
    init(_ base: UnsafePointer<Float>) { self.base = base }
    @inline(__always) subscript(_ i: Int) -> Float { base[i] }
}

private struct BF16: Reader {
    let base: UnsafeRawPointer
    init(_ base: UnsafeRawPointer) { self.base = base }
    @inline(__always) subscript(_ i: Int) -> Float {
        Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))) << 16)
    }
}
