import Foundation
import Testing
import TestSupport
@testable import CohortClient
@testable import CohortCoordinator
import CohortStore
import CohortTransport
import CohortWire

@Suite(.serialized, .timeLimit(.minutes(2)))
struct SecurityTests {
    @Test func anUnenrolledKeyMayRedeemATokenAndNothingElse() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let stranger = try c.client(keys: try CurveKeyPair.generate())
            #expect(try stranger.hello().publicKey == c.serverKey.z85, "hello is open to every caller")
            for call in [{ _ = try stranger.jobs() }, { _ = try stranger.submit(spec: spec("x"), requestId: "1") },
                         { _ = try stranger.workers() }] {
                let error = #expect(throws: ClientError.self) { try call() }
                #expect(error?.description.contains("may only redeem a join token") == true)
                #expect(error?.exitCode == 6)
            }
            let before = try c.running.store.events().count
            #expect(c.running.stats.denied.load(ordering: .relaxed) == 3)
            #expect(try c.running.store.events().count == before, "a stranger's denials do not grow the database")

            let keys = try c.enrolled("researcher", at: "pku", name: "alice")
            let alice = try c.client(keys: keys)
            #expect(try alice.submit(spec: spec("mine"), requestId: "a").job.owner == "alice")
        }
    }

    /// Names and institutions are shown in operators' terminals: one with an escape sequence (or
    /// any control character) is refused, so nobody can run one in an operator's terminal.
    @Test func namesWithControlCharactersAreRefused() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let admin = try c.client()
            let institution = #expect(throws: ClientError.self) {
                try admin.call(ApiMethod.token, TokenRequest(institution: "pku\u{1B}[2J", role: "worker", ttlSeconds: 60), as: TokenReply.self)
            }
            #expect(institution?.description.contains("control characters") == true, "\(String(describing: institution))")
            let token = try admin.call(ApiMethod.token, TokenRequest(institution: "pku", role: "worker", ttlSeconds: 60), as: TokenReply.self)
            let secret = try JoinToken(text: token.token).secret
            let name = #expect(throws: ClientError.self) {
                try c.client(keys: try CurveKeyPair.generate()).call(ApiMethod.enroll, EnrollRequest(secret: secret, name: "eve\u{07}\u{1B}]0;pwned\u{07}"),
                                                                     as: PrincipalView.self)
            }
            #expect(name?.description.contains("control characters") == true, "\(String(describing: name))")
            // The token was not spent on the refused name.
            _ = try c.client(keys: try CurveKeyPair.generate()).call(ApiMethod.enroll, EnrollRequest(secret: secret, name: "eve"), as: PrincipalView.self)
        }
    }

    @Test func aUsedOrExpiredTokenIsRefused() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let admin = try c.client()
            let token = try JoinToken(text: try admin.call(ApiMethod.token, TokenRequest(institution: "pku", role: "worker", ttlSeconds: 60),
                                                           as: TokenReply.self).token)
            #expect(token.publicKey == c.serverKey.z85 && token.address == c.settings.address.description)
            _ = try c.client(keys: try CurveKeyPair.generate()).call(ApiMethod.enroll, EnrollRequest(secret: token.secret, name: nil),
                                                                     as: PrincipalView.self)
            let reused = #expect(throws: ClientError.self) {
                try c.client(keys: try CurveKeyPair.generate()).call(ApiMethod.enroll, EnrollRequest(secret: token.secret, name: nil),
                                                                     as: PrincipalView.self)
            }
            #expect(reused?.description.contains("already used") == true)

            let short = try JoinToken(text: try admin.call(ApiMethod.token, TokenRequest(institution: "pku", role: "worker", ttlSeconds: 0.2),
                                                           as: TokenReply.self).token)
            Thread.sleep(forTimeInterval: 0.4)
            let expired = #expect(throws: ClientError.self) {
                try c.client(keys: try CurveKeyPair.generate()).call(ApiMethod.enroll, EnrollRequest(secret: short.secret, name: nil),
                                                                     as: PrincipalView.self)
            }
            #expect(expired?.description.contains("expired") == true)

            let forged = #expect(throws: ClientError.self) {
                try c.client(keys: try CurveKeyPair.generate()).call(ApiMethod.enroll, EnrollRequest(secret: String(repeating: "ab", count: 32), name: nil),
                                                                     as: PrincipalView.self)
            }
            #expect(forged?.description == "this join token does not exist")
        }
    }

    @Test func aRevokedKeysNextRequestIsRefusedOnItsOpenConnection() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let bob = try c.client(keys: try c.enrolled("operator", name: "bob"))
            #expect(try bob.jobs().isEmpty)
            _ = try c.client().call(ApiMethod.revoke, RevokeRequest(principal: "bob"), as: PrincipalView.self)
            let error = #expect(throws: ClientError.self) { try bob.jobs() }
            #expect(error?.description.contains("was revoked") == true)
            #expect(try c.running.store.events().contains { $0.kind == "principal.revoked" && $0.actor == "admin" && $0.detail == "bob" })
            #expect(try c.running.store.events().contains { $0.kind == "access.denied" && $0.actor == "bob" })
            // A loop of denied requests records one event a minute, not one each.
            for _ in 0..<20 { _ = try? bob.jobs() }
            #expect(try c.running.store.events().filter { $0.kind == "access.denied" && $0.actor == "bob" }.count == 1)
        }
    }

    @Test func researchersSeeAndCancelOnlyTheirOwnJobs() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let alice = try c.client(keys: try c.enrolled("researcher", name: "alice"))
            let bob = try c.client(keys: try c.enrolled("researcher", name: "bob"))
            let id = try alice.submit(spec: spec("a"), requestId: "1").job.id
            _ = try bob.submit(spec: spec("b"), requestId: "1")
            #expect(try bob.jobs().map(\.owner) == ["bob"])
            let cancel = #expect(throws: ClientError.self) { try bob.cancel(job: id) }
            #expect(cancel?.description == "job \(id) belongs to alice; researchers see and cancel only their own jobs")
            #expect(cancel?.exitCode == 6)
            #expect(throws: ClientError.self) { try bob.status(job: id) }
            #expect(try alice.cancel(job: id).state == "cancelled")
        }
    }

    @Test func anOperatorReadsEverythingButCannotSubmitOrCancel() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let id = try c.client().submit(spec: spec("a"), requestId: "1").job.id
            let carol = try c.client(keys: try c.enrolled("operator", name: "carol"))
            #expect(try carol.status(job: id).job.name == "a")
            let submit = #expect(throws: ClientError.self) { try carol.submit(spec: spec("x"), requestId: "2") }
            #expect(submit?.description == "carol (operator) may not call `submit` on the api endpoint")
            #expect(throws: ClientError.self) { try carol.cancel(job: id) }
            #expect(throws: ClientError.self) { try carol.call(ApiMethod.token, TokenRequest(institution: "x", role: "worker", ttlSeconds: 9), as: TokenReply.self) }
        }
    }

    @Test func aWorkerKeyCannotCallTheApiAndItsInstitutionIsTheEnrolledOne() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let keys = try c.enrolled("worker", at: "sjtu", name: "sjtu-07")
            let asClient = try c.client(keys: keys)
            #expect(try asClient.hello().protocolVersion == 1)
            let error = #expect(throws: ClientError.self) { try asClient.jobs() }
            #expect(error?.description == "sjtu-07 (worker) may not call `jobs` on the api endpoint")

            // Registering while claiming another institution: the enrolled one is recorded.
            let socket = try c.controlSocket(keys: keys)
            let claim = try ApiRequest(requestId: 1, method: ApiMethod.register,
                                       json: RegisterRequest(name: "pku-99", institution: "pku", cores: 4, memoryBytes: 1 << 30))
            try socket.send(Message.apiRequest(claim).encode())
            _ = try socket.receive()
            let worker = try #require(try c.client().workers().first)
            #expect(worker.institution == "sjtu" && worker.name == "sjtu-07")
        }
    }

    @Test func anUnenrolledKeyCannotRegisterAsAWorker() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let socket = try c.controlSocket(keys: try CurveKeyPair.generate())
            let request = try ApiRequest(requestId: 1, method: ApiMethod.register,
                                         json: RegisterRequest(name: "evil", institution: "pku", cores: 4, memoryBytes: 1 << 30))
            try socket.send(Message.apiRequest(request).encode())
            let reply = try socket.receive()
            guard case let .apiReply(r) = try reply[0].withUnsafeBytes({ try Message.decode($0) }) else {
                Issue.record("expected a reply")
                return
            }
            #expect(r.status == .unauthorized)
            #expect(try c.client().workers().isEmpty)
        }
    }

    @Test func roleTableIsWhatDocsSecuritySays() {
        #expect(Access.allowed(ApiMethod.submit, on: .api) == [.admin, .researcher])
        #expect(Access.allowed(ApiMethod.enroll, on: .api) == [nil])
        #expect(Access.allowed(ApiMethod.register, on: .control) == [.worker])
        #expect(Access.allowed("anything-new", on: .api) == [.admin])
    }
}

