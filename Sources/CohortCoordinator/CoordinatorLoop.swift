import CohortStore
import CohortTransport
import CohortWire
import Foundation
import Logging
import Synchronization

/// Counters the coordinator keeps while it runs (exposed in logs and, later, metrics).
public final class CoordinatorStats: Sendable {
    public let requests = Atomic<Int>(0)
    public let malformed = Atomic<Int>(0)
    public let heartbeats = Atomic<Int>(0)
    /// Connections libzmq dropped in the handshake: garbage bytes, wrong protocol, refused keys.
    public let droppedConnections = Atomic<Int>(0)
    public init() {}
}

/// The thread that owns the coordinator's sockets: it polls the api and control endpoints,
/// answers each request from the store, and runs liveness and scheduling on every tick.
/// Everything it decides comes from the pure `Scheduler` and `Registry`.
final class CoordinatorLoop {
    let settings: CoordinatorSettings
    let store: Store
    let logger: Logger
    let stats: CoordinatorStats
    let context: Context
    let api: Socket
    let control: Socket
    let data: Socket
    let zap: ZAPHandler?
    let publicKey: CurveKey?
    var monitors: [(name: String, monitor: SocketMonitor)] = []
    var tallies: [ConnectionTally] = []
    /// Control-socket routing identity → worker, learned at registration.
    var workerByIdentity: [[UInt8]: Worker.ID] = [:]
    /// Heartbeats are kept here and written to the database once per tick, so a thousand
    /// workers cost one transaction a tick, not a thousand fsyncs a second.
    var lastSeen: [Worker.ID: Date] = [:]
    var dirtyHeartbeats: Set<Worker.ID> = []
    /// Set when workers come, go or are freed: the next tick runs a full scheduling pass.
    var workersChanged = true
    let startedAt = Date()

    init(settings: CoordinatorSettings, store: Store, logger: Logger, stats: CoordinatorStats) throws {
        self.settings = settings
        self.store = store
        self.logger = logger
        self.stats = stats
        context = try Context()
        api = try Socket(context, .router)
        control = try Socket(context, .router)
        data = try Socket(context, .router)
        if settings.plaintext {
            zap = nil
            publicKey = nil
            logger.warning("CURVE is off (--plaintext): anyone who can reach these ports can read and send everything")
        } else {
            let keys = try Self.loadOrCreateKey(settings.keyPath, logger: logger)
            let handler = try ZAPHandler(context: context, authenticator: AdmitKnownCurveKeys())
            for socket in [api, control, data] { try socket.makeCurveServer(keys: keys, zap: handler) }
            zap = handler
            publicKey = keys.publicKey
        }
        for socket in [api, control] {
            try socket.setMaxMessageSize(settings.maxMessageBytes)
            try socket.setRouterMandatory(true)
        }
        try data.setHighWaterMarks(send: 0, receive: 0)
        monitors = [("api", try SocketMonitor(api)), ("control", try SocketMonitor(control)), ("data", try SocketMonitor(data))]
        tallies = Array(repeating: ConnectionTally(), count: monitors.count)
        try api.bind(settings.apiEndpoint)
        try control.bind(settings.controlEndpoint)
        try data.bind(settings.dataEndpoint)
        // Workers known from before a restart get a full liveness window to heartbeat again.
        for w in try store.workers() where w.state == .idle || w.state == .busy { lastSeen[w.id] = startedAt }
    }

    static func loadOrCreateKey(_ path: String, logger: Logger) throws -> CurveKeyPair {
        if FileManager.default.fileExists(atPath: path) { return try CurveKeyPair.load(from: path) }
        let keys = try CurveKeyPair.generate()
        try keys.save(to: path)
        logger.notice("created the coordinator's key pair", metadata: ["path": "\(path)", "public-key": "\(keys.publicKey.z85)"])
        return keys
    }

