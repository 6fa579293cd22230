import CohortCompute
import CohortSpec
import CohortTransport
import CohortWire
import Foundation
import Logging

/// What a worker daemon is started with (`cohort worker`).
public struct WorkerSettings: Sendable {
    public var address: CoordinatorAddress
    public var keys: CurveKeyPair
    public var serverKey: CurveKey
    public var dataRoot: URL
    public var name: String
    public var threads: Int
    public var cores: Int
    public var memoryBytes: Int64
    /// HOST:PORT inside the site where this worker, as its institution's delegate, takes the
    /// other members' contributions (`--site-listen`); nil: it never acts as a delegate.
    public var siteListen: String?

    public init(address: CoordinatorAddress, keys: CurveKeyPair, serverKey: CurveKey, dataRoot: URL, name: String,
                threads: Int, cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                memoryBytes: Int64 = Int64(ProcessInfo.processInfo.physicalMemory), siteListen: String? = nil) {
        self.siteListen = siteListen
        self.address = address
        self.keys = keys
        self.serverKey = serverKey
        self.dataRoot = dataRoot
        self.name = name
        self.threads = threads
        self.cores = cores
        self.memoryBytes = memoryBytes
    }
}

/// The worker daemon's loop, on one thread that owns its sockets: register, heartbeat, take an
/// assignment, load the data and build the model, then for each step receive the parameters
/// shard by shard (each released as soon as it is copied), compute the gradient of its slice of
/// the global batch and send it as shards, zero-copy from the gradient buffer.
public final class WorkerAgent {
    let settings: WorkerSettings
    let logger: Logger
    let context: Context
    let control: Socket
    /// The control socket's handshakes: a refusal (this worker's key was revoked) would
    /// otherwise look like a coordinator that never answers.
    private let controlEvents: SocketMonitor
    /// The status the coordinator refused this worker's key with in the handshake; `run`
    /// returns when it is set.
    public private(set) var keyRefusedStatus: Int?
    var heartbeatInterval: Double = 1
    var nextHeartbeat = Date()
    var sequence: UInt64 = 0
    var registered = false
    /// Smoothed heartbeat round trip to the coordinator, ms (reported with progress).
    var rttMs: Double?
    /// When anything last came from the coordinator, and when silence was last reported: an
    /// unreachable coordinator (down, a wrong address, a wrong pinned key, a revoked key that
    /// its ZAP refuses) is said plainly, every minute, while the worker keeps trying.
    private var lastHeard = Date()
    private var lastSilenceReport: Date?
    /// The ipc data endpoint and session id the coordinator offered (this host only).
    var ipc: (endpoint: String, session: [UInt8])?
    var current: ActiveJob?
    /// Bytes this worker sent (every frame, envelopes included) for its current job (kept when
    /// the same job is assigned again after a restart).
    var bytesSent = 0
    var bytesSentJob: Int64?
    /// Set by `run`: SIGTERM, also checked between inner steps.
    var stopRequested: () -> Bool = { false }
    /// The site endpoint (CURVE, admitting only the current job's site members) and its ZAP
    /// handler, when started with `--site-listen`.
    let site: Socket?
    let siteZAP: ZAPHandler?
    let siteAllowList = SiteAllowList()

    /// A job this worker is training.
    final class ActiveJob {
        let assignment: TrainingNotice.Assignment
        let spec: JobSpec
        let model: Model
        let train: Dataset
        let test: Dataset
        let sampler: Sampler
        let data: Socket
        /// How contributions go up and what comes down (`training.shard-encoding`, `downlink-encoding`).
        let uplink: ShardCodec
        let downlink: ShardCodec
        /// What lossy encoding dropped so far, added to the next send (lossy uplinks only).
        let feedback: ErrorFeedback?
        /// Slots the encoded shards go out from, zero-copy: two with `overlap` (a round's shards
        /// may still be on the wire while the next round is encoded), else one.
        let outbox: [EncodedShards]
        /// `mode: local`: the inner optimizer and its state (kept across rounds, started afresh
        /// when the worker (re)joins).
        let inner: (optimizer: Optimizer, state: FlatBuffer)?
        /// The parameters as the coordinator keeps them for the workers (θ̃): the full
        /// parameters land here, lossy downlink differences are added to it. In `sync` mode it
        /// is the model's own parameter buffer (training never changes it between rounds).
        let replica: FlatBuffer
        /// Whether parameters are copied into `replica` bypassing the cache (`ReplicaCopy`).
        var streamsReplica: Bool { ReplicaCopy.streams(parameterCount: replica.count) }
        /// `local` mode: the parameters at the start of the round, then the round's delta.
        let delta: FlatBuffer?
        /// `reduction: institution` (this worker's part is `assignment.site`): as the delegate,
        /// the site members' data connections (by name) and the sum of the site's rounds.
        var siteIdentity: [String: [UInt8]] = [:]
        let reducer: SiteReducer?
        /// The delegate says it is ready once every site member has attached.
        var pendingReady: TrainingNotice.Ready?
        /// A site member: whether its delegate acknowledged the attach, and when it last tried.
        var siteAcknowledged = false
        var attachedAt = Date()
        /// The last round whose delta was sent (`overlap`: it is in `delta` until the update
        /// it overlapped arrives).
        var lastSent: Int?
        var innerSteps = 0
        var receivedStep = -1
        /// `sync` mode: the next step's slice of the global batch, gathered right after this
        /// step's contribution went out, while the worker waits for the new parameters (the
        /// gather reads rows scattered over the whole training set and is not free).
        var prefetched: (step: Int, batch: Batch)?
        /// The parameter shards of `receivedStep` in the replica: each counted once, so a shard
        /// that comes twice (sent again when a run restarts mid-step) cannot stand in for one
        /// that has not come yet. Each copy is still applied: fp32 parameters overwrite, and a
        /// lossy downlink's second difference is a new one (the coordinator advanced its θ̃ by
        /// the first), which the replica must add to stay equal to the coordinator's.
        var received = Set<Int>()
        var shardCount = 0
        /// On the coordinator's host: the segments shards go through once mapped (parameters
        /// written by the coordinator, contributions by this worker).
        var sharedParameters: SharedSegment?
        var sharedContributions: SharedSegment?