/// A worker that reconnects registers on a new connection (a new routing identity): the
/// coordinator keeps one connection per worker, so a worker that restarts all year does not
/// grow its maps, and heartbeats on the new connection count.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct ReconnectionTests {
    @Test func aWorkerThatRegistersAgainReplacesItsOldConnection() async throws {
        let c = try TestCoordinator()
        try await onDedicatedThread {
            let keys = try c.enrolled("worker", at: "pku", name: "pku-01")
            let other = try c.enrolled("worker", at: "sjtu", name: "sjtu-01")
            func register(_ keys: CurveKeyPair, _ name: String) throws -> Socket {
                let socket = try c.controlSocket(keys: keys)
                let request = try ApiRequest(requestId: 1, method: ApiMethod.register,
                                             json: RegisterRequest(name: name, institution: "", cores: 4, memoryBytes: 1 << 30))
                try socket.send(Message.apiRequest(request).encode())
                guard case let .apiReply(r) = try socket.receive()[0].withUnsafeBytes({ try Message.decode($0) }) else {
                    throw TransportError.misconfigured("expected a reply")
                }
                #expect(r.status == .ok)
                return socket
            }
            let stays = try register(other, "sjtu-01")
            var last: Socket?
            for _ in 0..<20 { last = try register(keys, "pku-01") }
            #expect(c.running.stats.workerConnections.load(ordering: .relaxed) == 2, "one connection per worker")
            // The latest connection is the worker's: its heartbeat is echoed.
            let socket = try #require(last)
            try socket.send(Message.heartbeat(Heartbeat(sequence: 7, sentAtNanos: 0)).encode())
            guard case let .heartbeat(beat) = try socket.receive()[0].withUnsafeBytes({ try Message.decode($0) }) else {
                Issue.record("expected the heartbeat back")
                return
            }
            #expect(beat.sequence == 7)
            #expect(try c.client().workers().count == 2)
            withExtendedLifetime(stays) {}
        }
    }
}

extension TestCoordinator {
    /// A worker's control connection with these keys (nothing sent yet).
    func controlSocket(keys: CurveKeyPair) throws -> Socket {
        let socket = try Socket(try Context(), .dealer)
        try socket.setLinger(milliseconds: 0)
        try socket.setTimeouts(receiveMilliseconds: 5000, sendMilliseconds: 5000)
        try socket.makeCurveClient(keys: keys, serverKey: serverKey)
        try socket.connect(settings.address.endpoints.control)
        return socket
    }
}
