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
    /// Requests refused because the caller's role does not allow them (or its key was revoked).
    public let denied = Atomic<Int>(0)
    /// Gradient shards refused (stale, duplicate, wrong size or encoding, NaN/Inf): never applied.
    public let rejectedShards = Atomic<Int>(0)
    /// Control connections the coordinator maps to a worker: one per registered worker, however
    /// often workers reconnect (each reconnection is a new routing identity).
    public let workerConnections = Atomic<Int>(0)
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
    /// The ipc data endpoint for workers on this host (no CURVE: see `ipcSessions`).
    let ipcData: Socket?
    /// ipc routing identity (a session id handed out in a CURVE-authenticated registration) →
    /// the worker it names.
    var ipcSessions: [[UInt8]: Principal] = [:]
    let zap: ZAPHandler?
    let publicKey: CurveKey?
    var monitors: [(name: String, monitor: SocketMonitor)] = []
    var tallies: [ConnectionTally] = []
    /// Control-socket routing identity → worker, learned at registration.
    var workerByIdentity: [[UInt8]: Worker.ID] = [:]
    /// User-Id (CURVE key) → who it is; dropped on enrolment and revocation.
    var principalCache: [String: Caller] = [:]
    /// Worker name → its control connection's routing identity.
    var controlIdentity: [String: [UInt8]] = [:]
    /// Site endpoints workers registered with (`--site-listen`), by worker name.
    var siteEndpoints: [String: String] = [:]
    /// Running jobs' runs, and the training state of jobs between runs.
    var runs: [Job.ID: JobRun] = [:]
    var suspended: [Job.ID: JobRun.TrainingState] = [:]
    /// Jobs whose run ended in this process: their late shards are dropped without an event.
    var endedRuns: Set<Job.ID> = []
    var rejectionLogged: Set<String> = []
    /// `resync`s per "JOB/MEMBER" in this process: each restarts the job's run, so a member gets
    /// `maxResyncs` (a worker that keeps losing its copy is broken, or hostile).
    var resyncs: [String: Int] = [:]
    static let maxResyncs = 3
    /// When an `access.denied` event was last recorded for a principal and method.
    var deniedRecorded: [String: Date] = [:]
    var lastProgressWrite: [Job.ID: Int] = [:]
    var lastProgressAt = Date()
    var keepCheckpoints: Int { settings.keepCheckpoints }
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
        // I/O thread 0 for the api and control endpoints, the others for data connections:
        // libzmq gives a connection to the thread with the fewest, counting every kind, so
        // without this a worker's control and data connections would alternate and every data
        // connection could land on one thread.
        let range = CoordinatorSettings.ioThreadRange
        guard range.contains(settings.ioThreads) else {
            throw TransportError.misconfigured("io-threads must be from \(range.lowerBound) to \(range.upperBound), got \(settings.ioThreads)")
        }
        context = try Context(ioThreads: 1 + settings.ioThreads)
        let dataThreads = 1..<(1 + settings.ioThreads)
        api = try Socket(context, .router)
        control = try Socket(context, .router)
        data = try Socket(context, .router)
        try api.setIOThreadAffinity(0..<1)
        try control.setIOThreadAffinity(0..<1)
        try data.setIOThreadAffinity(dataThreads)
        if settings.plaintext {
            zap = nil
            publicKey = nil
            logger.warning("CURVE is off (--plaintext): anyone who can reach these ports can read and send everything")
        } else {
            let keys = try Self.loadOrCreateKey(settings.keyPath, logger: logger)
            try Self.bootstrapAdmin(settings, store: store, logger: logger)
            let handler = try ZAPHandler(context: context, authenticator: StoreAuthenticator(store: store))
            for socket in [api, control, data] { try socket.makeCurveServer(keys: keys, zap: handler) }
            zap = handler
            publicKey = keys.publicKey
        }
        for socket in [api, control] {
            try socket.setMaxMessageSize(settings.maxMessageBytes)
            try socket.setRouterMandatory(true)
        }
        try data.setHighWaterMarks(send: 0, receive: 0)
        if settings.ipc {
            let dir = settings.dataDirectory + "/ipc"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            chmod(dir, 0o700) // only the coordinator's user may open what is inside
            unlink(dir + "/data") // a stale socket file from a killed coordinator
            // Shared-memory segments a killed coordinator (of this data directory) left behind.
            let prefix = settings.sharedMemoryNamePrefix
            for name in (try? FileManager.default.contentsOfDirectory(atPath: SharedSegment.directory)) ?? [] where name.hasPrefix(prefix) {
                unlink(SharedSegment.directory + "/" + name)
            }
            let s = try Socket(context, .router)
            try s.setIOThreadAffinity(dataThreads)
            try s.setHighWaterMarks(send: 0, receive: 0)
            try s.setMaxMessageSize(256 << 20)
            // A worker names its ipc connection by its session id; when a run restarts it opens a
            // new data connection under the same id, maybe before this end saw the old one close.
            try s.setRouterHandover(true)
            try s.bind(settings.ipcDataEndpoint)
            ipcData = s
        } else {
            ipcData = nil
        }
        monitors = [("api", try SocketMonitor(api)), ("control", try SocketMonitor(control)), ("data", try SocketMonitor(data))]
        tallies = Array(repeating: ConnectionTally(), count: monitors.count)
        try api.bind(settings.apiEndpoint)
        try control.bind(settings.controlEndpoint)
        try data.bind(settings.dataEndpoint)
        // Workers known from before a restart get a full liveness window to heartbeat again.
        for w in try store.workers() where w.state == .idle || w.state == .busy { lastSeen[w.id] = startedAt }
        // A job that was running lost its run with the old process: it waits for its workers to
        // come back, and continues from its last checkpoint when placed again.
        for job in try store.jobs(state: .running, limit: 100_000) {
            try store.transition(job.id, to: .waiting, reason: "the coordinator restarted; resuming from the last checkpoint when workers return",
                                 actor: "coordinator")
        }
    }

    /// On first start: the first admin's key pair at DATA_DIR/admin.key (0600), registered as
    /// principal `admin`. Only the path is printed; the secret never leaves the file.
    static func bootstrapAdmin(_ settings: CoordinatorSettings, store: Store, logger: Logger) throws {
        guard try !store.principals().contains(where: { $0.role == .admin && $0.revokedAt == nil }) else { return }
        let path = settings.dataDirectory + "/admin.key"
        let keys = FileManager.default.fileExists(atPath: path) ? try CurveKeyPair.load(from: path) : try {
            let k = try CurveKeyPair.generate()
            try k.save(to: path)
            return k
        }()
        if try store.principal(publicKey: keys.publicKey.z85) == nil {
            try store.addPrincipal(name: "admin", institution: "coordinator", role: .admin, publicKey: keys.publicKey.z85, actor: "coordinator")
        }
        logger.notice("first admin key written; use it with `cohort --key PATH …` on this host", metadata: ["path": "\(path)"])
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
        let dataIndex = poller.add(data)
        let ipcIndex = ipcData.map { poller.add($0) } ?? -1
        let monitorIndices = monitors.map { poller.add($0.monitor.socket) }
        var nextTick = Date()
        while !shouldStop() {
            let wait = max(0, Int(nextTick.timeIntervalSinceNow * 1000))
            let ready = (try? poller.poll(timeoutMilliseconds: min(wait, 100))) ?? []
            if ready.contains(apiIndex) { drain(api, handleApi) }
            if ready.contains(controlIndex) { drain(control, handleControl) }
            if ready.contains(dataIndex) { drain(data, handleData, limit: 4096) }
            if ready.contains(ipcIndex), let ipcData { drain(ipcData, handleData, limit: 4096) }
            if !runs.isEmpty { checkDeadlines(now: Date()) }
            for (i, index) in monitorIndices.enumerated() where ready.contains(index) { drainMonitor(i) }
            if Date() >= nextTick {
                tick(now: Date())
                nextTick = Date().addingTimeInterval(Double(settings.tickMilliseconds) / 1000)
            }
        }
        flushHeartbeats()
        checkpointOnStop()
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

    // MARK: - Callers

    /// Who sent `frame`: from its User-Id (the CURVE key) and the current database, so that an
    /// enrolment or a revocation applies to connections that are already open.
    func caller(of frame: InboundFrame, identity: [UInt8]? = nil, ipc: Bool = false) -> Caller {
        if ipc {
            guard let identity, let p = ipcSessions[identity] else { return .enrollee(publicKey: "ipc") }
            return caller(publicKey: p.publicKey)
        }
        guard !settings.plaintext else { return .plaintext }
        guard let key = frame.property("User-Id") else { return .enrollee(publicKey: "?") }
        return caller(publicKey: key)
    }

    static let principalCacheLimit = 4096

    func caller(publicKey key: String) -> Caller {
        if let cached = principalCache[key] { return cached }
        let caller: Caller
        if let p = try? store.principal(publicKey: key) {
            caller = p.revokedAt == nil ? .principal(p) : .revoked(p)
        } else {
            caller = .enrollee(publicKey: key)
        }
        // Anyone may connect with a fresh key (to enrol): strangers are cached too (one lookup
        // per key, not per frame), but the cache starts over once it holds `principalCacheLimit`
        // keys, so that a stream of new keys cannot grow it without end.
        if principalCache.count >= Self.principalCacheLimit { principalCache = [:] }
        principalCache[key] = caller
        return caller
    }

    /// Refuses a request the caller may not make: counted, answered, and (for known principals,
    /// not strangers, who must not be able to grow the database) recorded as an event, at most
    /// once a minute per principal and method, so that a loop of denied requests cannot either.
    func deny(_ socket: Socket, _ identity: [UInt8], _ request: ApiRequest?, _ caller: Caller, _ text: String) {
        stats.denied.add(1, ordering: .relaxed)
        switch caller {
        case .principal, .revoked:
            let key = caller.name + "\u{1F}" + (request?.method ?? "message"), now = Date()
            if deniedRecorded.count > 10_000 { deniedRecorded.removeAll() }
            if now.timeIntervalSince(deniedRecorded[key] ?? .distantPast) >= 60 {
                deniedRecorded[key] = now
                try? store.recordEvent(actor: caller.name, kind: "access.denied", detail: request?.method ?? "message")
            }
        default:
            break
        }
        logger.info("request denied", metadata: ["caller": "\(caller.name)", "method": "\(request?.method ?? "-")"])
        if let request {
            fail(socket, identity, request, caller.role == nil ? .unauthorized : .forbidden, text)
        } else {
            send(socket, to: identity, .error(ErrorMessage(code: .forbidden, message: text)))
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