        /// The slot round `step` goes out from (alternating under `overlap`).
        func outbox(for step: Int) -> EncodedShards { outbox[(step / spec.stepsPerRound) % outbox.count] }

        init(assignment: TrainingNotice.Assignment, spec: JobSpec, model: Model, train: Dataset, test: Dataset, sampler: Sampler, data: Socket) {
            let t = spec.training
            // A site member sends to its delegate over the site's network: fp32, nothing lost.
            let upEncoding = assignment.site?.role == .member ? .fp32 : ShardEncoding(named: t.shardEncoding.rawValue) ?? .fp32
            uplink = ShardCodec(upEncoding, topKFraction: t.topKFraction)
            reducer = assignment.site?.role == .delegate
                ? SiteReducer(parameterCount: model.parameterCount, shardElements: assignment.shardElements,
                              members: Set(assignment.site!.members.keys))
                : nil
            downlink = ShardCodec(ShardEncoding(named: t.downlinkEncoding.rawValue) ?? .fp32, topKFraction: t.topKFraction)
            feedback = uplink.encoding == .fp32 ? nil : ErrorFeedback(count: model.parameterCount)
            let slots = spec.training.overlap ? 2 : 1
            outbox = (0..<slots).map { [uplink] _ in
                EncodedShards(codec: uplink, parameterCount: model.parameterCount, shardElements: assignment.shardElements)
            }
            if t.mode == .local {
                let optimizer = spec.optimizer.computeOptimizer
                inner = (optimizer, optimizer.makeState(parameterCount: model.parameterCount))
                replica = FlatBuffer(count: model.parameterCount)
                delta = FlatBuffer(count: model.parameterCount)
            } else {
                inner = nil
                replica = model.parameters
                delta = nil
            }
            self.assignment = assignment
            self.spec = spec
            self.model = model
            self.train = train
            self.test = test
            self.sampler = sampler
            self.data = data
        }
    }

    public init(settings: WorkerSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        ComputeThreads.set(settings.threads)
        // A site delegate is its institution's hub: its members' connections get I/O threads of
        // their own, as the coordinator's data connections do (thread 0 is the worker's own).
        let siteThreads = settings.siteListen == nil ? 0 : Context.defaultDataIOThreads
        context = try Context(ioThreads: 1 + siteThreads)
        control = try Socket(context, .dealer)
        try control.setIOThreadAffinity(0..<1)
        try control.setLinger(milliseconds: 0)
        try control.setReconnectInterval(initialMilliseconds: 100, maximumMilliseconds: 2000)
        try control.makeCurveClient(keys: settings.keys, serverKey: settings.serverKey)
        controlEvents = try SocketMonitor(control)
        try control.connect(settings.address.endpoints.control)
        if let listen = settings.siteListen {
            let zap = try ZAPHandler(context: context, authenticator: siteAllowList)
            let socket = try Socket(context, .router)
            try socket.setIOThreadAffinity(1..<(1 + siteThreads))
            try socket.setLinger(milliseconds: 0)
            try socket.setHighWaterMarks(send: 0, receive: 0)
            try socket.setMaxMessageSize(256 << 20)
            try socket.makeCurveServer(keys: settings.keys, zap: zap)
            try socket.bind("tcp://" + listen)
            (site, siteZAP) = (socket, zap)
        } else {
            (site, siteZAP) = (nil, nil)
        }
    }

