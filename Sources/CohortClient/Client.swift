import CohortTransport
import CohortWire
import Foundation

/// How a client proves who it is to the coordinator.
public enum Credentials: Sendable {
    /// CURVE with the caller's key pair, pinned to the coordinator's public key.
    case curve(keys: CurveKeyPair, serverKey: CurveKey)
    /// No encryption (only with an explicit flag on both sides).
    case plaintext
}

/// The one error type of CohortClient: what went wrong talking to the coordinator.
public enum ClientError: Error, Sendable, CustomStringConvertible {
    /// No answer within the time-out: not running, wrong address, firewalled, or a wrong key.
    case unreachable(address: String, seconds: Double)
    /// The coordinator answered with an error.
    case refused(status: ApiReply.Status, message: String)
    /// The coordinator refused the message itself (malformed, other protocol version).
    case rejected(String)
    /// The reply could not be understood.
    case badReply(String)
    /// The coordinator refused this key in the CURVE handshake: revoked (a key it has never
    /// seen is let in, to enrol).
    case keyRefused(address: String, code: Int)
    case transport(TransportError)

    public var description: String {
        switch self {
        case let .unreachable(address, seconds):
            return "the coordinator at \(address) did not answer within \(String(format: "%g", seconds)) s: "
                + "is it running, are --coordinator (COHORT_COORDINATOR) and its public key right, "
                + "and is this key still enrolled?"
        case let .refused(_, message): return message
        case let .rejected(message): return "the coordinator refused the request: \(message)"
        case let .badReply(message): return "unexpected reply from the coordinator: \(message)"
        case let .keyRefused(address, code):
            return "the coordinator at \(address) refused this key in the handshake (status \(code)): it was revoked there; "
                + "use another key (--key, COHORT_KEY), or ask an admin to enrol a new one"
        case let .transport(error): return error.description
        }
    }

    /// The process exit code for this error (docs/cli.md): 2 bad request, 3 not found,
    /// 4 conflict, 5 unreachable, 6 forbidden, 1 anything else.
    public var exitCode: Int32 {
        switch self {
        case .unreachable: return 5
        case .keyRefused: return 6
        case let .refused(status, _):
            switch status {
            case .badRequest: return 2
            case .notFound: return 3
            case .conflict: return 4
            case .unauthorized, .forbidden: return 6
            default: return 1
            }
        default: return 1
        }
    }
}

/// A connection to a coordinator's api endpoint. Not `Sendable`: it owns a socket; use it from
/// one thread. Every call either returns the reply or throws within `timeout`.
public final class Client {
    public let address: CoordinatorAddress
    public let timeout: Double
    private let socket: Socket
    /// Reports a handshake the coordinator refused (CURVE only), which otherwise looks like
    /// silence: libzmq keeps reconnecting and the request waits out its time-out.
    private let monitor: SocketMonitor?
    private var nextRequestId: UInt64 = 1

    public init(address: CoordinatorAddress, credentials: Credentials, timeout: Double = 5,
                context: Context? = nil) throws(ClientError) {
        self.address = address
        self.timeout = timeout
        do throws(TransportError) {
            let ctx: Context
            if let context { ctx = context } else { ctx = try Context() }
            socket = try Socket(ctx, .dealer)
            try socket.setLinger(milliseconds: 0)
            try socket.setMaxMessageSize(64 << 20)
            if case let .curve(keys, serverKey) = credentials {
                try socket.makeCurveClient(keys: keys, serverKey: serverKey)
                monitor = try SocketMonitor(socket)
            } else {
                monitor = nil
            }
            try socket.connect(address.endpoints.api)
        } catch {
            throw .transport(error)
        }
    }

    /// Sends `method` with a JSON body and decodes the reply as `Reply`.
    public func call<Reply: Decodable>(_ method: String, _ body: some Encodable, as: Reply.Type) throws(ClientError) -> Reply {
        let reply = try roundTrip(method, body)
        do { return try reply.decodeBody(as: Reply.self) } catch {
            throw .badReply("`\(method)` reply is not a \(Reply.self): \(error)")
        }
    }

    /// The raw reply body of a successful call (for `--json` output).
    public func callRaw(_ method: String, _ body: some Encodable) throws(ClientError) -> [UInt8] {
        try roundTrip(method, body).body
    }

