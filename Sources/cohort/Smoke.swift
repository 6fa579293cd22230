import ArgumentParser
import CohortTransport
import CohortWire
import Foundation

/// `cohort smoke`: the transport end to end on this host, until the training demo exists.
/// A hub (ROUTER, CURVE + ZAP) and a client (DEALER) on tcp loopback: an api `hello`, a flat
/// buffer sent as 1 MiB shards zero-copy and checked on arrival, then a malformed message and a
/// message from a future protocol version, which the hub refuses with an error the client prints.
struct Smoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a transport smoke test on this host: hello, zero-copy shards over CURVE, refused bad input.")

    @Option(help: "Size of the flat buffer to send, in MiB.")
    var mib = 256

    @Option(help: "Shard size in KiB.")
    var shardKib = 1024

    func validate() throws {
        guard (1...4096).contains(mib) else { throw ValidationError("--mib must be from 1 to 4096, got \(mib)") }
        guard (1...65536).contains(shardKib) else { throw ValidationError("--shard-kib must be from 1 to 65536, got \(shardKib)") }
    }

    func run() throws {
        Allocator.avoidPerMessageMapping()
        let elements = mib << 18
        let shardElements = shardKib << 8
        let shardCount = (elements + shardElements - 1) / shardElements
        let hubKeys = try CurveKeyPair.generate(), clientKeys = try CurveKeyPair.generate()
        let client = clientKeys.publicKey
        print("cohort smoke: libzmq \(Transport.libzmqVersion), CURVE on, \(mib) MiB in \(shardCount) shards of \(shardKib) KiB")

        let hubReady = DispatchSemaphore(value: 0)
        let endpoint = Box("")
        let hubResult = Box<Result<HubReport, any Error>?>(nil)
        let hubDone = DispatchSemaphore(value: 0)
        let hub = Thread {
            hubResult.value = Result {
                try runHub(keys: hubKeys, admitted: client, shardCount: shardCount, elements: elements,
                           onBound: { endpoint.value = $0; hubReady.signal() })
            }
            if case .failure = hubResult.value { hubReady.signal() } // it never bound
            hubDone.signal()
        }
        hub.start()
        hubReady.wait()
        if case let .failure(error)? = hubResult.value { throw error }

        let context = try Context()
        let dealer = try Socket(context, .dealer)
        try dealer.setHighWaterMarks(send: 0, receive: 0)
        try dealer.setTimeouts(receiveMilliseconds: 10_000, sendMilliseconds: 10_000)
        try dealer.makeCurveClient(keys: clientKeys, serverKey: hubKeys.publicKey)
        try dealer.connect(endpoint.value)

        // 1. hello
        try dealer.send(Message.apiRequest(ApiRequest(requestId: 1, method: ApiMethod.hello)).encode())
        guard case let .apiReply(reply) = try decode(try dealer.receive()) else { throw SmokeError("hello: unexpected reply") }
        let hello = try reply.decodeBody(as: HelloReply.self)
        print("hello: protocol \(hello.protocolVersion), api \(hello.endpoints.api), key \(hello.publicKey ?? "-")")

        // 2. the flat buffer, zero-copy, every shard in flight
        let buffer = FlatBuffer(elements: elements)
        let start = ContinuousClock.now
        for shard in 0..<shardCount {
            let offset = shard * shardElements
            let count = min(shardElements, elements - offset)
            let header = ShardHeader(job: 1, step: 1, kind: .gradient, encoding: .fp32, shard: UInt32(shard),
                                     shardCount: UInt32(shardCount), elementOffset: UInt64(offset),
                                     elementCount: UInt32(count), sampleCount: 32)
            let payload = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer.floats)[(offset * 4)..<((offset + count) * 4)])
            try dealer.send([.bytes(Message.shard(header).encode()), .zeroCopy(payload, owner: buffer)])
        }
        guard case let .apiReply(done) = try decode(try dealer.receive()), done.status == .ok else {
            throw SmokeError("the hub did not confirm the shards")
        }
        let seconds = (ContinuousClock.now - start) / .seconds(1)
        let summary = try done.decodeBody(as: [String: Double].self)
        guard summary["checksum"] == buffer.checksum else {
            throw SmokeError("checksum mismatch: sent \(buffer.checksum), hub saw \(summary["checksum"] ?? .nan)")
        }
        print(String(format: "shards: %d received intact (checksum %.0f), %.2f GB/s over CURVE", shardCount, buffer.checksum,
                     Double(elements * 4) / seconds / 1e9))

        // 3. bad input is refused with a reason, and the hub keeps serving
        try dealer.send([0xde, 0xad, 0xbe, 0xef])
        var future = Message.heartbeat(Heartbeat(sequence: 1, sentAtNanos: 0)).encode()
        future[4] = 2
        try dealer.send(future)
        for _ in 0..<2 {
            guard case let .error(e) = try decode(try dealer.receive()) else { throw SmokeError("expected an error reply") }
            print("refused as expected: \(e.message)")
        }
        try dealer.send(Message.apiRequest(ApiRequest(requestId: 2, method: "stop")).encode())
        hubDone.wait()
        guard let report = try hubResult.value?.get() else { throw SmokeError("the hub did not finish") }
        print("hub: \(report.accepted) client admitted by ZAP, \(report.refused) bad messages refused")
        print("smoke run passed")
    }

    private func decode(_ frames: [InboundFrame]) throws -> Message {
        let copies = frames.map(\.bytes)
        return try copies[0].withUnsafeBytes { try Message.decode($0) }
    }
}

