import Foundation
import Testing
import TestSupport
@testable import CohortTransport

/// Admits exactly the keys it was given, each with its own principal and role.
struct KeyTable: Authenticator {
    let known: [CurveKey: (String, String)]
    func authenticate(_ request: ZAPRequest) -> ZAPDecision {
        guard request.mechanism == "CURVE", let key = request.publicKey, let (principal, role) = known[key] else {
            return .reject(reason: "unknown key")
        }
        return .accept(userId: principal, metadata: ["Role": role])
    }
}

@Suite(.timeLimit(.minutes(1)))
struct CurveTests {
    @Test func keysRoundTripThroughZ85() throws {
        let pair = try CurveKeyPair.generate()
        #expect(pair.publicKey.z85.count == 40)
        #expect(try CurveKey(z85: pair.publicKey.z85) == pair.publicKey)
        #expect(try CurveKey(z85: pair.secretKey.z85 + "\n") == pair.secretKey)
        #expect(pair.publicKey != pair.secretKey)
        #expect(throws: TransportError.self) { try CurveKey(z85: "too short") }
        #expect(throws: TransportError.self) { try CurveKey(z85: String(repeating: "~", count: 40)) }
        #expect(throws: TransportError.self) { try CurveKey(bytes: [1, 2, 3]) }
    }

    @Test func keyFilesAreSavedPrivateAndLoadedBack() throws {
        let dir = try TestSupport.temporaryDirectory("keys")
        let path = dir.appendingPathComponent("nested/worker.key").path
        let pair = try CurveKeyPair.generate()
        try pair.save(to: path)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try CurveKeyPair.load(from: path) == pair)
        #expect(try CurveKeyPair.loadPublicKey(from: path + ".pub") == pair.publicKey)
        let pubText = try String(contentsOfFile: path + ".pub", encoding: .utf8)
        #expect(!pubText.contains(pair.secretKey.z85))

        chmod(path, 0o644)
        let error = #expect(throws: TransportError.self) { try CurveKeyPair.load(from: path) }
        #expect(error?.description.contains("chmod 600") == true)
        #expect(throws: TransportError.self) { try CurveKeyPair.load(from: dir.appendingPathComponent("absent").path) }
    }

    @Test func aKeyFileWhosePublicKeyIsNotItsOwnIsRefused() throws {
        let dir = try TestSupport.temporaryDirectory("keys")
        let path = dir.appendingPathComponent("k").path
        let a = try CurveKeyPair.generate(), b = try CurveKeyPair.generate()
        try CurveKeyPair(publicKey: a.publicKey, secretKey: b.secretKey).save(to: path)
        let error = #expect(throws: TransportError.self) { try CurveKeyPair.load(from: path) }
        #expect(error?.description.contains("does not match") == true)
    }

    @Test func anAcceptedKeyCarriesItsUserIdOnEveryMessageAndARejectedKeyDeliversNothing() async throws {
        try await onDedicatedThread {
            let server = try CurveKeyPair.generate()
            let alice = try CurveKeyPair.generate()
            let mallory = try CurveKeyPair.generate()
            let context = try Context()
            let zap = try ZAPHandler(context: context, authenticator: KeyTable(known: [alice.publicKey: ("alice@pku", "researcher")]))
            defer { zap.stop() }
            let router = try Socket(context, .router)
            try router.makeCurveServer(keys: server, zap: zap)
            try router.bind("tcp://127.0.0.1:0")
            let endpoint = try router.lastEndpoint

            let good = try Socket(context, .dealer)
            try good.makeCurveClient(keys: alice, serverKey: server.publicKey)
            try good.connect(endpoint)
            for i in 0..<3 { try good.send([.bytes([UInt8(i)]), .bytes(Array("payload".utf8))]) }
            for i in 0..<3 {
                let frames = try router.receive()
                #expect(frames.count == 3)
                #expect(frames[1].bytes == [UInt8(i)])
                for frame in frames.dropFirst() {
                    #expect(frame.property("User-Id") == "alice@pku")
                    #expect(frame.property("Role") == "researcher")
                }
            }

            let bad = try Socket(context, .dealer)
            try bad.makeCurveClient(keys: mallory, serverKey: server.publicKey)
            try bad.connect(endpoint)
            try bad.send(Array("let me in".utf8), dontWait: true)
            let poller = Poller()
            poller.add(router)
            #expect(try poller.poll(timeoutMilliseconds: 500).isEmpty, "a rejected key must never deliver a message")
            #expect(zap.rejectedCount >= 1)
            #expect(zap.acceptedCount == 1)
        }
    }

    @Test func aClientWithTheWrongServerKeyNeverGetsThrough() async throws {
        try await onDedicatedThread {
            let server = try CurveKeyPair.generate(), impostor = try CurveKeyPair.generate()
            let alice = try CurveKeyPair.generate()
            let context = try Context()
            let zap = try ZAPHandler(context: context, authenticator: KeyTable(known: [alice.publicKey: ("alice", "worker")]))
            defer { zap.stop() }
            let router = try Socket(context, .router)
            try router.makeCurveServer(keys: server, zap: zap)
            try router.bind("tcp://127.0.0.1:0")
            let dealer = try Socket(context, .dealer)
            try dealer.makeCurveClient(keys: alice, serverKey: impostor.publicKey)
            try dealer.connect(try router.lastEndpoint)
            try dealer.send([1], dontWait: true)
            let poller = Poller()
            poller.add(router)
            #expect(try poller.poll(timeoutMilliseconds: 400).isEmpty)
        }
    }

    @Test func aZAPHandlerOnAnotherContextIsRefused() throws {
        let a = try Context(), b = try Context()
        let zap = try ZAPHandler(context: b, authenticator: KeyTable(known: [:]))
        defer { zap.stop() }
        let router = try Socket(a, .router)
        let error = #expect(throws: TransportError.self) { try router.makeCurveServer(keys: try CurveKeyPair.generate(), zap: zap) }
        #expect(error?.description.contains("another ZeroMQ context") == true)
    }

    @Test func zapMetadataIsEncodedAsZMTPProperties() {
        let bytes = ZAPHandler.encodeMetadata(["Role": "admin"])
        #expect(bytes == [4] + Array("Role".utf8) + [0, 0, 0, 5] + Array("admin".utf8))
    }
}