    private func roundTrip(_ method: String, _ body: some Encodable) throws(ClientError) -> ApiReply {
        let id = nextRequestId
        nextRequestId += 1
        let request: ApiRequest
        do { request = try ApiRequest(requestId: id, method: method, json: body) } catch {
            throw .badReply("could not encode the request: \(error)")
        }
        let deadline = Date().addingTimeInterval(timeout)
        do {
            try socket.send(Message.apiRequest(request).encode(), dontWait: true)
        } catch .wouldBlock {
            throw .unreachable(address: address.description, seconds: timeout)
        } catch {
            throw .transport(error)
        }
        let poller = Poller()
        let replies = poller.add(socket)
        let events = monitor.map { poller.add($0.socket) }
        while true {
            let left = Int(deadline.timeIntervalSinceNow * 1000)
            guard left > 0 else { throw .unreachable(address: address.description, seconds: timeout) }
            let ready: [Int]
            do { ready = try poller.poll(timeoutMilliseconds: left) } catch { throw .transport(error) }
            if let events, ready.contains(events), let code = monitor?.keyRefusal() {
                throw .keyRefused(address: address.description, code: code)
            }
            if !ready.contains(replies) { continue }
            let frames: [InboundFrame]
            do { frames = try socket.receive(dontWait: true, maxFrames: 4) } catch .wouldBlock { continue } catch {
                throw .transport(error)
            }
            let message: Message
            do {
                message = try withExtendedLifetime(frames) { () throws(WireError) -> Message in
                    try Message.decode(frames: frames.map(\.unsafeBytes), limits: WireLimits(maxBodyBytes: 64 << 20))
                }
            } catch {
                throw .badReply(error.description)
            }
            switch message {
            case let .apiReply(reply) where reply.requestId == id:
                guard reply.status == .ok else {
                    let text = (try? reply.decodeBody(as: ApiErrorBody.self).error) ?? "error \(reply.status)"
                    throw .refused(status: reply.status, message: text)
                }
                return reply
            case .apiReply:
                continue // a late reply to an earlier request
            case let .error(e):
                throw .rejected(e.message)
            default:
                throw .badReply("a \(message.type) message on the api endpoint")
            }
        }
    }
}

/// Typed calls for each api method.
extension Client {
    public func hello() throws(ClientError) -> HelloReply {
        try call(ApiMethod.hello, [String: String](), as: HelloReply.self)
    }

    public func submit(spec: String, requestId: String) throws(ClientError) -> SubmitReply {
        try call(ApiMethod.submit, SubmitRequest(spec: spec, requestId: requestId), as: SubmitReply.self)
    }

    public func jobs(state: String? = nil, limit: Int? = nil) throws(ClientError) -> [JobView] {
        try call(ApiMethod.jobs, JobsRequest(state: state, limit: limit), as: JobsReply.self).jobs
    }

    public func status(job: Int64) throws(ClientError) -> StatusReply {
        try call(ApiMethod.status, JobRequest(job: job), as: StatusReply.self)
    }

    public func cancel(job: Int64) throws(ClientError) -> JobView {
        try call(ApiMethod.cancel, JobRequest(job: job), as: JobView.self)
    }

    public func resume(job: Int64) throws(ClientError) -> JobView {
        try call(ApiMethod.resume, JobRequest(job: job), as: JobView.self)
    }

    /// Streams the job's latest checkpoint to `write`, `chunk` bytes per request; returns the size.
    /// One checkpoint, whole: the first chunk's safetensors header names its step, and every
    /// later chunk asks for that step, so a checkpoint written meanwhile cannot splice into it
    /// (the coordinator answers notFound if the pinned one was pruned).
    public func download(job: Int64, chunk: Int = 4 << 20, write: ([UInt8]) throws -> Void) throws -> Int {
        var offset = 0
        var step: Int?
        while true {
            let bytes = try callRaw(ApiMethod.download, DownloadRequest(job: job, offset: offset, length: chunk, step: step))
            if offset == 0 { step = Self.checkpointStep(header: bytes) }
            try write(bytes)
            offset += bytes.count
            if bytes.count < chunk { return offset }
        }
    }

    /// The `cohort.step` in a safetensors file's header (8-byte little-endian length, then
    /// JSON with `__metadata__`), when `bytes` holds the whole header.
    static func checkpointStep(header bytes: [UInt8]) -> Int? {
        guard bytes.count >= 8 else { return nil }
        let length = bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length <= UInt64(bytes.count - 8),
              let json = try? JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + Int(length))])) as? [String: Any],
              let metadata = json["__metadata__"] as? [String: String] else { return nil }
        return metadata["cohort.step"].flatMap { Int($0) }
    }

    public func workers() throws(ClientError) -> [WorkerView] {
        try call(ApiMethod.workers, [String: String](), as: WorkersReply.self).workers
    }

    public func events(job: Int64? = nil, after: Int64? = nil, limit: Int? = nil) throws(ClientError) -> [EventView] {
        try call(ApiMethod.events, EventsRequest(job: job, after: after, limit: limit), as: EventsReply.self).events
    }
}