    /// Serves until `shouldStop` turns true.
    public func run(shouldStop: @escaping () -> Bool) {
        stopRequested = shouldStop
        logger.info("worker started", metadata: ["coordinator": "\(settings.address)", "name": "\(settings.name)",
                                                 "openblas.core": "\(ComputeThreads.openBLASCoreName)", "threads": "\(settings.threads)"])
        register()
        while !shouldStop() {
            let poller = Poller()
            let controlIndex = poller.add(control)
            let job = current
            let dataIndex = job.map { poller.add($0.data) }
            let siteIndex = site.map { poller.add($0) }
            let eventsIndex = poller.add(controlEvents.socket)
            let ready = (try? poller.poll(timeoutMilliseconds: 100)) ?? []
            if ready.contains(eventsIndex), keyWasRefused() { break }
            if ready.contains(controlIndex) { drainControl() }
            if let job, let dataIndex, ready.contains(dataIndex) { drainData(job) }
            if let site, let siteIndex, ready.contains(siteIndex) { drainSite(site) }
            if Date() >= nextHeartbeat { heartbeat() }
            if let job = current, let role = job.assignment.site, role.role == .member, !job.siteAcknowledged,
               Date().timeIntervalSince(job.attachedAt) > 1 {
                // The delegate may have refused our first handshake (its allow-list was not set
                // yet), and libzmq does not always retry: connect again.
                job.attachedAt = Date()
                try? job.data.disconnect(role.endpoint)
                try? job.data.connect(role.endpoint)
                try? sendNotice(job.data, NoticeKind.attach, TrainingNotice.Attach(job: job.assignment.job))
            }
        }
        // Say goodbye, so that the coordinator reassigns this worker's part at once instead of
        // waiting for its heartbeats to lapse; the current step is abandoned cleanly (its
        // shards, if any were sent, are discarded by the coordinator's next step).
        try? control.send(Message.notice(Notice(kind: NoticeKind.goodbye)).encode(), dontWait: true)
        try? control.setLinger(milliseconds: 1000)
        logger.info("worker stopping")
    }

    /// Reads the control socket's handshake events; true (and logged) when the coordinator
    /// refused this worker's key, which retrying cannot change.
    private func keyWasRefused() -> Bool {
        guard let code = controlEvents.keyRefusal() else { return false }
        keyRefusedStatus = code
        logger.error("the coordinator refused this worker's key in the handshake: it was revoked; stopping",
                     metadata: ["coordinator": "\(settings.address)", "status": "\(code)",
                                "fix": "enrol a new key: move the state directory aside and start the worker with a new --join TOKEN"])
        return true
    }

    private func register() {
        var body = RegisterRequest(name: settings.name, institution: "", cores: settings.cores, memoryBytes: settings.memoryBytes)
        body.siteEndpoint = settings.siteListen.map { "tcp://" + $0 }
        guard let request = try? ApiRequest(requestId: 1, method: ApiMethod.register, json: body) else { return }
        try? control.send(Message.apiRequest(request).encode(), dontWait: true)
        nextHeartbeat = Date().addingTimeInterval(heartbeatInterval)
    }

    private func heartbeat() {
        let silent = Date().timeIntervalSince(lastHeard)
        if silent > max(10, 5 * heartbeatInterval), Date().timeIntervalSince(lastSilenceReport ?? .distantPast) >= 60 {
            lastSilenceReport = Date()
            logger.warning("no answer from the coordinator; still trying",
                           metadata: ["coordinator": "\(settings.address)", "silent.seconds": "\(Int(silent))",
                                      "check": "that it runs and is reachable at this address, that its public key is the one this worker pinned, and that this worker's key was not revoked"])
        }
        sequence += 1
        let beat = Heartbeat(sequence: sequence, sentAtNanos: DispatchTime.now().uptimeNanoseconds)
        let bytes = Message.heartbeat(beat).encode()
        if (try? control.send(bytes, dontWait: true)) != nil { bytesSent += bytes.count }
        // Not registered yet (or the coordinator forgot us after a restart): ask again.
        if !registered && sequence % 3 == 0 { register() }
        nextHeartbeat = Date().addingTimeInterval(heartbeatInterval)
    }

    private func decode(_ frames: [InboundFrame]) -> Message? {
        do {
            return try withExtendedLifetime(frames) { () throws(WireError) -> Message in
                try Message.decode(frames: frames.map(\.unsafeBytes))
            }
        } catch {
            logger.warning("malformed message from the coordinator", metadata: ["error": "\(error)"])
            return nil
        }
    }

    private func drainControl() {
        while let frames = try? control.receive(dontWait: true) {
            lastHeard = Date()
            if lastSilenceReport != nil {
                lastSilenceReport = nil
                logger.notice("the coordinator answers again", metadata: ["coordinator": "\(settings.address)"])
            }
            guard let message = decode(frames) else { continue }
            switch message {
            case let .apiReply(reply):
                if reply.status == .ok, let r = try? reply.decodeBody(as: RegisterReply.self) {
                    registered = true
                    heartbeatInterval = Double(r.heartbeatIntervalMs) / 1000
                    nextHeartbeat = Date() // start at the coordinator's pace at once
                    if let endpoint = r.ipcData, let session = r.session, let id = Self.bytes(hex: session) {
                        ipc = (endpoint, id)
                    } else {
                        ipc = nil
                    }
                    logger.info("registered", metadata: ["worker.id": "\(r.workerId)"])
                } else {
                    let text = (try? reply.decodeBody(as: ApiErrorBody.self).error) ?? "\(reply.status)"
                    logger.error("registration refused", metadata: ["reason": "\(text)"])
                }
            case let .heartbeat(echo):
                let rtt = Double(DispatchTime.now().uptimeNanoseconds &- echo.sentAtNanos) / 1e6
                if rtt >= 0 && rtt < 60_000 { rttMs = rttMs.map { 0.8 * $0 + 0.2 * rtt } ?? rtt }
            case let .error(e):
                if e.message.contains("register") {
                    if registered { logger.notice("the coordinator does not know us (it restarted?): registering again") }
                    registered = false
                    register()
                } else {
                    logger.warning("the coordinator refused a message", metadata: ["reason": "\(e.message)"])
                }
            case let .notice(n):
                handle(n)
            default:
                break
            }
        }
    }

