import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One daemon per directory: an exclusive flock(2) on the directory itself, held until the
/// process exits (the kernel drops it then, also after kill -9). A second coordinator on one
/// data directory would remove the first one's ipc socket and shared-memory segments before
/// failing to bind, and two workers on one state directory would register one key twice.
/// Locking the directory needs no write access to it; the holder's pid goes, if it can, to
/// DIR/NAME.pid, only to name it in the message a second process gets.
struct DirectoryLock {
    /// Open while the process runs: closing it would drop the lock.
    private let fd: Int32

    /// Takes the lock, or throws a failure naming the process that holds it. A directory that
    /// cannot be locked at all (a filesystem without flock) is used unlocked, as before locks.
    init(directory: String, name: String, holder: String) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CommandFailure("cannot open the directory \(directory): \(String(cString: strerror(errno)))") }
        let pidPath = directory + "/" + name + ".pid"
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            if !busy {
                self.fd = fd
                return
            }
            close(fd)
            let pid = (try? String(contentsOfFile: pidPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            throw CommandFailure("another \(holder)\(pid.map { " (pid \($0))" } ?? "") is using \(directory); stop it first, or give another directory")
        }
        self.fd = fd
        try? "\(getpid())\n".write(toFile: pidPath, atomically: true, encoding: .utf8)
    }
}

/// Creates `path` (and its parents), or says in plain words why it cannot be: Foundation's
/// error here is an opaque "NSCocoaErrorDomain error 512".
func createDirectory(_ path: String, what: String, mode: Int? = nil) throws {
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: mode.map { [.posixPermissions: $0] })
    } catch {
        var ancestor = (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        var why = error.localizedDescription
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            why = "it is a file"
        } else {
            while !ancestor.isEmpty, ancestor != "/", !FileManager.default.fileExists(atPath: ancestor) {
                ancestor = (ancestor as NSString).deletingLastPathComponent
            }
            if ancestor.isEmpty { ancestor = "." }
            if FileManager.default.fileExists(atPath: ancestor, isDirectory: &isDirectory), !isDirectory.boolValue {
                why = "\(ancestor) is a file, not a directory"
            } else if access(ancestor, W_OK) != 0 {
                why = "no permission to create it in \(ancestor)"
            }
        }
        throw CommandFailure("cannot create the \(what) \(path): \(why)")
    }
}
