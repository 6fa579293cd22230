import Foundation
import Logging
import Testing
import TestSupport
@testable import CohortClient
@testable import CohortCoordinator
@testable import CohortStore
import CohortTransport
import CohortWire

/// A real job spec (CohortSpec's YAML) of `name` that needs `minWorkers` workers.
func spec(_ name: String, minWorkers: Int = 1) -> String {
    """
    name: \(name)
    model: {kind: mlp, hidden: [16]}
    data: {dataset: digits}
    training: {steps: 10, global-batch-size: 16}
    cluster: {min-workers: \(minWorkers)}
    """
}

/// A coordinator on loopback with CURVE on, and a client key the tests use.
final class TestCoordinator: @unchecked Sendable { // used from one test's threads in turn
    let running: RunningCoordinator
    let settings: CoordinatorSettings
    let clientKeys: CurveKeyPair
    let serverKey: CurveKey

    init(dataDirectory: String? = nil, missedHeartbeats: Int = 5, heartbeat: Double = 1) throws {
        let dir = try dataDirectory ?? TestSupport.temporaryDirectory("coordinator").path
        (running, settings) = try Self.startOnAFreePort(dir, Registry(heartbeatInterval: heartbeat, missedHeartbeats: missedHeartbeats))
        clientKeys = try CurveKeyPair.load(from: dir + "/admin.key") // the first admin, made at first start
        serverKey = try CurveKeyPair.load(from: settings.keyPath).publicKey
    }

    /// A fresh key enrolled through a join token the admin mints, as a site or user would.
    func enrolled(_ role: String, at institution: String = "pku", name: String? = nil) throws -> CurveKeyPair {
        let token = try JoinToken(text: try client().call(ApiMethod.token, TokenRequest(institution: institution, role: role, ttlSeconds: 60),
                                                           as: TokenReply.self).token)
        let keys = try CurveKeyPair.generate()
        let enrollee = try Client(address: settings.address, credentials: .curve(keys: keys, serverKey: serverKey))
        _ = try enrollee.call(ApiMethod.enroll, EnrollRequest(secret: token.secret, name: name), as: PrincipalView.self)
        return keys
    }

    func client(keys: CurveKeyPair, timeout: Double = 5) throws -> Client {
        try Client(address: settings.address, credentials: .curve(keys: keys, serverKey: serverKey), timeout: timeout)
    }

    static func startOnAFreePort(_ dir: String, _ registry: Registry) throws -> (RunningCoordinator, CoordinatorSettings) {
        var lastError: (any Error)?
        for _ in 0..<20 {
            let port = Int.random(in: 20_000...60_000)
            let s = CoordinatorSettings(dataDirectory: dir, address: CoordinatorAddress(host: "127.0.0.1", port: port),
                                        bindHost: "127.0.0.1", registry: registry, tickMilliseconds: 100)
            do { return (try RunningCoordinator.start(s, logger: Logger(label: "test")), s) } catch { lastError = error }
        }
        throw lastError!
    }

    func client(timeout: Double = 5) throws -> Client {
        try Client(address: settings.address, credentials: .curve(keys: clientKeys, serverKey: serverKey), timeout: timeout)
    }

    /// A worker speaking the control protocol by hand: enrols, registers, then heartbeats on request.
    func worker(_ name: String, institution: String = "pku") throws -> Socket {
        let keys = try enrolled("worker", at: institution, name: name)
        let socket = try Socket(try Context(), .dealer)
        try socket.setLinger(milliseconds: 0)
        try socket.makeCurveClient(keys: keys, serverKey: serverKey)
        try socket.setTimeouts(receiveMilliseconds: 5000, sendMilliseconds: 5000)
        try socket.connect(settings.address.endpoints.control)
        let request = try ApiRequest(requestId: 1, method: ApiMethod.register,
                                     json: RegisterRequest(name: name, institution: institution, cores: 8, memoryBytes: 16 << 30))
        try socket.send(Message.apiRequest(request).encode())
        let reply = try socket.receive()
        guard case .apiReply(let r) = try reply[0].withUnsafeBytes({ try Message.decode($0) }), r.status == .ok else {
            throw TestSupportError("registration failed")
        }
        return socket
    }

    deinit { running.stop() }
}

/// Polls `condition` until it holds or `seconds` pass.
func eventually(_ seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.05)
    }
    return try condition()
}

