// The floor under every hub on this host: a star round's bytes over tcp loopback with plain
// blocking sockets and nothing else (no ZeroMQ, no framing, no arithmetic). Every worker sends
// `bytes` in chunks while receiving `bytes` back; the hub reads each connection on a thread of
// its own and writes each on another, and sends chunk k to everyone once every worker's chunk k
// is in (the order a fusing hub has to keep). What the kernel's copies and TCP path cost for
// those bytes, with more threads than Cohort's daemons use: a lower bound, not a competitor.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum BareStar {
    struct Failure: Error, CustomStringConvertible { let description: String }

    /// Milliseconds per round, median over `rounds` after one warm-up round, for worker 0.
    static func round(workers: Int, bytes: Int, chunk: Int, rounds: Int) throws -> Double {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &address) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in
                guard bind(listener, a, length) == 0, listen(listener, 16) == 0, getsockname(listener, a, &length) == 0 else {
                    throw Failure(description: "bind/listen: \(String(cString: strerror(errno)))")
                }
            }
        }
        let total = rounds + 1
        let chunks = (bytes + chunk - 1) / chunk
        let gate = ChunkGate(needed: workers)
        let times = Box([Double]())
        let failure = Box<String?>(nil)
        let group = DispatchGroup()
        func spawn(_ body: @escaping @Sendable () throws -> Void) {
            group.enter()
            Thread {
                defer { group.leave() }
                do { try body() } catch { failure.value = "\(error)" }
            }.start()
        }
        let target = address
        for w in 0..<workers {
            // The worker: its connection, one thread sending and one receiving, a round at a time.
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var to = target
            let connected = withUnsafePointer(to: &to) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { throw Failure(description: "connect: \(String(cString: strerror(errno)))") }
            noDelay(fd)
            let hub = accept(listener, nil, nil)
            guard hub >= 0 else { throw Failure(description: "accept: \(String(cString: strerror(errno)))") }
            noDelay(hub)
            let roundDone = DispatchSemaphore(value: 0)
            let started = Box(UInt64(0))
            spawn {
                let up = Owner(bytes: bytes)
                for _ in 0..<total {
                    started.value = DispatchTime.now().uptimeNanoseconds
                    try sendAll(fd, up.raw.baseAddress!, bytes)
                    roundDone.wait()
                }
            }
            spawn {
                defer { close(fd) }
                let down = Owner(bytes: bytes)
                for r in 0..<total {
                    try receiveAll(fd, down.raw.baseAddress!, bytes)
                    if w == 0 && r > 0 { times.value.append(Double(DispatchTime.now().uptimeNanoseconds - started.value) / 1e6) }
                    roundDone.signal()
                }
            }
            // The hub's side of this connection: a reader that reports each chunk, a writer that
            // sends each chunk once every worker's is in.
            spawn {
                let inbox = Owner(bytes: bytes)
                for r in 0..<total {
                    for k in 0..<chunks {
                        let start = k * chunk, count = min(chunk, bytes - start)
                        try receiveAll(hub, inbox.raw.baseAddress! + start, count)
                        gate.arrived(r * chunks + k)
                    }
                }
            }
            spawn {
                defer { close(hub) }
                let outbox = Owner(bytes: bytes)
                for r in 0..<total {
                    for k in 0..<chunks {
                        gate.wait(r * chunks + k)
                        let start = k * chunk, count = min(chunk, bytes - start)
                        try sendAll(hub, outbox.raw.baseAddress! + start, count)
                    }
                }
            }
        }
        group.wait()
        if let f = failure.value { throw Failure(description: f) }
        let sorted = times.value.sorted()
        return sorted[sorted.count / 2]
    }

    private static func noDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    private static func sendAll(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) throws {
        var done = 0
        while done < n {
            let r = send(fd, p + done, n - done, Int32(MSG_NOSIGNAL))
            guard r > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            done += r
        }
    }

    private static func receiveAll(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) throws {
        var done = 0
        while done < n {
            let r = recv(fd, p + done, n - done, 0)
            guard r > 0 else { throw Failure(description: r == 0 ? "recv: peer closed" : "recv: \(String(cString: strerror(errno)))") }
            done += r
        }
    }
}

/// Chunk k (counted across rounds) is released once `needed` readers have reported it.
final class ChunkGate: @unchecked Sendable {
    private let condition = NSCondition()
    private var counts: [Int: Int] = [:]
    private var released = -1 // every chunk up to here is complete (chunks complete in order per reader)
    private var complete = Set<Int>()
    private let needed: Int

    init(needed: Int) { self.needed = needed }

    func arrived(_ k: Int) {
        condition.lock()
        defer { condition.unlock() }
        counts[k, default: 0] += 1
        guard counts[k] == needed else { return }
        counts[k] = nil
        complete.insert(k)
        while complete.remove(released + 1) != nil { released += 1 }
        condition.broadcast()
    }

    func wait(_ k: Int) {
        condition.lock()
        defer { condition.unlock() }
        while released < k { condition.wait() }
    }
}
