internal import CKernels

/// fp32, bf16 and fp16 payloads: one value per element, little-endian, nothing else. Plain loops
/// over `HalfPrecision`'s branch-free conversions, which the optimiser vectorises; loads and
/// stores are unaligned-safe, since a received frame has no alignment promise. bf16 encoding,
/// the hub's per-round work on a bf16 downlink, is the same loop in C (`CKernels`), built for
/// each x86-64 vector width: the baseline target has no narrowing store, and AVX-512 has one.
enum Elementwise {
    static func encode(_ encoding: ShardEncoding, _ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        switch encoding {
        case .fp32:
            for i in 0..<count { out.storeBytes(of: x[i].bitPattern.littleEndian, toByteOffset: 4 &* i, as: UInt32.self) }
        case .bf16:
            // HalfPrecision.bf16 per element, built for the widest vectors this CPU has (CKernels).
            cohort_bf16_encode(out, x, count)
        case .fp16:
            for i in 0..<count { out.storeBytes(of: HalfPrecision.fp16(x[i]).littleEndian, toByteOffset: 2 &* i, as: UInt16.self) }
        case .int8, .topk:
            preconditionFailure("\(encoding) is not an element-wise encoding")
        }
    }

    /// out = encode(target − replica); replica += decode(out), in one pass (see
    /// `ShardCodec.encodeDifference`): each element's addition is the one `decode` with the
    /// `.add` sink does, so both ends of the downlink stay bit-identical.
    static func encodeDifference(_ encoding: ShardEncoding, _ target: UnsafePointer<Float>, replica r: UnsafeMutablePointer<Float>,
                                 count: Int, into out: UnsafeMutableRawPointer) {
        switch encoding {
        case .fp32:
            for i in 0..<count {
                let d = target[i] - r[i]
                out.storeBytes(of: d.bitPattern.littleEndian, toByteOffset: 4 &* i, as: UInt32.self)
                r[i] += d
            }
        case .bf16:
            cohort_bf16_encode_difference(out, target, r, count)
        case .fp16:
            for i in 0..<count {
                let h = HalfPrecision.fp16(target[i] - r[i])
                out.storeBytes(of: h.littleEndian, toByteOffset: 2 &* i, as: UInt16.self)
                r[i] += HalfPrecision.float(fp16: h)
            }
        case .int8, .topk:
            preconditionFailure("\(encoding) is not an element-wise encoding")
        }
    }

    static func decode(_ encoding: ShardEncoding, _ p: UnsafeRawPointer, count: Int, _ sink: Sink, into out: UnsafeMutablePointer<Float>) {
        switch encoding {
        case .fp32: sink.run(0..<count, out) { i in fp32(p, i) }
        case .bf16:
            // The first two in C (CKernels), built for each vector width; the same loop as the third.
            switch sink {
            case .overwrite: cohort_bf16_decode(out, p, count, 0)
            case .add: cohort_bf16_add(out, p, count)
            case .addScaled: sink.run(0..<count, out) { i in HalfPrecision.float(bf16: u16(p, i)) }
            }
        case .fp16: sink.run(0..<count, out) { i in HalfPrecision.float(fp16: u16(p, i)) }
        case .int8, .topk: preconditionFailure("\(encoding) is not an element-wise encoding")
        }
    }

    static func validate(_ encoding: ShardEncoding, _ p: UnsafeRawPointer, count: Int) throws(WireError) {
        let bad: Int?
        let value: (Int) -> Float
        switch encoding {
        case .fp32:
            bad = firstFlagged(count) { i in Float.nonFiniteFlag(bits: fp32(p, i).bitPattern) }
            value = { fp32(p, $0) }
        case .bf16:
            bad = firstFlagged(count) { i in HalfPrecision.nonFiniteFlag(bf16: u16(p, i)) }
            value = { HalfPrecision.float(bf16: u16(p, $0)) }
        case .fp16:
            bad = firstFlagged(count) { i in HalfPrecision.nonFiniteFlag(fp16: u16(p, i)) }
            value = { HalfPrecision.float(fp16: u16(p, $0)) }
        case .int8, .topk:
            preconditionFailure("\(encoding) is not an element-wise encoding")
        }
        if let bad {
            throw .invalidValue(field: "shard.payload", reason: "decodes to \(nonFiniteName(value(bad))) at element \(bad) (\(encoding))")
        }
    }

    @inline(__always)
    static func fp32(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 &* i, as: UInt32.self)))
    }

    @inline(__always)
    static func u16(_ p: UnsafeRawPointer, _ i: Int) -> UInt16 {
        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 &* i, as: UInt16.self))
    }

    /// Round to nearest with an 8-bit significand: half an ulp, or what clamping to the largest
    /// finite bf16 takes away.
    static func bf16Bound(_ x: Float) -> Float {
        guard x.isFinite else { return .infinity }
        return max(HalfPrecision.halfUlp(x, precision: 8, minExponent: -126), x.magnitude - HalfPrecision.bf16Max)
    }

    /// Round to nearest with an 11-bit significand (subnormal step 2^-24 below 2^-14): half an
    /// ulp, or what clamping to ±65504 takes away.
    static func fp16Bound(_ x: Float) -> Float {
        guard x.isFinite else { return .infinity }
        return max(HalfPrecision.halfUlp(x, precision: 11, minExponent: -14), x.magnitude - HalfPrecision.fp16Max)
    }
}