@Suite(.serialized, .timeLimit(.minutes(2)))
struct ApiTests {
    @Test func helloTellsEndpointsVersionAndKey() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let hello = try c.client().hello()
            #expect(hello.protocolVersion == Int(Envelope.version))
            #expect(hello.endpoints == c.settings.address.endpoints)
            #expect(hello.publicKey == c.serverKey.z85)
        }
    }

    @Test func aJobWaitsWithAReasonUntilWorkersComeThenRuns() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let client = try c.client()
            let submitted = try client.submit(spec: spec("digits", minWorkers: 2), requestId: "r1")
            #expect(submitted.created)
            let waiting = try client.status(job: submitted.job.id).job
            #expect(waiting.state == "waiting")
            #expect(waiting.reason == "needs 2 workers, 0 idle fit: no worker has registered yet")
            let retried = try client.submit(spec: spec("digits", minWorkers: 2), requestId: "r1")
            #expect(!retried.created && retried.job.id == submitted.job.id)
            #expect(try client.jobs().count == 1)

            let w1 = try c.worker("pku-01")
            #expect(try eventually { try client.status(job: submitted.job.id).job.reason?.hasPrefix("needs 2 workers, 1 idle fits") == true })
            let w2 = try c.worker("sjtu-01", institution: "sjtu")
            #expect(try eventually { try client.status(job: submitted.job.id).job.state == "running" })
            let running = try client.status(job: submitted.job.id)
            #expect(Set(running.job.workers) == ["pku-01", "sjtu-01"])
            #expect(running.events.map(\.kind).contains("job.placed"))
            #expect(try client.workers().map(\.state) == ["busy", "busy"])
            #expect(try client.jobs(state: "running").map(\.id) == [submitted.job.id])
            withExtendedLifetime((w1, w2)) {}
        }
    }

    @Test func cancelFreesWorkersAndASecondCancelIsAConflict() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let client = try c.client()
            let worker = try c.worker("pku-01")
            let id = try client.submit(spec: spec("a"), requestId: "x").job.id
            #expect(try eventually { try client.status(job: id).job.state == "running" })
            let cancelled = try client.cancel(job: id)
            #expect(cancelled.state == "cancelled")
            #expect(cancelled.reason == "cancelled by admin")
            #expect(try client.workers().first?.state == "idle")
            let error = #expect(throws: ClientError.self) { try client.cancel(job: id) }
            #expect(error?.description == "job \(id) is already cancelled; it cannot become cancelled")
            #expect(error?.exitCode == 4)
            withExtendedLifetime(worker) {}
        }
    }

    @Test func badInputGetsTypedErrorsAndTheCoordinatorKeepsServing() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let client = try c.client()
            let notFound = #expect(throws: ClientError.self) { try client.status(job: 4242) }
            #expect(notFound?.description == "job 4242 does not exist")
            #expect(notFound?.exitCode == 3)

            let badSpec = #expect(throws: ClientError.self) {
                try client.submit(spec: "name: x\ntraining: {steps: -3}\ncluster: {min-workers: 0}", requestId: "b")
            }
            #expect(badSpec?.exitCode == 2)
            #expect(badSpec?.description.contains("training.steps") == true)
            #expect(badSpec?.description.contains("cluster.min-workers") == true)
            #expect(badSpec?.description.contains("model") == true, "every problem at once")

            let badState = #expect(throws: ClientError.self) { try client.jobs(state: "sleeping") }
            #expect(badState?.description.contains("unknown state `sleeping`") == true)

            let unknown = #expect(throws: ClientError.self) { try client.call("explode", [String: String](), as: JobView.self) }
            #expect(unknown?.description.contains("unknown method `explode`") == true)

            // A malformed message inside an authenticated session: a typed error reply.
            let raw = try Socket(try Context(), .dealer)
            try raw.setLinger(milliseconds: 0)
            try raw.makeCurveClient(keys: c.clientKeys, serverKey: c.serverKey)
            try raw.setTimeouts(receiveMilliseconds: 5000, sendMilliseconds: 5000)
            try raw.connect(c.settings.address.endpoints.api)
            try raw.send([0x43, 0x48, 0x52, 0x54, 0x01, 0x00, 0x01, 0x01, 0xFF])
            let reply = try raw.receive()
            guard case .error(let e) = try reply[0].withUnsafeBytes({ try Message.decode($0) }) else {
                Issue.record("expected an error message")
                return
            }
            #expect(e.code == .malformed)
            #expect(e.message.contains("apiRequest.requestId"))
            #expect(c.running.stats.malformed.load(ordering: .relaxed) >= 1)
            #expect(try client.hello().protocolVersion == 1, "still serving")
        }
    }

    @Test func rawGarbageOnEveryPortIsDroppedCountedAndServingGoesOn() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            for port in [c.settings.address.port, c.settings.address.port + 1, c.settings.address.port + 2] {
                try sendRawBytes(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + (0..<200).map { UInt8($0) }, toPort: port)
            }
            #expect(eventually { c.running.stats.droppedConnections.load(ordering: .relaxed) >= 3 },
                    "dropped: \(c.running.stats.droppedConnections.load(ordering: .relaxed))")
            #expect(try c.client().hello().protocolVersion == 1, "still serving")
        }
    }

    @Test func aSilentWorkerIsDeclaredLostAndItsJobWaitsWithTheReason() async throws {
        let c = try TestCoordinator(missedHeartbeats: 2, heartbeat: 0.2)
        try await onDedicatedThread {
            let client = try c.client()
            var worker: Socket? = try c.worker("pku-01")
            let id = try client.submit(spec: spec("a"), requestId: "x").job.id
            #expect(try eventually { try client.status(job: id).job.state == "running" })
            worker = nil // it stops heartbeating
            #expect(try eventually { try client.status(job: id).job.state == "waiting" })
            let job = try client.status(job: id).job
            #expect(job.reason?.contains("pku-01 lost at") == true, "\(job.reason ?? "")")
            #expect(try client.workers().first?.state == "lost")
            #expect(try client.events(job: id).map(\.kind).contains("worker.lost"))
            _ = worker
        }
    }

    @Test func heartbeatsKeepAWorkerAliveAndAreEchoed() async throws {
        let c = try TestCoordinator(missedHeartbeats: 2, heartbeat: 0.2)
        try await onDedicatedThread {
            let worker = try c.worker("pku-01")
            for i in 0..<10 {
                try worker.send(Message.heartbeat(Heartbeat(sequence: UInt64(i), sentAtNanos: 99)).encode())
                let echo = try worker.receive()
                #expect(try echo[0].withUnsafeBytes { try Message.decode($0) } == .heartbeat(Heartbeat(sequence: UInt64(i), sentAtNanos: 99)))
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(try c.client().workers().first?.state == "idle")
        }
    }

    @Test func anUnreachableCoordinatorIsAClearErrorWithinTheTimeout() async throws {
        try await onDedicatedThread {
            let client = try Client(address: CoordinatorAddress(host: "127.0.0.1", port: 9), credentials: .plaintext, timeout: 1)
            let start = Date()
            let error = #expect(throws: ClientError.self) { try client.hello() }
            #expect(Date().timeIntervalSince(start) < 3)
            #expect(error?.exitCode == 5)
            #expect(error?.description.hasPrefix("the coordinator at 127.0.0.1:9 did not answer within 1 s") == true)
        }
    }

    @Test func jobsSurviveACoordinatorRestart() async throws {
        let dir = try TestSupport.temporaryDirectory("restart").path
        let id = try await onDedicatedThread {
            let first = try TestCoordinator(dataDirectory: dir)
            return try first.client().submit(spec: spec("kept"), requestId: "k").job.id
        } // the first coordinator stops here
        let again = try TestCoordinator(dataDirectory: dir)
        try await onDedicatedThread {
            let client = try again.client()
            #expect(try client.status(job: id).job.name == "kept")
            #expect(again.serverKey == (try CurveKeyPair.load(from: dir + "/coordinator.key").publicKey), "the key persists")
            #expect(try client.events().map(\.kind).filter { $0 == "coordinator.started" }.count == 2)
        }
    }
}

/// Opens a plain TCP connection, writes `bytes`, and closes it: what a port scanner or a
/// misdirected HTTP client does.
func sendRawBytes(_ bytes: [UInt8], toPort port: Int) throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestSupportError("socket() failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw TestSupportError("connect to \(port) failed") }
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    Thread.sleep(forTimeInterval: 0.1)
}
