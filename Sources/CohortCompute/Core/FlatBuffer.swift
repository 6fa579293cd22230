/// One contiguous, 64-byte aligned, zero-initialised block of Float32 that owns its memory.
/// Parameters, gradients, optimizer state and activation arenas are all `FlatBuffer`s; named
/// tensors are views (offset, shape) into one of them (karpathy/llm.c's
/// `malloc_and_point_parameters`).
///
/// Not thread-safe: one owner mutates it at a time. It is `@unchecked Sendable` so that an owner
/// may hand it to another thread (e.g. a worker's shard sender) under its own synchronisation.
public final class FlatBuffer: @unchecked Sendable {
    /// Number of Floats.
    public let count: Int
    /// The first Float. Valid for `count` elements while `self` is alive.
    public let baseAddress: UnsafeMutablePointer<Float>

    public init(count: Int) {
        precondition(count >= 0, "FlatBuffer count must be non-negative")
        self.count = count
        let bytes = max(count, 16) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 16))
        baseAddress = raw.assumingMemoryBound(to: Float.self)
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { src in
            if let s = src.baseAddress { baseAddress.update(from: s, count: values.count) }
        }
    }

    deinit { UnsafeMutableRawPointer(baseAddress).deallocate() }

    /// The whole buffer as a mutable buffer pointer (valid while `self` is alive).
    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: baseAddress, count: count)
    }

    public subscript(index: Int) -> Float {
        get { precondition(index >= 0 && index < count); return baseAddress[index] }
        set { precondition(index >= 0 && index < count); baseAddress[index] = newValue }
    }

    /// Sets every element to zero.
    public func zero() { baseAddress.update(repeating: 0, count: count) }

    /// Copies `range` out as an array (for tests, checkpoints and logging; not for hot paths).
    public func toArray(_ range: Range<Int>? = nil) -> [Float] {
        let r = range ?? 0..<count
        precondition(r.lowerBound >= 0 && r.upperBound <= count)
        return Array(UnsafeBufferPointer(start: baseAddress + r.lowerBound, count: r.count))
    }

    /// Overwrites `offset..<offset+values.count` with `values`.
    public func copy(from values: [Float], at offset: Int = 0) {
        precondition(offset >= 0 && offset + values.count <= count)
        values.withUnsafeBufferPointer { src in
            if let s = src.baseAddress { (baseAddress + offset).update(from: s, count: values.count) }
        }
    }
}

/// A bump allocator over one `FlatBuffer`: a model carves a step's activations out of it once and
/// reuses them every step, so the hot path allocates nothing.
struct Arena {
    private(set) var storage: FlatBuffer
    private var used = 0

    init(capacity: Int) { storage = FlatBuffer(count: capacity) }

    /// `count` Floats, 64-byte aligned (offsets rounded up to 16 Floats).
    mutating func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        let start = (used + 15) & ~15
        precondition(start + count <= storage.count, "arena overflow: size it with Arena.size")
        used = start + count
        return storage.baseAddress + start
    }

    /// Floats needed to `take` each of `counts` in turn.
    static func size(_ counts: [Int]) -> Int { counts.reduce(0) { (($0 + 15) & ~15) + $1 } + 16 }
}
