import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writing a file so that a crash at any instant leaves either the old file or the complete new
/// one: a temporary file in the same directory, fsync, rename over the target, fsync of the
/// directory (so the rename itself is durable).
enum AtomicFile {
    typealias Sink = (UnsafeRawBufferPointer) throws -> Void

    static func write(to url: URL, _ body: (Sink) throws -> Void) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UUID().uuidString.prefix(8))")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("create a temporary file in \(directory.path)", url) }
        var renamed = false
        defer {
            if !renamed { unlink(temporary.path) }
        }
        do {
            try body { bytes in
                var done = 0
                while done < bytes.count {
                    let n = Glibc_write(fd, bytes.baseAddress! + done, bytes.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw failure("write", url)
                    }
                    done += n
                }
            }
            guard retryingEINTR({ fsync(fd) }) == 0 else { throw failure("fsync", url) }
        } catch {
            close(fd)
            throw error
        }
        guard close(fd) == 0 else { throw failure("close", url) }
        guard rename(temporary.path, url.path) == 0 else { throw failure("rename the temporary file over", url) }
        renamed = true
        let directoryFD = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw failure("open the directory of", url) }
        defer { close(directoryFD) }
        guard retryingEINTR({ fsync(directoryFD) }) == 0 else { throw failure("fsync the directory of", url) }
    }

    private static func retryingEINTR(_ call: () -> Int32) -> Int32 {
        while true {
            let result = call()
            if result == -1 && errno == EINTR { continue }
            return result
        }
    }

    private static func failure(_ operation: String, _ url: URL) -> DataError {
        let reason = String(cString: strerror(errno))
        return DataError(url.path, "could not \(operation) the file (\(reason)); check the directory's permissions and free space")
    }
}

@inline(__always)
private func Glibc_write(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(fd, pointer, count)
    #else
    return Darwin.write(fd, pointer, count)
    #endif
}
