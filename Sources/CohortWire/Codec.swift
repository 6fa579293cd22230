extension Message {
    /// The envelope frame: header plus this message's fields. Payload frames are the caller's.
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.u32(Envelope.magic)
        w.u16(Envelope.version)
        w.u16(type.rawValue)
        switch self {
        case let .apiRequest(r):
            w.u64(r.requestId)
            w.string(r.method)
            w.blob(r.body)
        case let .apiReply(r):
            w.u64(r.requestId)
            w.u16(r.status.rawValue)
            w.blob(r.body)
        case let .heartbeat(h):
            w.u64(h.sequence)
            w.u64(h.sentAtNanos)
        case let .notice(n):
            w.string(n.kind)
            w.blob(n.body)
        case let .shard(s), let .sharedShard(s):
            w.u64(s.job)
            w.u64(s.step)
            w.u8(s.kind.rawValue)
            w.u8(s.encoding.rawValue)
            w.u32(s.shard)
            w.u32(s.shardCount)
            w.u64(s.elementOffset)
            w.u32(s.elementCount)
            w.u32(s.sampleCount)
        case let .error(e):
            w.u16(e.code.rawValue)
            w.string(e.message)
        }
        return w.bytes
    }

    /// Decodes an envelope frame. Every length and count is checked against the bytes present
    /// and against `limits`; any problem is a `WireError`, never a trap.
    public static func decode(_ frame: UnsafeRawBufferPointer, limits: WireLimits = .default) throws(WireError) -> Message {
        var r = ByteReader(frame, limits: limits)
        let magic = try r.u32("envelope.magic")
        guard magic == Envelope.magic else { throw .badMagic(found: magic) }
        let version = try r.u16("envelope.version")
        guard version == Envelope.version else { throw .versionMismatch(peer: version, ours: Envelope.version) }
        let rawType = try r.u16("envelope.type")
        guard let type = MessageType(rawValue: rawType) else { throw .unknownMessageType(rawType) }

        let message: Message
        switch type {
        case .apiRequest:
            let id = try r.u64("apiRequest.requestId")
            let method = try r.string("apiRequest.method")
            let body = try r.blob("apiRequest.body", limit: limits.maxBodyBytes)
            message = .apiRequest(ApiRequest(requestId: id, method: method, body: body))
        case .apiReply:
            let id = try r.u64("apiReply.requestId")
            let rawStatus = try r.u16("apiReply.status")
            guard let status = ApiReply.Status(rawValue: rawStatus) else {
                throw .invalidValue(field: "apiReply.status", reason: "has unknown value \(rawStatus)")
            }
            let body = try r.blob("apiReply.body", limit: limits.maxBodyBytes)
            message = .apiReply(ApiReply(requestId: id, status: status, body: body))
        case .heartbeat:
            message = .heartbeat(Heartbeat(sequence: try r.u64("heartbeat.sequence"),
                                           sentAtNanos: try r.u64("heartbeat.sentAtNanos")))
        case .notice:
            let kind = try r.string("notice.kind")
            message = .notice(Notice(kind: kind, body: try r.blob("notice.body", limit: limits.maxBodyBytes)))
        case .shard:
            message = .shard(try decodeShard(&r, limits: limits))
        case .sharedShard:
            let header = try decodeShard(&r, limits: limits)
            guard header.encoding == .fp32 else {
                throw .invalidValue(field: "sharedShard.encoding", reason: "is \(header.encoding); shared memory carries fp32")
            }
            message = .sharedShard(header)
        case .error:
            let rawCode = try r.u16("error.code")
            guard let code = ErrorMessage.Code(rawValue: rawCode) else {
                throw .invalidValue(field: "error.code", reason: "has unknown value \(rawCode)")
            }
            message = .error(ErrorMessage(code: code, message: try r.string("error.message")))
        }
        try r.expectEnd("\(type)")
        return message
    }

    private static func decodeShard(_ r: inout ByteReader, limits: WireLimits) throws(WireError) -> ShardHeader {
        let job = try r.u64("shard.job")
        let step = try r.u64("shard.step")
        let rawKind = try r.u8("shard.kind")
        guard let kind = ShardKind(rawValue: rawKind) else {
            throw .invalidValue(field: "shard.kind", reason: "has unknown value \(rawKind)")
        }
        let rawEncoding = try r.u8("shard.encoding")
        guard let encoding = ShardEncoding(rawValue: rawEncoding) else {
            throw .invalidValue(field: "shard.encoding", reason: "has unknown value \(rawEncoding)")
        }
        let shard = try r.u32("shard.shard")
        let shardCount = try r.u32("shard.shardCount")
        guard shardCount >= 1, Int(shardCount) <= limits.maxShardCount else {
            throw .limitExceeded(field: "shard.shardCount", value: Int(shardCount), limit: limits.maxShardCount)
        }
        guard shard < shardCount else {
            throw .invalidValue(field: "shard.shard", reason: "is \(shard), not below shardCount \(shardCount)")
        }
        let offset = try r.u64("shard.elementOffset")
        let count = try r.u32("shard.elementCount")
        guard Int(count) <= limits.maxShardElements else {
            throw .limitExceeded(field: "shard.elementCount", value: Int(count), limit: limits.maxShardElements)
        }
        guard offset <= UInt64(Int.max / 8) else {
            throw .invalidValue(field: "shard.elementOffset", reason: "is \(offset), beyond any buffer")
        }
        let samples = try r.u32("shard.sampleCount")
        return ShardHeader(job: job, step: step, kind: kind, encoding: encoding, shard: shard,
                           shardCount: shardCount, elementOffset: offset, elementCount: count,
                           sampleCount: samples)
    }

    /// Decodes a whole multipart message: the envelope frame, then checks that exactly the
    /// payload frames the message needs arrived, with the right sizes.
    public static func decode(frames: [UnsafeRawBufferPointer], limits: WireLimits = .default) throws(WireError) -> Message {
        guard let first = frames.first else { throw .frameCount(message: "any", expected: 1, got: 0) }
        let message = try decode(first, limits: limits)
        let expected = 1 + message.payloadFrameCount
        guard frames.count == expected else {
            throw .frameCount(message: "\(message.type)", expected: expected, got: frames.count)
        }
        if case let .shard(header) = message {
            try header.validatePayload(byteCount: frames[1].count)
        }
        return message
    }
}
