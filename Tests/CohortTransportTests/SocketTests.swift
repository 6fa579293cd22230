import Foundation
import Testing
import TestSupport
@testable import CohortTransport

/// A fresh endpoint per test: tcp on an ephemeral loopback port, or ipc in a temporary directory.
enum Loopback: String, CaseIterable, CustomTestStringConvertible {
    case tcp, ipc
    var testDescription: String { rawValue }

    func bindable() throws -> String {
        switch self {
        case .tcp: return "tcp://127.0.0.1:0"
        case .ipc: return "ipc://\(try TestSupport.temporaryDirectory("zmq-ipc").path)/sock"
        }
    }
}

/// Keeps track of when libzmq released a zero-copy buffer.
final class ReleaseProbe: @unchecked Sendable { // the buffer is written before the send, only read after
    let released = DispatchSemaphore(value: 0)
    let pointer: UnsafeMutableRawBufferPointer
    init(bytes: Int) { pointer = .allocate(byteCount: bytes, alignment: 64) }
    deinit {
        pointer.deallocate()
        released.signal()
    }
}

@Suite(.timeLimit(.minutes(2)))
struct SocketTests {
    @Test(arguments: Loopback.allCases)
    func routerAndDealerTalkWithIdentities(_ transport: Loopback) async throws {
        try await onDedicatedThread {
            let context = try Context()
            let router = try Socket(context, .router)
            try router.bind(try transport.bindable())
            let endpoint = try router.lastEndpoint
            var dealers: [Socket] = []
            for name in ["alice", "bob"] {
                let d = try Socket(context, .dealer)
                try d.setRoutingId(Array(name.utf8))
                try d.connect(endpoint)
                try d.send(Array("ping from \(name)".utf8))
                dealers.append(d)
            }
            var seen: [String: String] = [:]
            for _ in 0..<2 {
                let frames = try router.receive()
                try #require(frames.count == 2)
                let identity = String(decoding: frames[0].bytes, as: UTF8.self)
                seen[identity] = String(decoding: frames[1].bytes, as: UTF8.self)
                try router.send([.bytes(frames[0].bytes), .bytes(Array("pong to \(identity)".utf8))])
            }
            #expect(seen == ["alice": "ping from alice", "bob": "ping from bob"])
            for (d, name) in zip(dealers, ["alice", "bob"]) {
                let reply = try d.receive()
                #expect(reply.map { String(decoding: $0.bytes, as: UTF8.self) } == ["pong to \(name)"])
            }
        }
    }

    /// A socket's connections go only to the I/O threads its affinity names (the coordinator
    /// keeps thread 0 for api and control, the rest for data): with threads 1 and 2 of three it
    /// talks as any socket does; naming only a thread the context does not have, it cannot bind,
    /// which shows the setting reaches libzmq.
    @Test func ioThreadAffinityPicksTheThreadsAConnectionMayUse() async throws {
        try await onDedicatedThread {
            let context = try Context(ioThreads: 3)
            let router = try Socket(context, .router)
            try router.setIOThreadAffinity(1..<3)
            try router.bind("tcp://127.0.0.1:0")
            let endpoint = try router.lastEndpoint
            var dealers: [Socket] = []
            for i in 0..<4 {
                let d = try Socket(context, .dealer)
                try d.setIOThreadAffinity(0..<1)
                try d.connect(endpoint)
                try d.send(Array("dealer \(i)".utf8))
                dealers.append(d)
            }
            var seen: Set<String> = []
            for _ in dealers { seen.insert(String(decoding: try router.receive()[1].bytes, as: UTF8.self)) }
            #expect(seen == Set((0..<4).map { "dealer \($0)" }))
            // Thread 2 is the context's last, thread 3 one past it: bit i is thread i.
            let last = try Socket(context, .router)
            try last.setIOThreadAffinity(2..<3)
            try last.bind("tcp://127.0.0.1:0")
            let nowhere = try Socket(context, .router)
            try nowhere.setIOThreadAffinity(3..<4)
            #expect(throws: TransportError.self) { try nowhere.bind("tcp://127.0.0.1:0") }
            #expect(throws: TransportError.self) { try nowhere.setIOThreadAffinity(63..<65) }
        }
    }

    @Test func multipartMessagesKeepTheirFramesAndOrder() async throws {
        try await onDedicatedThread {
            let context = try Context()
            let router = try Socket(context, .router)
            try router.bind("tcp://127.0.0.1:0")
            let dealer = try Socket(context, .dealer)
            try dealer.connect(try router.lastEndpoint)
            let parts: [[UInt8]] = [[1], [], Array(repeating: 7, count: 100_000), [2, 3]]
            try dealer.send(parts.map { .bytes($0) })
            let frames = try router.receive()
            #expect(frames.dropFirst().map(\.bytes) == parts)
            #expect(frames.map(\.more) == [true, true, true, true, false])
        }
    }

