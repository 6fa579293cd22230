/// topk payloads: the k elements of largest |x|, as u32 k, then k u32 indices strictly
/// ascending, then the k values as bf16 (6 bytes per kept element; error feedback carries the
/// bf16 rounding with everything that was dropped). Among equal magnitudes the lower index is
/// kept, so the choice is the same on every machine.
///
/// Selection is a radix select on the magnitudes' bit patterns (with the sign cleared they order
/// as the magnitudes do): three counting passes over the shard find the exact k-th largest
/// pattern, 11, 10 and 10 bits at a time, with a histogram on the stack; one more pass writes
/// the kept elements in index order. O(n), no sort, no scratch buffer.
enum TopK {
    static func encode(_ x: UnsafePointer<Float>, count: Int, k: Int, into out: UnsafeMutableRawPointer) {
        let (threshold, tiesKept) = self.threshold(x, count: count, k: k)
        out.storeBytes(of: UInt32(k).littleEndian, as: UInt32.self)
        let indices = out + 4, values = out + 4 + 4 * k
        var n = 0, ties = tiesKept
        for i in 0..<count {
            let key = x[i].bitPattern & 0x7FFF_FFFF
            guard key >= threshold else { continue }
            if key == threshold {
                guard ties > 0 else { continue }
                ties -= 1
            }
            indices.storeBytes(of: UInt32(i).littleEndian, toByteOffset: 4 * n, as: UInt32.self)
            values.storeBytes(of: HalfPrecision.bf16(x[i]).littleEndian, toByteOffset: 2 * n, as: UInt16.self)
            n += 1
        }
        assert(n == k, "topk kept \(n) elements instead of \(k)")
    }

    /// The k-th largest magnitude pattern t, and how many elements of pattern exactly t are
    /// kept (the first ones by index, after every element above t).
    static func threshold(_ x: UnsafePointer<Float>, count: Int, k: Int) -> (key: UInt32, tiesKept: Int) {
        precondition(k >= 1 && k <= count, "topk keeps 1…\(count) elements, not \(k)")
        return withUnsafeTemporaryAllocation(of: Int32.self, capacity: 1 << 11) { histogram in
            let h = histogram.baseAddress!
            var prefix: UInt32 = 0 // the threshold's bits found so far …
            var known: UInt32 = 0  // … and which bits they are
            var needed = k         // elements still to keep among those matching `prefix`
            func pass(shift: UInt32, width: UInt32) {
                let buckets = 1 << Int(width), mask = UInt32(buckets - 1)
                h.update(repeating: 0, count: buckets)
                for i in 0..<count {
                    let key = x[i].bitPattern & 0x7FFF_FFFF
                    if key & known == prefix { h[Int((key >> shift) & mask)] &+= 1 }
                }
                // From the top bucket down, skip whole buckets while they hold fewer than needed.
                var b = buckets - 1
                while Int(h[b]) < needed {
                    needed -= Int(h[b])
                    b -= 1
                }
                prefix |= UInt32(b) << shift
                known |= mask << shift
            }
            pass(shift: 20, width: 11)
            pass(shift: 10, width: 10)
            pass(shift: 0, width: 10)
            return (prefix, needed)
        }
    }

    @inline(__always)
    static func k(_ p: UnsafeRawPointer) -> Int { Int(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))) }

    @inline(__always)
    static func index(_ p: UnsafeRawPointer, _ j: Int) -> Int {
        Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 + 4 * j, as: UInt32.self)))
    }

    @inline(__always)
    static func value(_ p: UnsafeRawPointer, k: Int, _ j: Int) -> UInt16 {
        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4 + 4 * k + 2 * j, as: UInt16.self))
    }

    static func decode(_ p: UnsafeRawPointer, byteCount: Int, count: Int, _ sink: Sink, into out: UnsafeMutablePointer<Float>) {
        let k = self.k(p)
        precondition(byteCount == 4 + ShardEncoding.topKBytesPerKept * k, "a topk payload whose k disagrees with its length: validate it first")
        if case .overwrite = sink { out.update(repeating: 0, count: count) }
        for j in 0..<k {
            let i = index(p, j)
            precondition(i < count, "topk index \(i) beyond \(count) elements: validate the payload first")
            sink.put(HalfPrecision.float(bf16: value(p, k: k, j)), out + i)
        }
    }

    static func validate(_ p: UnsafeRawPointer, byteCount: Int, count: Int) throws(WireError) {
        let k = self.k(p)
        guard k >= 1 else { throw .invalidValue(field: "shard.payload", reason: "has topk k = 0; a topk shard keeps at least one element") }
        guard k <= count else {
            throw .invalidValue(field: "shard.payload", reason: "has topk k = \(k), more than the shard's \(count) elements")
        }
        let expected = 4 + ShardEncoding.topKBytesPerKept * k
        guard byteCount == expected else {
            throw .invalidValue(field: "shard.payload", reason: "has topk k = \(k) but is \(byteCount) bytes; k = \(k) needs \(expected)")
        }
        var previous = -1
        for j in 0..<k {
            let i = index(p, j)
            guard i > previous else {
                throw .invalidValue(field: "shard.payload",
                                    reason: "has topk index \(i) at position \(j), not above the previous \(previous); indices must be strictly ascending")
            }
            guard i < count else {
                throw .invalidValue(field: "shard.payload", reason: "has topk index \(i) at position \(j), beyond the shard's \(count) elements")
            }
            previous = i
        }
        if let j = firstFlagged(k, { j in HalfPrecision.nonFiniteFlag(bf16: value(p, k: k, j)) }) {
            let v = HalfPrecision.float(bf16: value(p, k: k, j))
            throw .invalidValue(field: "shard.payload", reason: "decodes to \(nonFiniteName(v)) at element \(index(p, j)) (topk position \(j))")
        }
    }

    /// Kept elements: the bf16 bound. Dropped ones: |x| itself, which is at most the k-th
    /// largest |x|. (An element tied with the k-th largest may go either way; |x| bounds both.)
    static func errorBounds(_ x: UnsafePointer<Float>, count: Int, k: Int, into bound: UnsafeMutablePointer<Float>) {
        let t = threshold(x, count: count, k: k).key
        for i in 0..<count {
            bound[i] = x[i].bitPattern & 0x7FFF_FFFF > t ? Elementwise.bf16Bound(x[i]) : x[i].magnitude
        }
    }
}