    private func handle(_ notice: Notice) {
        switch notice.kind {
        case NoticeKind.assign:
            guard let a = try? notice.decodeBody(as: TrainingNotice.Assignment.self) else { return }
            do { try take(a) } catch {
                logger.error("cannot take the job", metadata: ["job.id": "\(a.job)", "error": "\(error)"])
                // Said, so that the job does not wait for this worker for good.
                try? sendNotice(control, NoticeKind.decline, TrainingNotice.Release(job: a.job, reason: "\(error)"))
            }
        case NoticeKind.release:
            guard let r = try? notice.decodeBody(as: TrainingNotice.Release.self), current?.assignment.job == r.job else { return }
            logger.info("job released", metadata: ["job.id": "\(r.job)", "reason": "\(r.reason)"])
            dropJob()
        default:
            break
        }
    }

    /// Lets go of the current job: its sockets, segments and data go with it, and the site
    /// endpoint admits nobody until the next job says whom.
    private func dropJob() {
        current = nil
        siteAllowList.set([:])
    }

    /// Loads the job's data and model, opens the data connection and says it is ready.
    private func take(_ a: TrainingNotice.Assignment) throws {
        current = nil
        if let role = a.site, role.role == .delegate {
            guard site != nil else {
                throw TrainingError("this job makes this worker its institution's delegate, but it was started without --site-listen")
            }
            // Admitted at once (before loading data), so that the members' handshakes find them.
            siteAllowList.set(role.members)
        }
        let spec = try JobSpec.parse(yaml: a.spec, source: "job \(a.job)")
        let manifest = try DatasetManifest.load(dataset: spec.data.dataset, dataRoot: settings.dataRoot)
        let description = try spec.modelDescription(dataset: manifest)
        var context: Int?
        if case let .transformer(t) = description { context = t.context }
        // Loading blocks this thread: beat between the slow parts so the coordinator does not
        // take a busy worker for a dead one.
        heartbeat()
        let train = try Dataset.load(manifest, split: .train, context: context)
        heartbeat()
        let test = try Dataset.load(manifest, split: .test, context: context)
        heartbeat()
        // `shared` data: the files as they are and how the manifest reads them, so that members
        // with different copies or different splits are caught before they train.
        // `per-site`: the data differ by design; only a text dataset's vocabulary must not.
        let identity = spec.data.sharding == .shared ? try ContentHash.identity(manifest)
            : try ContentHash.vocabularyHash(manifest).map { "vocabulary:sha256:" + $0 }
        heartbeat()
        let model = try Model(description, seed: spec.seed)
        let sampler: Sampler
        switch spec.data.sharding {
        case .shared:
            // One permutation of the common data, split by rank (equal to one process).
            sampler = try Sampler(seed: spec.seed, datasetSize: train.count, globalBatchSize: spec.training.globalBatchSize)
        case .perSite:
            // This site's own data: its own permutation, each batch the size of this rank's
            // slice, seeded by the job and this worker (docs/datasets.md).
            let slice = Sampler.slice(rank: a.rank, worldSize: a.worldSize, globalBatchSize: spec.training.globalBatchSize)
            let own = ContentHash.sha256(bytes: Array(settings.name.utf8)).prefix(16)
            sampler = try Sampler(seed: spec.seed ^ (UInt64(own, radix: 16) ?? 0), datasetSize: train.count, globalBatchSize: max(slice.count, 1))
        }
        let data = try Socket(self.context, .dealer)
        try data.setIOThreadAffinity(0..<1)
        try data.setLinger(milliseconds: 0)
        try data.setHighWaterMarks(send: 0, receive: 0)
        try data.setMaxMessageSize(256 << 20)
        if let role = a.site, role.role == .member {
            // Our institution's delegate takes our contributions and relays the parameters.
            try data.makeCurveClient(keys: settings.keys, serverKey: try CurveKey(z85: role.delegateKey))
            try data.connect(role.endpoint)
        } else if let ipc {
            // On the coordinator's host: ipc, named by the session id from our CURVE registration.
            try data.setRoutingId(ipc.session)
            try data.connect(ipc.endpoint)
        } else {
            try data.makeCurveClient(keys: settings.keys, serverKey: settings.serverKey)
            try data.connect(settings.address.endpoints.data)
        }
        let job = ActiveJob(assignment: a, spec: spec, model: model, train: train, test: test, sampler: sampler, data: data)
        current = job
        if bytesSentJob != a.job { bytesSent = 0 }
        bytesSentJob = a.job
        try sendNotice(data, NoticeKind.attach, TrainingNotice.Attach(job: a.job))
        let modelJSON = String(decoding: try JSONEncoder().encode(description), as: UTF8.self)
        var ready = TrainingNotice.Ready(job: a.job, model: modelJSON, parameterCount: model.parameterCount,
                                         trainExamples: train.count, contentHash: identity)
        ready.parametersDigest = model.parameters.digest
        if job.inner != nil { job.replica.baseAddress.update(from: model.parameters.baseAddress, count: model.parameterCount) }
        if let role = a.site, role.role == .delegate, !role.members.isEmpty {
            job.pendingReady = ready // once the site's members have attached
        } else {
            try sendNotice(control, NoticeKind.ready, ready)
        }
        let path = a.site.map { $0.role == .member ? "site delegate at \($0.endpoint), CURVE" : "tcp, CURVE; site delegate" }
        logger.info("job taken", metadata: ["job.id": "\(a.job)", "rank": "\(a.rank)", "world": "\(a.worldSize)",
                                            "data": "\(path ?? (ipc == nil ? "tcp, CURVE" : "ipc"))",
                                            "parameters": "\(model.parameterCount)", "train": "\(train.count)"])
    }