    /// Serves until `shouldStop` turns true.
    func run(shouldStop: () -> Bool) {
        let poller = Poller()
        let apiIndex = poller.add(api)
        let controlIndex = poller.add(control)
        let monitorIndices = monitors.map { poller.add($0.monitor.socket) }
        var nextTick = Date()
        while !shouldStop() {
            let wait = max(0, Int(nextTick.timeIntervalSinceNow * 1000))
            let ready = (try? poller.poll(timeoutMilliseconds: min(wait, 100))) ?? []
            if ready.contains(apiIndex) { drain(api, handleApi) }
            if ready.contains(controlIndex) { drain(control, handleControl) }
            for (i, index) in monitorIndices.enumerated() where ready.contains(index) { drainMonitor(i) }
            if Date() >= nextTick {
                tick(now: Date())
                nextTick = Date().addingTimeInterval(Double(settings.tickMilliseconds) / 1000)
            }
        }
        flushHeartbeats()
        zap?.stop()
    }

    func drainControl() { drain(control, handleControl, limit: 100_000) }

    /// Handles every message waiting on `socket` (bounded, so one endpoint cannot starve another).
    private func drain(_ socket: Socket, _ handle: (Socket, [InboundFrame]) throws -> Void, limit: Int = 256) {
        for _ in 0..<limit {
            let frames: [InboundFrame]
            do { frames = try socket.receive(dontWait: true, maxFrames: 4) } catch .wouldBlock { return } catch {
                stats.malformed.add(1, ordering: .relaxed)
                logger.warning("refused a message", metadata: ["error": "\(error)"])
                continue
            }
            do { try handle(socket, frames) } catch {
                logger.error("could not answer a request", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Counts connections that libzmq dropped before a message reached us.
    private func drainMonitor(_ i: Int) {
        while let event = monitors[i].monitor.next() {
            let before = tallies[i].dropped
            tallies[i].record(event)
            if tallies[i].dropped > before {
                stats.droppedConnections.add(tallies[i].dropped - before, ordering: .relaxed)
                logger.info("dropped a connection before its handshake completed",
                            metadata: ["endpoint": "\(monitors[i].name)", "event": "\(event)"])
            }
        }
    }

    // MARK: - Replies

    func decode(_ frames: [InboundFrame]) throws(WireError) -> Message {
        guard frames.count >= 2 else { throw .frameCount(message: "routed", expected: 2, got: frames.count) }
        return try withExtendedLifetime(frames) { () throws(WireError) -> Message in
            try Message.decode(frames: frames.dropFirst().map(\.unsafeBytes))
        }
    }

    func send(_ socket: Socket, to identity: [UInt8], _ message: Message) {
        do { try socket.send([.bytes(identity), .bytes(message.encode())]) } catch {
            logger.info("reply not delivered", metadata: ["error": "\(error)"]) // the peer left
        }
    }

    func refuseMalformed(_ socket: Socket, _ identity: [UInt8], _ error: WireError) {
        stats.malformed.add(1, ordering: .relaxed)
        let code: ErrorMessage.Code = if case .versionMismatch = error { .versionMismatch } else { .malformed }
        send(socket, to: identity, .error(ErrorMessage(code: code, message: error.description)))
    }

    func reply(_ socket: Socket, _ identity: [UInt8], _ request: ApiRequest, _ body: some Encodable) {
        do { send(socket, to: identity, .apiReply(try ApiReply(requestId: request.requestId, json: body))) } catch {
            fail(socket, identity, request, .internalError, "could not encode the reply: \(error)")
        }
    }

    func fail(_ socket: Socket, _ identity: [UInt8], _ request: ApiRequest, _ status: ApiReply.Status, _ text: String) {
        let body = (try? JSONEncoder().encode(ApiErrorBody(error: text))).map(Array.init) ?? []
        send(socket, to: identity, .apiReply(ApiReply(requestId: request.requestId, status: status, body: body)))
    }
}

/// Until the security issue's key table lands: every CURVE key is admitted, and named by its
/// first characters so that each client has a stable principal.
struct AdmitKnownCurveKeys: Authenticator {
    func authenticate(_ request: ZAPRequest) -> ZAPDecision {
        guard request.mechanism == "CURVE", let key = request.publicKey else { return .reject(reason: "CURVE required") }
        return .accept(userId: "key:" + key.z85.prefix(10), metadata: ["Role": "admin"])
    }
}
