import Foundation
@_exported import struct CohortCompute.SplitMix64

/// Helpers shared by every test target (STYLE.md: one test-support target, not copies).
public enum TestSupport {
    /// The package root, found from this source file's location.
    public static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// A fresh, empty directory under the system temporary directory.
    public static func temporaryDirectory(_ label: String = "cohort-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Runs blocking work (a socket's receive loop) on a dedicated thread, so it never occupies one
/// of the few threads of Swift's cooperative pool (two on a 2-core machine).
public func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let thread = Thread {
            do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// The seeded generator of property tests: the project's own SplitMix64 (same seed, same cases,
/// every run and machine).
public typealias SeededGenerator = SplitMix64

/// The release-built `cohort` binary the end-to-end tests drive (deploy/test.sh builds it first).
/// `COHORT_BINARY` overrides the path.
public func cohortBinary() throws -> URL {
    if let path = ProcessInfo.processInfo.environment["COHORT_BINARY"] { return URL(fileURLWithPath: path) }
    let url = TestSupport.packageRoot.appendingPathComponent(".build/release/cohort")
    guard FileManager.default.isExecutableFile(atPath: url.path) else {
        throw TestSupportError("\(url.path) is missing: build it with `swift build -c release` (deploy/test.sh does)")
    }
    return url
}

public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The outcome of a finished process.
public struct ProcessOutput: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `executable` with `arguments` to completion (killing it after `timeout` seconds) on a
/// dedicated thread, and returns its exit status and output.
public func runProcess(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
                       timeout: Double = 120) async throws -> ProcessOutput {
    try await onDedicatedThread {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        // Read both pipes to the end concurrently so a chatty process never blocks on a full pipe.
        let errData = ErrBox()
        let reader = Thread { errData.data = err.fileHandleForReading.readDataToEndOfFile(); errData.done.signal() }
        reader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        errData.done.wait()
        process.waitUntilExit()
        killer.cancel()
        return ProcessOutput(status: process.terminationStatus,
                             stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData.data, as: UTF8.self))
    }
}

private final class ErrBox: @unchecked Sendable { // written by one thread before `done` is signalled
    var data = Data()
    let done = DispatchSemaphore(value: 0)
}

/// A daemon started from the release binary, killed when dropped. Its output goes to `logPath`.
public final class Daemon: @unchecked Sendable { // driven from one test at a time
    public let process = Process()
    public let logPath: String

    public init(_ executable: URL, _ arguments: [String], environment: [String: String] = [:], logPath: String) throws {
        self.logPath = logPath
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    /// Sends `signal` and waits for the process to exit.
    public func stop(signal: Int32 = SIGTERM) {
        if process.isRunning { kill(process.processIdentifier, signal) }
        process.waitUntilExit()
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit { stop(signal: SIGKILL) }
}

/// A TCP port on 127.0.0.1 with the next two free as well (for the api/control/data convention).
/// Below Linux's range for outgoing connections' local ports (32768–60999), so that a client's
/// connection elsewhere in the suite cannot take the port between this check and the bind.
public func freePortTriple() -> Int {
    for _ in 0..<100 {
        let base = Int.random(in: 20_000...32_000)
        if (0..<3).allSatisfy({ portIsFree(base + $0) }) { return base }
    }
    return Int.random(in: 20_000...32_000)
}

private func portIsFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
