import Testing
import TestSupport
@testable import CohortWire

struct CodecTests {
    static let samples: [Message] = [
        .apiRequest(ApiRequest(requestId: 42, method: "hello", body: Array("{\"a\":1}".utf8))),
        .apiRequest(ApiRequest(requestId: 0, method: "", body: [])),
        .apiReply(ApiReply(requestId: 42, status: .ok, body: Array("{}".utf8))),
        .apiReply(ApiReply(requestId: .max, status: .forbidden, body: [])),
        .heartbeat(Heartbeat(sequence: 7, sentAtNanos: 123_456_789)),
        .notice(Notice(kind: "assign", body: Array("{\"job\":3}".utf8))),
        .shard(ShardHeader(job: 3, step: 99, kind: .gradient, encoding: .fp32, shard: 2, shardCount: 5,
                           elementOffset: 524_288, elementCount: 262_144, sampleCount: 64)),
        .shard(ShardHeader(job: 1, step: 0, kind: .parameters, encoding: .bf16, shard: 0, shardCount: 1,
                           elementOffset: 0, elementCount: 0, sampleCount: 0)),
        .sharedShard(ShardHeader(job: 3, step: 99, kind: .parameters, encoding: .fp32, shard: 2, shardCount: 5,
                                 elementOffset: 524_288, elementCount: 262_144, sampleCount: 0)),
        .error(ErrorMessage(code: .versionMismatch, message: "版本不同 – version differs")),
    ]

    @Test(arguments: samples)
    func everyMessageRoundTrips(_ message: Message) throws {
        let bytes = message.encode()
        let decoded = try bytes.withUnsafeBytes { try Message.decode($0) }
        #expect(decoded == message)
        #expect(decoded.encode() == bytes)
    }

    @Test func everyMessageTypeHasASample() {
        #expect(Set(Self.samples.map(\.type)) == Set(MessageType.allCases))
    }

    @Test func anotherProtocolVersionIsNamedInTheError() throws {
        var bytes = Message.heartbeat(Heartbeat(sequence: 1, sentAtNanos: 2)).encode()
        bytes[4] = 9; bytes[5] = 0
        let error = #expect(throws: WireError.self) { try bytes.withUnsafeBytes { try Message.decode($0) } }
        #expect(error == .versionMismatch(peer: 9, ours: Envelope.version))
        let text = try #require(error).description
        #expect(text.contains("version 9") && text.contains("version \(Envelope.version)"))
    }

    @Test func foreignBytesAreNotACohortMessage() {
        let bytes: [UInt8] = Array("GET / HTTP/1.1\r\n".utf8)
        #expect(throws: WireError.badMagic(found: 0x2054_4547)) { try bytes.withUnsafeBytes { try Message.decode($0) } }
    }

    @Test func declaredLengthsBeyondTheLimitAreRejectedBeforeReading() {
        var bytes = Message.apiRequest(ApiRequest(requestId: 1, method: "m", body: Array(repeating: 1, count: 100))).encode()
        let limits = WireLimits(maxBodyBytes: 50)
        #expect(throws: WireError.limitExceeded(field: "apiRequest.body", value: 100, limit: 50)) {
            try bytes.withUnsafeBytes { try Message.decode($0, limits: limits) }
        }
        // A length field claiming 4 GiB in a tiny frame: refused by the limit, not by allocating.
        bytes.replaceSubrange(21..<25, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: WireError.self) { try bytes.withUnsafeBytes { try Message.decode($0) } }
    }

    @Test func shardPayloadMustMatchItsHeader() throws {
        let header = ShardHeader(job: 1, step: 1, kind: .gradient, encoding: .bf16, shard: 0, shardCount: 1,
                                 elementOffset: 0, elementCount: 10, sampleCount: 4)
        let envelope = Message.shard(header).encode()
        let good = [UInt8](repeating: 0, count: 20)
        let bad = [UInt8](repeating: 0, count: 40)
        let decoded = try envelope.withUnsafeBytes { e in try good.withUnsafeBytes { try Message.decode(frames: [e, $0]) } }
        #expect(decoded == .shard(header))
        let error = #expect(throws: WireError.self) {
            try envelope.withUnsafeBytes { e in try bad.withUnsafeBytes { try Message.decode(frames: [e, $0]) } }
        }
        #expect(error?.description.contains("40 bytes") == true)
        #expect(throws: WireError.frameCount(message: "shard", expected: 2, got: 1)) {
            try envelope.withUnsafeBytes { try Message.decode(frames: [$0]) }
        }
    }

    /// A shared-memory shard is its header alone, and carries fp32 only.
    @Test func aSharedShardHasNoPayloadFrameAndCarriesFP32() throws {
        var header = ShardHeader(job: 1, step: 1, kind: .gradient, encoding: .fp32, shard: 0, shardCount: 1,
                                 elementOffset: 0, elementCount: 10, sampleCount: 4)
        let envelope = Message.sharedShard(header).encode()
        #expect(try envelope.withUnsafeBytes { try Message.decode(frames: [$0]) } == .sharedShard(header))
        #expect(throws: WireError.frameCount(message: "sharedShard", expected: 1, got: 2)) {
            try envelope.withUnsafeBytes { e in try [UInt8](repeating: 0, count: 40).withUnsafeBytes { try Message.decode(frames: [e, $0]) } }
        }
        header.encoding = .bf16
        let bf16 = Message.sharedShard(header).encode()
        let error = #expect(throws: WireError.self) { try bf16.withUnsafeBytes { try Message.decode($0) } }
        #expect(error?.description.contains("sharedShard.encoding") == true, "\(String(describing: error))")
    }

    @Test func shardIndexMustBeBelowShardCount() {
        let header = ShardHeader(job: 1, step: 1, kind: .gradient, encoding: .fp32, shard: 5, shardCount: 5,
                                 elementOffset: 0, elementCount: 1, sampleCount: 1)
        let bytes = Message.shard(header).encode()
        #expect(throws: WireError.self) { try bytes.withUnsafeBytes { try Message.decode($0) } }
    }

    @Test func trailingBytesAreAnError() {
        let bytes = Message.heartbeat(Heartbeat(sequence: 1, sentAtNanos: 2)).encode() + [0]
        #expect(throws: WireError.trailingBytes(message: "heartbeat", count: 1)) {
            try bytes.withUnsafeBytes { try Message.decode($0) }
        }
    }

    @Test func invalidUTF8InAStringIsAnError() {
        var bytes = Message.apiRequest(ApiRequest(requestId: 1, method: "ab", body: [])).encode()
        bytes[20] = 0xFF
        #expect(throws: WireError.invalidValue(field: "apiRequest.method", reason: "is not valid UTF-8")) {
            try bytes.withUnsafeBytes { try Message.decode($0) }
        }
    }
}