    static func bytes(hex: String) -> [UInt8]? {
        let chars = Array(hex.utf8)
        guard chars.count % 2 == 0, !chars.isEmpty else { return nil }
        var out: [UInt8] = []
        for i in stride(from: 0, to: chars.count, by: 2) {
            guard let b = UInt8(String(decoding: chars[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
        }
        return out.first == 0 ? nil : out // libzmq reserves ids that start with 0
    }

    private func drainData(_ job: ActiveJob) {
        while current === job, !stopRequested(), let frames = try? job.data.receive(dontWait: true) {
            // With `overlap` the next parameters are already here when a round ends, so this loop
            // may run for a long time: keep beating.
            if Date() >= nextHeartbeat { heartbeat() }
            guard let message = decode(frames) else { continue }
            switch message {
            case let .shard(h) where (h.kind == .parameters || h.kind == .delta) && h.job == UInt64(job.assignment.job):
                // From the coordinator, or a site delegate (another worker): a u64 step must not trap.
                let offset = Int(h.elementOffset), count = Int(h.elementCount)
                guard let step = Int(exactly: h.step), offset + count <= job.model.parameterCount else { continue }
                let landing = withExtendedLifetime(frames) {
                    ParameterShard.land(h, payload: frames[1].unsafeBytes, into: job.replica.baseAddress, downlink: job.downlink,
                                        streaming: job.streamsReplica)
                }
                // (Built only for a shard that did not land: this runs for every shard.)
                func shardMetadata(_ why: String) -> Logger.Metadata {
                    ["job.id": "\(job.assignment.job)", "step": "\(h.step)", "shard": "\(h.shard)", "reason": "\(why)"]
                }
                switch landing {
                case .applied:
                    break
                case let .skipped(why):
                    logger.warning("a parameter shard is skipped; the next step's parameters replace it", metadata: shardMetadata(why))
                    continue
                case let .replicaLost(why):
                    // Every later difference would build on the missing one: training on, this
                    // worker would send gradients of parameters nobody else holds. It drops the
                    // job and asks for a restart, whose start sends it the whole of θ̃.
                    logger.error("this worker's copy of the parameters no longer matches the coordinator's; leaving the job to fetch them whole",
                                 metadata: shardMetadata(why))
                    try? sendNotice(control, NoticeKind.resync, TrainingNotice.Release(
                        job: job.assignment.job, reason: "parameter shard \(h.shard) of step \(h.step): \(why)"))
                    dropJob()
                    return
                }
                if job.reducer != nil {
                    // The delegate relays every parameter shard to its site's members.
                    let payload = frames[1].bytes, envelope = frames[0].bytes
                    for identity in job.siteIdentity.values {
                        try? send(site!, [.bytes(identity), .bytes(envelope), .bytes(payload)])
                    }
                }
                shardLanded(job, step: step, shard: h.shard, shardCount: Int(h.shardCount))
            case let .sharedShard(h) where h.kind == .parameters && h.job == UInt64(job.assignment.job):
                // The parameters are in the shared segment; a shard the coordinator has since
                // rewritten (this worker fell behind) does not count (what the copy left in the
                // replica is overwritten before the step can start): newer ones follow.
                let offset = Int(h.elementOffset), count = Int(h.elementCount)
                guard let step = Int(exactly: h.step), let segment = job.sharedParameters, offset + count <= job.model.parameterCount,
                      segment.read(shard: Int(h.shard), step: step, offset: offset, count: count, into: job.replica.baseAddress + offset,
                                   streaming: job.streamsReplica)
                else { continue }
                shardLanded(job, step: step, shard: h.shard, shardCount: Int(h.shardCount))
            case let .notice(n) where n.kind == NoticeKind.sharedMemory:
                mapSharedMemory(job, n)
            case let .notice(n) where n.kind == NoticeKind.attach:
                job.siteAcknowledged = true
            case let .notice(n) where n.kind == NoticeKind.start:
                // Our own initialisation is θ̃: start from it (and tell the site's members so).
                guard let start = try? n.decodeBody(as: TrainingNotice.Start.self), start.job == job.assignment.job else { continue }
                if job.reducer != nil {
                    for identity in job.siteIdentity.values { try? send(site!, [.bytes(identity), .bytes(frames[0].bytes)]) }
                }
                job.receivedStep = start.step
                stepParametersArrived(job, step: start.step)
            case let .error(e):
                logger.warning("the coordinator refused a shard", metadata: ["reason": "\(e.message)"])
            default:
                break
            }
        }
    }

    /// One parameter shard of `step` is in the replica: the step starts when all are.
    private func shardLanded(_ job: ActiveJob, step: Int, shard: UInt32, shardCount: Int) {
        if step != job.receivedStep {
            job.receivedStep = step
            job.received.removeAll(keepingCapacity: true)
            // Site rounds two rounds behind can no longer complete (a member missed them).
            job.reducer?.drop(before: step - 2 * job.spec.stepsPerRound)
        }
        job.shardCount = shardCount
        guard Int(shard) < shardCount, job.received.insert(Int(shard)).inserted else { return }
        if job.received.count == job.shardCount { stepParametersArrived(job, step: step) }
    }

    /// The coordinator offers shared-memory segments (this worker is on its host): mapped and
    /// answered, or, if anything is off, left unanswered (shards keep going through the socket).
    private func mapSharedMemory(_ job: ActiveJob, _ notice: Notice) {
        do {
            let offer = try notice.decodeBody(as: TrainingNotice.SharedMemory.self)
            guard offer.job == job.assignment.job, offer.parameterCount == job.model.parameterCount,
                  job.assignment.site == nil, ipc != nil else { return }
            // Only segments where the coordinator makes them, named as it names them.
            for path in [offer.parameters, offer.contributions] {
                let url = URL(fileURLWithPath: path)
                guard url.deletingLastPathComponent().path == SharedSegment.directory, url.lastPathComponent.hasPrefix(SharedSegment.namePrefix) else {
                    throw TrainingError("segment \(path) is not a Cohort segment in \(SharedSegment.directory)")
                }
            }
            let parameters = try SharedSegment(opening: offer.parameters, elements: offer.parameterCount, shards: offer.shardCount)
            let contributions = try SharedSegment(opening: offer.contributions, elements: offer.parameterCount, shards: 0)
            try sendNotice(job.data, NoticeKind.sharedMemory, offer) // before any shard that relies on it
            (job.sharedParameters, job.sharedContributions) = (parameters, contributions)
            logger.info("shards through shared memory", metadata: ["job.id": "\(offer.job)", "parameters": "\(offer.parameters)"])
        } catch {
            logger.warning("cannot use the coordinator's shared memory; shards stay on the ipc socket", metadata: ["error": "\(error)"])
        }
    }

    /// This rank's slice of global batch `s`.
    private func batch(_ job: ActiveJob, step s: Int) -> Batch {
        let a = job.assignment
        let indices = job.spec.data.sharding == .perSite
            ? job.sampler.indices(step: s, rank: 0, worldSize: 1) // the sampler is this site's alone
            : job.sampler.indices(step: s, rank: a.rank, worldSize: a.worldSize)
        return job.train.gather(indices)
    }

    /// The gradient of this rank's slice of global batch `s`, in the model's gradient buffer.
    private func gradient(_ job: ActiveJob, step s: Int) throws -> (StepResult, Int) {
        let batch: Batch
        if let p = job.prefetched, p.step == s { batch = p.batch } else { batch = self.batch(job, step: s) }
        job.prefetched = nil
        job.model.zeroGradients()
        let r = try job.model.forwardBackward(batch, dropoutSeed: job.spec.seed &+ UInt64(s) &* 0x9E37_79B9 &+ UInt64(job.assignment.rank))
        return (r, batch.count)
    }

    /// `local` mode: `local-steps` inner steps from the model's current parameters (each on this
    /// rank's slice of global batches `step`, `step+1`, …), leaving the delta θ_start − θ_end in
    /// `job.delta`. Returns the last loss and the samples behind the round.
    private func localRound(_ job: ActiveJob, step: Int) throws -> (StepResult, Int) {
        guard let inner = job.inner, let delta = job.delta else { return try gradient(job, step: step) }
        let spec = job.spec
        let params = job.model.parameters
        delta.baseAddress.update(from: params.baseAddress, count: params.count)
        var last: StepResult?
        var samples = 0
        for s in step..<(step + spec.training.localSteps) {
            let (r, n) = try gradient(job, step: s)
            samples += n
            var scale: Float = 1
            if let maxNorm = spec.optimizer.clipNorm {
                scale = GradientClipping.scale(norm: GradientClipping.norm(UnsafeBufferPointer(job.model.gradients.buffer)), maxNorm: maxNorm)
            }
            job.innerSteps += 1
            // A round can take longer than the coordinator's heartbeat window: beat between steps;
            // SIGTERM abandons the round.
            if Date() >= nextHeartbeat { heartbeat() }
            if stopRequested() { throw RoundAbandoned() }
            inner.optimizer.step(parameters: params, gradients: job.model.gradients, state: inner.state,
                                 learningRate: spec.schedule.learningRate(step: s, totalSteps: spec.training.steps, lr: spec.optimizer.lr),
                                 t: job.innerSteps, gradientScale: scale)
            last = r
        }
        let d = delta.baseAddress, p = params.baseAddress
        for i in 0..<params.count { d[i] -= p[i] }
        return (last!, samples)
    }

    /// All parameters for `step` are here (in the replica): evaluate if this is an evaluation
    /// point, then compute and send this rank's contribution for the round that starts at
    /// `step` (with `overlap`, the next round's: this one's went out before these arrived).
    private func stepParametersArrived(_ job: ActiveJob, step: Int) {
        let a = job.assignment, spec = job.spec
        let params = job.model.parameters
        do {
            if job.inner != nil { params.baseAddress.update(from: job.replica.baseAddress, count: params.count) }
            if step > 0 && (step == spec.training.steps || (spec.evalEvery > 0 && step % spec.evalEvery == 0)) {
                // A failed evaluation costs its report, not the step's gradient.
                do {
                    let started = Date()
                    var e = Evaluation()
                    let indices = job.test.evaluationIndices(rank: a.rank, worldSize: a.worldSize)
                    var i = 0
                    while i < indices.count {
                        e = e + (try job.model.evaluate(job.test.gather(indices[i..<min(i + 512, indices.count)])))
                        i += 512
                    }
                    var m = TrainingNotice.Metrics(job: a.job, step: step, lossSum: e.lossSum, correct: e.correct, count: e.count)
                    m.evalSeconds = Date().timeIntervalSince(started)
                    m.bytesSent = bytesSent
                    try sendNotice(control, NoticeKind.metrics, m)
                } catch {
                    logger.error("evaluation failed; training goes on", metadata: ["job.id": "\(a.job)", "step": "\(step)", "error": "\(error)"])
                }
            }
            guard job.inner != nil else {
                guard step < spec.training.steps else { return }
                let (r, samples) = try gradient(job, step: step)
                if step % 10 == 0 { try progress(job, step: step, loss: r.loss, samples: samples) }
                try sendContribution(job, step: step, from: job.model.gradients.baseAddress, samples: samples, zeroCopyOwner: job.model.gradients)
                if step + 1 < spec.training.steps { job.prefetched = (step + 1, batch(job, step: step + 1)) }
                return
            }
            let h = spec.training.localSteps
            var rounds: [Int]
            if spec.training.overlap, job.lastSent == step, let delta = job.delta {
                // This round went out before these parameters came: start the next one from
                // them plus what this worker learned in the round they overlapped (θ̃ − δ).
                let p = params.baseAddress, r = job.replica.baseAddress, d = delta.baseAddress
                for i in 0..<params.count { p[i] = r[i] - d[i] }
                rounds = [step + h]
            } else {
                rounds = spec.training.overlap ? [step, step + h] : [step]
            }
            rounds.removeAll { $0 >= spec.training.steps }
            for round in rounds {
                let (r, samples) = try localRound(job, step: round)
                try progress(job, step: round, loss: r.loss, samples: samples)
                try sendContribution(job, step: round, from: job.delta!.baseAddress, samples: samples, zeroCopyOwner: nil)
                job.lastSent = round
            }
        } catch is RoundAbandoned {
            logger.info("round abandoned: stopping", metadata: ["job.id": "\(a.job)", "step": "\(step)"])
        } catch {
            logger.error("step failed", metadata: ["job.id": "\(a.job)", "step": "\(step)", "error": "\(error)"])
        }
    }

    private func progress(_ job: ActiveJob, step: Int, loss: Float, samples: Int) throws {
        let p = TrainingNotice.Progress(job: job.assignment.job, step: step, loss: Double(loss), samples: samples, rttMs: rttMs)
        try sendNotice(control, NoticeKind.progress, p)
    }

    /// Sends the flat buffer at `source` as this round's contribution, shard by shard: fp32
    /// straight from `zeroCopyOwner`'s memory when given, otherwise each shard encoded (with
    /// error feedback when lossy) into its outbox slot right before it goes, so that encoding
    /// overlaps the sends.
    private func sendContribution(_ job: ActiveJob, step: Int, from source: UnsafeMutablePointer<Float>, samples: Int,
                                  zeroCopyOwner: (any AnyObject & Sendable)?) throws {
        let outbox = job.outbox(for: step)
        if let reducer = job.reducer {
            // The delegate's own part joins the site's sum; complete shards go on to the coordinator.
            for k in 0..<reducer.shardCount {
                let r = reducer.range(k)
                let own = UnsafeRawBufferPointer(start: source + r.lowerBound, count: r.count * 4)
                if case .success(true) = reducer.add(step: step, shard: k, from: "", values: own, samples: samples) {
                    try sendSiteShard(job, step: step, shard: k)
                }
            }
            return
        }
        for k in 0..<outbox.shardCount {
            let range = outbox.range(k)
            let header = contributionHeader(job, step: step, shard: k, of: outbox, samples: samples)
            if let segment = job.sharedContributions, job.uplink.encoding == .fp32 {
                // Into our segment, then the header alone: the coordinator reads it there.
                (segment.floats + range.lowerBound).update(from: source + range.lowerBound, count: range.count)
                try send(job.data, [.bytes(Message.sharedShard(header).encode())])
                continue
            }
            let payload: OutboundFrame
            if job.uplink.encoding == .fp32, let owner = zeroCopyOwner {
                payload = .zeroCopy(UnsafeRawBufferPointer(start: source + range.lowerBound, count: range.count * 4), owner: owner)
            } else {
                payload = .zeroCopy(outbox.encode(shard: k, of: source, feedback: job.feedback), owner: outbox)
            }
            try send(job.data, [.bytes(Message.shard(header).encode()), payload])
        }
    }

    /// The header of shard k of this worker's (or, as a delegate, its site's) contribution.
    private func contributionHeader(_ job: ActiveJob, step: Int, shard k: Int, of layout: EncodedShards, samples: Int) -> ShardHeader {
        let r = layout.range(k)
        return ShardHeader(job: UInt64(job.assignment.job), step: UInt64(step), kind: job.inner == nil ? .gradient : .delta,
                           encoding: job.uplink.encoding, shard: UInt32(k), shardCount: UInt32(layout.shardCount),
                           elementOffset: UInt64(r.lowerBound), elementCount: UInt32(r.count), sampleCount: UInt32(samples))
    }

    /// The delegate: shard k of the site's round `step` is complete; it goes to the coordinator
    /// as one contribution of the site's samples, encoded as the job says (error feedback on).
    private func sendSiteShard(_ job: ActiveJob, step: Int, shard k: Int) throws {
        guard let reducer = job.reducer, let (flat, samples) = reducer.mean(step: step, shard: k) else { return }
        let outbox = job.outbox(for: step)
        let header = contributionHeader(job, step: step, shard: k, of: outbox, samples: samples)
        let payload = outbox.encode(shard: k, of: flat, feedback: job.feedback)
        try send(job.data, [.bytes(Message.shard(header).encode()), .zeroCopy(payload, owner: outbox)])
        reducer.sent(step: step)
    }

    /// The delegate's site endpoint: members attach and send their contributions (fp32).
    private func drainSite(_ site: Socket) {
        while let frames = try? site.receive(dontWait: true), frames.count >= 2 {
            let identity = frames[0].bytes
            guard let name = frames[1].property("User-Id"), let job = current, let reducer = job.reducer else { continue }
            let message: Message
            do {
                message = try withExtendedLifetime(frames) { () throws(WireError) -> Message in
                    try Message.decode(frames: frames.dropFirst().map(\.unsafeBytes))
                }
            } catch {
                logger.warning("malformed message from a site member", metadata: ["member": "\(name)", "error": "\(error)"])
                continue
            }
            switch message {
            case let .notice(n) where n.kind == NoticeKind.attach:
                guard let attach = try? n.decodeBody(as: TrainingNotice.Attach.self), attach.job == job.assignment.job else { continue }
                job.siteIdentity[name] = identity
                // Acknowledged, so that a member whose first handshake raced the allow-list knows.
                try? send(site, [.bytes(identity), .bytes(Message.notice(n).encode())])
                if let ready = job.pendingReady, job.siteIdentity.count == reducer.expected.count - 1 {
                    job.pendingReady = nil
                    try? sendNotice(control, NoticeKind.ready, ready)
                }
            case let .shard(h) where h.job == UInt64(job.assignment.job) && h.encoding == .fp32 && frames.count == 3:
                // A member's step lies within the rounds this delegate can have open: from a
                // round behind the parameters it holds to two rounds ahead. Anything else (a u64
                // beyond Int included) would only hold a round open for good.
                let rounds = job.spec.stepsPerRound
                guard let step = Int(exactly: h.step), step >= job.receivedStep - rounds, step <= job.receivedStep + 2 * rounds else {
                    logger.warning("site member's shard refused", metadata: ["member": "\(name)", "reason": "step \(h.step) is not a round this site is in"])
                    continue
                }
                let outcome = withExtendedLifetime(frames) {
                    reducer.add(step: step, shard: Int(h.shard), from: name, values: frames[2].unsafeBytes, samples: Int(h.sampleCount))
                }
                switch outcome {
                case .success(true):
                    do { try sendSiteShard(job, step: step, shard: Int(h.shard)) } catch {
                        logger.error("cannot send the site's shard", metadata: ["error": "\(error)"])
                    }
                case .success(false):
                    break
                case let .failure(refusal):
                    logger.warning("site member's shard refused", metadata: ["member": "\(name)", "reason": "\(refusal)"])
                }
            default:
                logger.warning("unexpected message from a site member", metadata: ["member": "\(name)", "type": "\(message.type)"])
            }
        }
    }

    /// Sends a notice (kind + JSON body) as one frame, counted.
    private func sendNotice(_ socket: Socket, _ kind: String, _ body: some Encodable) throws {
        try send(socket, [.bytes(Message.notice(try Notice(kind: kind, json: body)).encode())])
    }

    /// Sends a message, counting its bytes (envelopes included) for the job's report.
    private func send(_ socket: Socket, _ frames: [OutboundFrame]) throws {
        try socket.send(frames)
        for frame in frames {
            switch frame {
            case let .bytes(b): bytesSent += b.count
            case let .zeroCopy(b, _): bytesSent += b.count
            }
        }
    }
}

/// SIGTERM arrived during a local round: it is dropped (the coordinator redoes it without us).
struct RoundAbandoned: Error {}
