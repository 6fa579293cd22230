internal import CKernels

/// Copies received parameters into a replica. A replica larger than the caches is not read
/// again until the next step's forward pass, after the whole of it has been replaced, so its
/// lines are written with stores that bypass the cache (`CKernels`): the CPU then does not
/// read each line from memory before overwriting it. A small replica stays in the cache and
/// is copied with ordinary stores.
public enum ReplicaCopy {
    /// The replica size (bytes) from which copies into it bypass the cache: half this host
    /// class's L3, so that a replica below it can stay cached between steps.
    public static let streamingFrom = 16 << 20

    /// Whether copies into a replica of `parameterCount` fp32 values should bypass the cache.
    public static func streams(parameterCount: Int) -> Bool { parameterCount >= streamingFrom / 4 }

    /// dst[0..<byteCount] = src[0..<byteCount]; the two must not overlap.
    public static func copy(_ src: UnsafeRawPointer, to dst: UnsafeMutableRawPointer, byteCount: Int, streaming: Bool) {
        if streaming {
            cohort_copy_streaming(dst, src, byteCount)
        } else {
            dst.copyMemory(from: src, byteCount: byteCount)
        }
    }
}
