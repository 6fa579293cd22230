import CBLAS
import Dispatch
import Foundation

/// Compute threads: OpenBLAS's thread count and the element-wise kernels' parallelism.
///
/// Element-wise work is split into chunks whose boundaries depend only on the problem size, never
/// on the thread count, and every reduction sums its chunks in a fixed order; so results are
/// bit-identical for the same seed whatever the thread count (OpenBLAS itself may change the
/// summation order of a GEMM with its thread count, so only "same seed, same threads" is promised).
public enum ComputeThreads {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var current = 1

    /// Sets the number of compute threads (OpenBLAS and the element-wise kernels); at least 1.
    /// Process-wide, because OpenBLAS's setting is; call it before training starts.
    public static func set(_ threads: Int) {
        let n = max(1, threads)
        lock.lock(); current = n; lock.unlock()
        openblas_set_num_threads(Int32(n))
    }

    /// The number of compute threads last set (1 until `set` is called).
    public static var count: Int {
        lock.lock(); defer { lock.unlock() }
        return current
    }

    /// The kernel family OpenBLAS picked for this CPU (e.g. "Haswell", "SkylakeX", "Zen").
    public static var openBLASCoreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// OpenBLAS's build configuration string (version, threading model, max threads).
    public static var openBLASConfig: String {
        guard let p = openblas_get_config() else { return "unknown" }
        return String(cString: p)
    }
}

/// A pointer that may cross into `concurrentPerform`'s closures. Each chunk writes a disjoint
/// range, which is what makes this safe.
struct SharedPointer: @unchecked Sendable {
    let p: UnsafeMutablePointer<Float>
    init(_ p: UnsafeMutablePointer<Float>) { self.p = p }
    init(_ p: UnsafePointer<Float>) { self.p = UnsafeMutablePointer(mutating: p) }
}

enum Parallel {
    /// Set on the threads that run one replica of a data-parallel step: their kernels run serially
    /// (the replicas already use every core).
    private static let serialKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static var isSerialThread: Bool { pthread_getspecific(serialKey) != nil }

    /// Runs `body` with this thread's kernels held to one thread.
    static func serially<R>(_ body: () throws -> R) rethrows -> R {
        let was = pthread_getspecific(serialKey)
        pthread_setspecific(serialKey, UnsafeRawPointer(bitPattern: 1))
        defer { pthread_setspecific(serialKey, was) }
        return try body()
    }

    /// Chunk for whole-buffer passes (optimizer step, gradient sums): a fork-join costs a thread
    /// wake-up, which on a busy host can exceed the work of a small model's whole buffer.
    static let bulkChunk = 1 << 19

    /// Threads the element-wise kernels may use on this thread.
    static var threads: Int { isSerialThread ? 1 : ComputeThreads.count }

    /// Runs `body(range)` over `0..<count` cut into chunks of `chunk` items (the last may be
    /// shorter), on up to `threads` threads. Chunk boundaries do not depend on the thread count.
    @inline(__always)
    static func forEach(_ count: Int, chunk: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let chunks = (count + chunk - 1) / max(chunk, 1)
        if chunks <= 1 || threads == 1 {
            var start = 0
            while start < count { body(start..<min(start + chunk, count)); start += chunk }
            return
        }
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            body(c * chunk..<min((c + 1) * chunk, count))
        }
    }
}