struct HubReport: Sendable {
    var accepted: Int
    var refused: Int
}

/// The hub side: admits one key, answers hello, sums every shard as it lands, refuses bad input.
private func runHub(keys: CurveKeyPair, admitted: CurveKey, shardCount: Int, elements: Int,
                    onBound: (String) -> Void) throws -> HubReport {
    struct OneKey: Authenticator {
        let key: CurveKey
        func authenticate(_ request: ZAPRequest) -> ZAPDecision {
            request.publicKey == key ? .accept(userId: "smoke-client", metadata: ["Role": "worker"]) : .reject(reason: "unknown key")
        }
    }
    let context = try Context()
    let zap = try ZAPHandler(context: context, authenticator: OneKey(key: admitted))
    defer { zap.stop() }
    let router = try Socket(context, .router)
    try router.setHighWaterMarks(send: 0, receive: 0)
    try router.makeCurveServer(keys: keys, zap: zap)
    try router.bind("tcp://127.0.0.1:0")
    onBound(try router.lastEndpoint)
    var received = 0, refused = 0
    var checksum = 0.0
    while true {
        let frames = try router.receive()
        let identity = frames[0].bytes
        guard frames[1].property("User-Id") == "smoke-client" else { throw SmokeError("a message arrived without its ZAP User-Id") }
        let message: Message
        do {
            message = try withExtendedLifetime(frames) { try Message.decode(frames: frames.dropFirst().map(\.unsafeBytes)) }
        } catch {
            refused += 1
            let reply = Message.error(ErrorMessage(code: .malformed, message: "\(error)"))
            try router.send([.bytes(identity), .bytes(reply.encode())])
            continue
        }
        switch message {
        case let .apiRequest(request) where request.method == ApiMethod.hello:
            let body = HelloReply(endpoints: Endpoints(api: try router.lastEndpoint, control: "", data: ""),
                                  publicKey: keys.publicKey.z85, software: "cohort \(CohortVersion.string)")
            try router.send([.bytes(identity), .bytes(Message.apiReply(try ApiReply(requestId: request.requestId, json: body)).encode())])
        case .apiRequest:
            return HubReport(accepted: zap.acceptedCount, refused: refused)
        case .shard:
            checksum += frames[2].withUnsafeBytes { FlatBuffer.sum($0.bindMemory(to: Float.self)) }
            received += 1
            if received == shardCount {
                let reply = try ApiReply(requestId: 0, json: ["checksum": checksum, "shards": Double(received)])
                try router.send([.bytes(identity), .bytes(Message.apiReply(reply).encode())])
            }
        default:
            refused += 1
        }
    }
}

/// A flat Float buffer handed to libzmq zero-copy; freed when the last shard has been sent.
final class FlatBuffer: @unchecked Sendable { // filled before sending, only read afterwards
    let floats: UnsafeMutableBufferPointer<Float>
    let checksum: Double

    init(elements: Int) {
        floats = .allocate(capacity: elements)
        for i in 0..<elements { floats[i] = Float(i % 1000) * 0.5 }
        checksum = FlatBuffer.sum(UnsafeBufferPointer(floats))
    }

    deinit { floats.deallocate() }

    static func sum(_ values: UnsafeBufferPointer<Float>) -> Double {
        var s = 0.0
        for v in values { s += Double(v) }
        return s
    }
}

final class Box<T>: @unchecked Sendable { // handed between two threads through semaphores
    var value: T
    init(_ value: T) { self.value = value }
}

struct SmokeError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}
