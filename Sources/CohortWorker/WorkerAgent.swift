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

    public init(address: CoordinatorAddress, keys: CurveKeyPair, serverKey: CurveKey, dataRoot: URL, name: String,
                threads: Int, cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                memoryBytes: Int64 = Int64(ProcessInfo.processInfo.physicalMemory)) {
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
    var heartbeatInterval: Double = 1
    var nextHeartbeat = Date()
    var sequence: UInt64 = 0
    var registered = false
    /// Smoothed heartbeat round trip to the coordinator, ms (reported with progress).
    var rttMs: Double?
    /// The ipc data endpoint and session id the coordinator offered (this host only).
    var ipc: (endpoint: String, session: [UInt8])?
    var current: ActiveJob?

    /// A job this worker is training.
    final class ActiveJob {
        let assignment: TrainingNotice.Assignment
        let spec: JobSpec
        let model: Model
        let train: Dataset
        let test: Dataset
        let sampler: Sampler
        let data: Socket
        /// The gradient in bf16 when the job sends it so (reused every step).
        let bf16: BF16Buffer?
        /// `mode: local`: the inner optimizer and its state (kept across rounds, started afresh
        /// when the worker (re)joins), the parameters at the start of the round, inner steps run.
        let inner: (optimizer: Optimizer, state: FlatBuffer, start: FlatBuffer)?
        var innerSteps = 0
        var receivedStep = -1
        var received = 0
        var shardCount = 0

        init(assignment: TrainingNotice.Assignment, spec: JobSpec, model: Model, train: Dataset, test: Dataset, sampler: Sampler, data: Socket) {
            bf16 = assignment.encoding == "bf16" ? BF16Buffer(count: model.parameterCount) : nil
            if spec.training.mode == .local {
                let optimizer = spec.optimizer.computeOptimizer
                inner = (optimizer, optimizer.makeState(parameterCount: model.parameterCount), FlatBuffer(count: model.parameterCount))
            } else {
                inner = nil
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
        context = try Context()
        control = try Socket(context, .dealer)
        try control.setLinger(milliseconds: 0)
        try control.setReconnectInterval(initialMilliseconds: 100, maximumMilliseconds: 2000)
        try control.makeCurveClient(keys: settings.keys, serverKey: settings.serverKey)
        try control.connect(settings.address.endpoints.control)
    }

    /// Serves until `shouldStop` turns true.
    public func run(shouldStop: () -> Bool) {
        logger.info("worker started", metadata: ["coordinator": "\(settings.address)", "name": "\(settings.name)",
                                                 "openblas.core": "\(ComputeThreads.openBLASCoreName)", "threads": "\(settings.threads)"])
        register()
        while !shouldStop() {
            let poller = Poller()
            poller.add(control)
            if let job = current { poller.add(job.data) }
            let ready = (try? poller.poll(timeoutMilliseconds: 100)) ?? []
            if ready.contains(0) { drainControl() }
            if ready.contains(1), let job = current { drainData(job) }
            if Date() >= nextHeartbeat { heartbeat() }
        }
        // Say goodbye, so that the coordinator reassigns this worker's part at once instead of
        // waiting for its heartbeats to lapse; the current step is abandoned cleanly (its
        // shards, if any were sent, are discarded by the coordinator's next step).
        try? control.send(Message.notice(Notice(kind: NoticeKind.goodbye)).encode(), dontWait: true)
        try? control.setLinger(milliseconds: 1000)
        logger.info("worker stopping")
    }

    private func register() {
        let body = RegisterRequest(name: settings.name, institution: "", cores: settings.cores, memoryBytes: settings.memoryBytes)
        guard let request = try? ApiRequest(requestId: 1, method: ApiMethod.register, json: body) else { return }
        try? control.send(Message.apiRequest(request).encode(), dontWait: true)
        nextHeartbeat = Date().addingTimeInterval(heartbeatInterval)
    }

    private func heartbeat() {
        sequence += 1
        let beat = Heartbeat(sequence: sequence, sentAtNanos: DispatchTime.now().uptimeNanoseconds)
        try? control.send(Message.heartbeat(beat).encode(), dontWait: true)
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
            }
        case NoticeKind.release:
            guard let r = try? notice.decodeBody(as: TrainingNotice.Release.self), current?.assignment.job == r.job else { return }
            logger.info("job released", metadata: ["job.id": "\(r.job)", "reason": "\(r.reason)"])
            current = nil
        default:
            break
        }
    }

    /// Loads the job's data and model, opens the data connection and says it is ready.
    private func take(_ a: TrainingNotice.Assignment) throws {
        current = nil
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
        let model = try Model(description, seed: spec.seed)
        let sampler = try Sampler(seed: spec.seed, datasetSize: train.count, globalBatchSize: spec.training.globalBatchSize)
        let data = try Socket(self.context, .dealer)
        try data.setLinger(milliseconds: 0)
        try data.setHighWaterMarks(send: 0, receive: 0)
        try data.setMaxMessageSize(256 << 20)
        if let ipc {
            // On the coordinator's host: ipc, named by the session id from our CURVE registration.
            try data.setRoutingId(ipc.session)
            try data.connect(ipc.endpoint)
        } else {
            try data.makeCurveClient(keys: settings.keys, serverKey: settings.serverKey)
            try data.connect(settings.address.endpoints.data)
        }
        let job = ActiveJob(assignment: a, spec: spec, model: model, train: train, test: test, sampler: sampler, data: data)
        current = job
        try data.send(Message.notice(try Notice(kind: NoticeKind.attach, json: TrainingNotice.Attach(job: a.job))).encode())
        let modelJSON = String(decoding: try JSONEncoder().encode(description), as: UTF8.self)
        let ready = TrainingNotice.Ready(job: a.job, model: modelJSON, parameterCount: model.parameterCount,
                                         trainExamples: train.count, contentHash: manifest.contentHash)
        try control.send(Message.notice(try Notice(kind: NoticeKind.ready, json: ready)).encode())
        logger.info("job taken", metadata: ["job.id": "\(a.job)", "rank": "\(a.rank)", "world": "\(a.worldSize)",
                                            "data": "\(ipc == nil ? "tcp, CURVE" : "ipc")",
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
        while current === job, let frames = try? job.data.receive(dontWait: true) {
            guard let message = decode(frames) else { continue }
            switch message {
            case let .shard(h) where h.kind == .parameters && h.job == UInt64(job.assignment.job):
                // Copy the shard into the parameters and let the frame go at once.
                let offset = Int(h.elementOffset), count = Int(h.elementCount)
                guard offset + count <= job.model.parameterCount else { continue }
                frames[1].withUnsafeBytes { src in
                    UnsafeMutableRawPointer(job.model.parameters.baseAddress + offset).copyMemory(from: src.baseAddress!, byteCount: count * 4)
                }
                let step = Int(h.step)
                if step != job.receivedStep { job.receivedStep = step; job.received = 0 }
                job.received += 1
                job.shardCount = Int(h.shardCount)
                if job.received == job.shardCount { stepParametersArrived(job, step: step) }
            case let .error(e):
                logger.warning("the coordinator refused a shard", metadata: ["reason": "\(e.message)"])
            default:
                break
            }
        }
    }

    /// What this worker sends for the round that starts at `step`, left in the gradient buffer:
    /// in `sync` mode the gradient of its slice of global batch `step`; in `local` mode the delta
    /// θ_start − θ_end after `local-steps` inner steps with its own optimizer (each on its slice
    /// of the global batches `step`, `step+1`, …). Returns the last loss and the samples behind it.
    private func computeContribution(_ job: ActiveJob, step: Int) throws -> (StepResult, Int) {
        let a = job.assignment, spec = job.spec
        func gradient(_ s: Int) throws -> (StepResult, Int) {
            let batch = job.train.gather(job.sampler.indices(step: s, rank: a.rank, worldSize: a.worldSize))
            job.model.zeroGradients()
            let r = try job.model.forwardBackward(batch, dropoutSeed: spec.seed &+ UInt64(s) &* 0x9E37_79B9 &+ UInt64(a.rank))
            return (r, batch.count)
        }
        guard let inner = job.inner else { return try gradient(step) }
        let params = job.model.parameters
        inner.start.baseAddress.update(from: params.baseAddress, count: params.count)
        var last: (StepResult, Int)?
        var samples = 0
        for s in step..<(step + spec.training.localSteps) {
            let (r, n) = try gradient(s)
            samples += n
            var scale: Float = 1
            if let maxNorm = spec.optimizer.clipNorm {
                scale = GradientClipping.scale(norm: GradientClipping.norm(UnsafeBufferPointer(job.model.gradients.buffer)), maxNorm: maxNorm)
            }
            job.innerSteps += 1
            inner.optimizer.step(parameters: params, gradients: job.model.gradients, state: inner.state,
                                 learningRate: spec.schedule.learningRate(step: s, totalSteps: spec.training.steps, lr: spec.optimizer.lr),
                                 t: job.innerSteps, gradientScale: scale)
            last = (r, n)
        }
        // delta = θ_start − θ_end, into the gradient buffer that the shards are sent from.
        let d = job.model.gradients.baseAddress, p = params.baseAddress, s0 = inner.start.baseAddress
        for i in 0..<params.count { d[i] = s0[i] - p[i] }
        return (last!.0, samples)
    }

    /// All parameters for `step` are here: evaluate if this is an evaluation point, then compute
    /// and send the gradient of this rank's slice.
    private func stepParametersArrived(_ job: ActiveJob, step: Int) {
        let a = job.assignment, spec = job.spec
        do {
            if step > 0 && (step == spec.training.steps || (spec.evalEvery > 0 && step % spec.evalEvery == 0)) {
                var e = Evaluation()
                let indices = job.test.evaluationIndices(rank: a.rank, worldSize: a.worldSize)
                var i = 0
                while i < indices.count {
                    e = e + (try job.model.evaluate(job.test.gather(indices[i..<min(i + 512, indices.count)])))
                    i += 512
                }
                let m = TrainingNotice.Metrics(job: a.job, step: step, lossSum: e.lossSum, correct: e.correct, count: e.count)
                try control.send(Message.notice(try Notice(kind: NoticeKind.metrics, json: m)).encode())
            }
            guard step < spec.training.steps else { return }
            let (r, samples) = try computeContribution(job, step: step)
            if step % 10 == 0 || job.inner != nil {
                let p = TrainingNotice.Progress(job: a.job, step: step, loss: Double(r.loss), samples: samples, rttMs: rttMs)
                try control.send(Message.notice(try Notice(kind: NoticeKind.progress, json: p)).encode())
            }
            let layoutElements = a.shardElements
            let n = job.model.parameterCount
            let shardCount = (n + layoutElements - 1) / layoutElements
            let grads = job.model.gradients
            for k in 0..<shardCount {
                let start = k * layoutElements, count = min(layoutElements, n - start)
                let header = ShardHeader(job: UInt64(a.job), step: UInt64(step), kind: job.inner == nil ? .gradient : .delta,
                                         encoding: job.bf16 == nil ? .fp32 : .bf16,
                                         shard: UInt32(k), shardCount: UInt32(shardCount), elementOffset: UInt64(start),
                                         elementCount: UInt32(count), sampleCount: UInt32(samples))
                if let bf16 = job.bf16 {
                    // Rounded shard by shard, right before it goes: conversion overlaps the sends.
                    bf16.encode(from: grads.baseAddress + start, count: count, at: start)
                    let payload = UnsafeRawBufferPointer(start: bf16.base + start * 2, count: count * 2)
                    try job.data.send([.bytes(Message.shard(header).encode()), .zeroCopy(payload, owner: bf16)])
                } else {
                    let payload = UnsafeRawBufferPointer(start: grads.baseAddress + start, count: count * 4)
                    try job.data.send([.bytes(Message.shard(header).encode()), .zeroCopy(payload, owner: grads)])
                }
            }
        } catch {
            logger.error("step failed", metadata: ["job.id": "\(a.job)", "step": "\(step)", "error": "\(error)"])
        }
    }
}

/// A bf16 copy of a flat Float buffer, sent zero-copy (it lives as long as libzmq needs it).
final class BF16Buffer: @unchecked Sendable { // written before each send, read by libzmq after
    let base: UnsafeMutableRawPointer
    let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(byteCount: max(count, 1) * 2, alignment: 64)
    }

    deinit { base.deallocate() }

    /// Round-to-nearest-even of `count` floats into elements `at..<at+count`.
    func encode(from source: UnsafePointer<Float>, count n: Int, at offset: Int) {
        let out = (base + offset * 2).assumingMemoryBound(to: UInt16.self)
        for i in 0..<n { out[i] = BFloat16.encode(source[i]) }
    }
}
