internal import CZeroMQ

/// glibc serves every allocation above 128 KiB with a fresh mmap and returns it with munmap,
/// so each large message received costs page faults on every byte (measured: libzmq over tcp
/// falls from 7.2 GB/s at 1 MiB to 1.7 GB/s at 64 MiB, 5.1 GB/s with mapping off).
/// The daemons and benchmarks call this once at start-up, before any large allocation.
public enum Allocator {
    /// Tells glibc never to mmap per allocation, to keep up to `trimThreshold` bytes of freed
    /// memory for reuse, and to use one arena (other threads' arenas mmap every allocation of
    /// 64 MiB or more regardless). Returns whether glibc accepted the settings.
    @discardableResult
    public static func avoidPerMessageMapping(trimThreshold: Int = 1 << 30) -> Bool {
        cohort_malloc_no_mmap(trimThreshold) != 0
    }
}
