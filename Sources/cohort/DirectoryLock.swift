import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One daemon per directory: an exclusive flock(2) on DIR/NAME, held until the process exits
/// (the kernel drops it then, also after kill -9). A second coordinator on one data directory
/// would remove the first one's ipc socket and shared-memory segments before failing to bind,
/// and two workers on one state directory would register one key twice.
struct DirectoryLock {
    private let fd: Int32

    /// Takes the lock, or throws a failure naming the process that holds it.
    init(directory: String, name: String, holder: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = directory + "/" + name
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CommandFailure("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buffer, buffer.count, 0)
            let pid = n > 0 ? String(decoding: buffer[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            close(fd)
            throw CommandFailure("another \(holder) (pid \(pid)) is using \(directory); stop it first, or give another directory")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
    }
}
