internal import CKernels
internal import CZeroMQ
import Glibc

/// A file mapped into memory by the coordinator and one worker on its host: the data plane's
/// shared memory (docs/architecture.md, "Shared memory on the coordinator's host"). It holds
/// `elements` Floats (64-byte aligned) after one sequence word per shard. The coordinator
/// creates it in `directory` (/dev/shm: memory, never written back to a disk) with mode 0600,
/// so only its own user reaches it, reserves its memory up front (a full tmpfs fails here, not
/// with SIGBUS later), and removes it when the segment is dropped; the worker opens it by the
/// path the coordinator sent.
///
/// Bytes in it can change under the reader's feet: the gradient region is only read by the
/// coordinator when the protocol says the worker is done with it, and the parameter region is
/// read through `read(shard:…)`, which refuses a shard that is being rewritten.
public final class SharedSegment: @unchecked Sendable { // its memory is shared by design; see above
    public let path: String
    public let elements: Int
    public let shards: Int
    private let base: UnsafeMutableRawPointer
    private let byteCount: Int
    private let removeOnClose: Bool

    private static func layout(elements: Int, shards: Int) -> (floatsAt: Int, bytes: Int) {
        let floatsAt = (shards * 8 + 63) & ~63
        return (floatsAt, floatsAt + max(elements, 1) * 4)
    }

    /// Creates the file at `path` (which must not exist), sized and zeroed, and maps it.
    public init(creating path: String, elements: Int, shards: Int) throws(TransportError) {
        precondition(elements >= 0 && shards >= 0, "a segment of \(elements) elements and \(shards) shards")
        let (_, bytes) = Self.layout(elements: elements, shards: shards)
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TransportError(errno: cohort_errno(), operation: "create \(path)") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(bytes)) == 0 else {
            let e = cohort_errno()
            unlink(path)
            throw TransportError(errno: e, operation: "size \(path) to \(bytes) bytes")
        }
        let reserved = posix_fallocate(fd, 0, off_t(bytes))
        guard reserved == 0 else {
            unlink(path)
            throw TransportError(errno: reserved, operation: "reserve \(bytes) bytes for \(path)")
        }
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let e = cohort_errno()
            unlink(path)
            throw TransportError(errno: e, operation: "map \(path)")
        }
        (self.path, self.elements, self.shards, base, byteCount, removeOnClose) = (path, elements, shards, p, bytes, true)
    }

    /// Maps the segment the coordinator created at `path`; its size must be what `elements`
    /// and `shards` make.
    public init(opening path: String, elements: Int, shards: Int) throws(TransportError) {
        let (_, bytes) = Self.layout(elements: elements, shards: shards)
        let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw TransportError(errno: cohort_errno(), operation: "open \(path)") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw TransportError(errno: cohort_errno(), operation: "stat \(path)") }
        guard (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) == bytes else {
            throw TransportError.misconfigured("\(path) is not a segment of \(bytes) bytes (\(elements) elements, \(shards) shards)")
        }
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw TransportError(errno: cohort_errno(), operation: "map \(path)")
        }
        (self.path, self.elements, self.shards, base, byteCount, removeOnClose) = (path, elements, shards, p, bytes, false)
    }

    /// Where segments are made: memory-backed, never a disk.
    public static let directory = "/dev/shm"
    /// How every Cohort segment's file name starts (a worker maps no other file).
    public static let namePrefix = "cohort-"

    deinit {
        munmap(base, byteCount)
        if removeOnClose { unlink(path) }
    }

    /// The first of the segment's Floats.
    public var floats: UnsafeMutablePointer<Float> {
        (base + Self.layout(elements: elements, shards: shards).floatsAt).assumingMemoryBound(to: Float.self)
    }

    private func sequence(_ k: Int) -> UnsafeMutablePointer<UInt64> {
        precondition(k >= 0 && k < shards, "shard \(k) of a segment of \(shards)")
        return base.assumingMemoryBound(to: UInt64.self) + k
    }

    /// The sequence word of a whole shard written for `step`: even, and never the zero a fresh
    /// segment starts with.
    static func version(_ step: Int) -> UInt64 { UInt64(step + 1) << 1 }

    /// Writes `count` Floats from `source` at element `offset` as version `step` of shard k.
    public func publish(shard k: Int, step: Int, from source: UnsafePointer<Float>, offset: Int, count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= elements, "elements \(offset)+\(count) of \(elements)")
        cohort_seqlock_write(sequence(k), Self.version(step), floats + offset, source, count * 4)
    }

    /// Copies shard k's `count` Floats at element `offset` into `destination` if the shard holds
    /// version `step` and was not rewritten meanwhile; false otherwise (nothing usable copied).
    /// `streaming`: the copy bypasses the cache (`ReplicaCopy`, for a large replica).
    public func read(shard k: Int, step: Int, offset: Int, count: Int, into destination: UnsafeMutablePointer<Float>,
                     streaming: Bool = false) -> Bool {
        guard offset >= 0, count >= 0, offset + count <= elements, k >= 0, k < shards else { return false }
        let read = streaming ? cohort_seqlock_read_streaming : cohort_seqlock_read
        return read(sequence(k), Self.version(step), destination, floats + offset, count * 4) != 0
    }
}