    @Test(arguments: Loopback.allCases)
    func a256MiBMessageGoesZeroCopyAndArrivesIntact(_ transport: Loopback) async throws {
        try await onDedicatedThread {
            Allocator.avoidPerMessageMapping()
            let bytes = 256 << 20
            let context = try Context()
            let router = try Socket(context, .router)
            try router.setMaxMessageSize(bytes + 1024)
            try router.bind(try transport.bindable())
            let dealer = try Socket(context, .dealer)
            try dealer.connect(try router.lastEndpoint)

            var probe: ReleaseProbe? = ReleaseProbe(bytes: bytes)
            let words = probe!.pointer.bindMemory(to: UInt64.self)
            var rng = SeededGenerator(seed: 256)
            for i in words.indices { words[i] = rng.next() }
            let expected = fnv1a(UnsafeRawBufferPointer(probe!.pointer))
            let released = probe!.released
            try dealer.send([.bytes([0xAB]), .zeroCopy(UnsafeRawBufferPointer(probe!.pointer), owner: probe!)])
            probe = nil // libzmq now holds the only reference

            let frames = try router.receive()
            try #require(frames.count == 3)
            #expect(frames[1].bytes == [0xAB])
            #expect(frames[2].count == bytes)
            #expect(frames[2].withUnsafeBytes { fnv1a($0) } == expected)
            #expect(released.wait(timeout: .now() + 10) == .success, "libzmq must release the buffer once sent")
        }
    }

    @Test func pollTimesOutWhenNothingArrives() async throws {
        try await onDedicatedThread {
            let context = try Context()
            let router = try Socket(context, .router)
            try router.bind("tcp://127.0.0.1:0")
            let poller = Poller()
            poller.add(router)
            let start = ContinuousClock.now
            let ready = try poller.poll(timeoutMilliseconds: 150)
            let waited = ContinuousClock.now - start
            #expect(ready.isEmpty)
            #expect(waited >= .milliseconds(140))
            #expect(waited < .seconds(5))
            #expect(throws: TransportError.wouldBlock(operation: "zmq_msg_recv")) { try router.receive(dontWait: true) }
        }
    }

    @Test func pollReportsWhichSocketIsReadable() async throws {
        try await onDedicatedThread {
            let context = try Context()
            let a = try Socket(context, .router), b = try Socket(context, .router)
            try a.bind("tcp://127.0.0.1:0")
            try b.bind("tcp://127.0.0.1:0")
            let dealer = try Socket(context, .dealer)
            try dealer.connect(try b.lastEndpoint)
            try dealer.send([1])
            let poller = Poller()
            poller.add(a)
            poller.add(b)
            #expect(try poller.poll(timeoutMilliseconds: 5000) == [1])
        }
    }

    @Test func aPeerThatDisappearsMidConversationIsReportedNotWaitedFor() async throws {
        try await onDedicatedThread {
            let context = try Context()
            let router = try Socket(context, .router)
            try router.setRouterMandatory(true)
            try router.bind("tcp://127.0.0.1:0")
            let endpoint = try router.lastEndpoint
            var dealer: Socket? = try Socket(context, .dealer)
            try dealer!.setRoutingId(Array("worker-1".utf8))
            try dealer!.connect(endpoint)
            try dealer!.send(Array("step 1".utf8))
            let request = try router.receive()
            #expect(request[0].bytes == Array("worker-1".utf8))
            dealer = nil // the worker process dies mid-conversation

            // The reply to a vanished peer fails fast once libzmq notices the disconnect.
            var outcome: TransportError?
            for _ in 0..<100 {
                do throws(TransportError) {
                    try router.send([.bytes(Array("worker-1".utf8)), .bytes(Array("step 2".utf8))])
                } catch {
                    outcome = error
                    break
                }
                Thread.sleep(forTimeInterval: 0.02)
            }
            #expect(outcome == .hostUnreachable(operation: "zmq_msg_send"))

            // The other side: a client whose server vanished times out instead of hanging.
            let client = try Socket(context, .dealer)
            try client.setTimeouts(receiveMilliseconds: 200, sendMilliseconds: 200)
            try client.connect(endpoint)
            try client.send([9])
            _ = try router.receive()
            try router.unbind(endpoint)
            #expect(throws: TransportError.wouldBlock(operation: "zmq_msg_recv")) { try client.receive() }
        }
    }

    @Test func oversizedMultipartMessagesAreDrainedAndRefused() async throws {
        try await onDedicatedThread {
            let context = try Context()
            let router = try Socket(context, .router)
            try router.bind("tcp://127.0.0.1:0")
            let dealer = try Socket(context, .dealer)
            try dealer.connect(try router.lastEndpoint)
            try dealer.send((0..<40).map { OutboundFrame.bytes([UInt8($0)]) })
            try dealer.send([.bytes([42])])
            #expect(throws: TransportError.tooManyFrames(limit: 16)) { try router.receive(maxFrames: 16) }
            let next = try router.receive(maxFrames: 16)
            #expect(next.last?.bytes == [42], "the stream stays in sync after a refused message")
        }
    }

    @Test func framesLargerThanMaxMessageSizeNeverArrive() async throws {
        try await onDedicatedThread {
            let context = try Context()
            let router = try Socket(context, .router)
            try router.setMaxMessageSize(1024)
            try router.bind("tcp://127.0.0.1:0")
            let dealer = try Socket(context, .dealer)
            try dealer.connect(try router.lastEndpoint)
            try dealer.send(Array(repeating: 1, count: 4096))
            let poller = Poller()
            poller.add(router)
            #expect(try poller.poll(timeoutMilliseconds: 300).isEmpty)
        }
    }

    @Test func errorsNameTheOperationAndLibzmqsReason() throws {
        let context = try Context()
        let socket = try Socket(context, .router)
        let error = #expect(throws: TransportError.self) { try socket.bind("nonsense://x") }
        let text = try #require(error).description
        #expect(text.hasPrefix("zmq_bind(nonsense://x) failed:"))
        #expect(text.contains("errno"))
    }
}

/// FNV-1a over 8-byte words: a checksum that notices any changed, lost or reordered word.
func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    let words = bytes.bindMemory(to: UInt64.self)
    for w in words { h = (h ^ w) &* 0x100_0000_01b3 }
    return h
}
