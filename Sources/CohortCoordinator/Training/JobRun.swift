import CohortCompute
import CohortSpec
import CohortStore
import CohortTransport
import CohortWire
import Foundation

/// One running job on the coordinator: it holds the authoritative parameters and optimizer
/// state, fuses each step's gradient shards (`StepAggregator`), applies the optimizer to each
/// parameter shard as soon as its gradient is complete, and sends the new shard straight from
/// the parameter buffer (zero-copy) to every member. Owned by the loop thread.
///
/// Members are fixed for the life of a run: a lost member makes the loop end the run (the job
/// waits for workers) and keep its state, so the next run of the job continues from it.
final class JobRun {
    enum Phase { case gathering, training, finishing, done }

    let job: Job.ID
    let spec: JobSpec
    /// Worker (principal) names by rank.
    let members: [String]
    /// Members that exchange shards with the coordinator: all of them under flat reduction;
    /// under `reduction: institution`, each site's delegate (and members of sites without one).
    let uplink: [String]
    /// Each member's part in its site's reduction.
    let site: [String: TrainingNotice.Site]
    let shardElements: Int
    let encoding: ShardEncoding
    /// How parameter updates go down: fp32 sends the parameters; any other encoding sends
    /// θ − θ̃ encoded, where θ̃ (`TrainingState.replica`) is what the workers hold.
    let downlink: ShardCodec
    /// The encoded downlink shards (lossy downlinks only), sent zero-copy to every member.
    var downbox: EncodedShards?
    /// `overlap`: contributions to the next round that came before this one ended, kept (their
    /// frames, uncopied) and replayed when it begins. At most one round's shards per member, each
    /// shard once (`CoordinatorLoop.keepsEarly`).
    var early: [(member: String, header: ShardHeader, frames: [InboundFrame])] = [] {
        didSet { if early.isEmpty { earlyShards = [:] } }
    }
    /// The shards each member has in `early` (so that the once-per-shard check is not a scan).
    var earlyShards: [String: Set<UInt32>] = [:]
    var phase = Phase.gathering {
        didSet { if phase == .finishing && oldValue != .finishing { finishingSince = Date() } }
    }
    /// When the last step ended (the final evaluation's reports are awaited from then on).
    var finishingSince: Date?
    /// When the final evaluation's first report arrived.
    var firstFinalReportAt: Date?
    var ready: [String: TrainingNotice.Ready] = [:]
    var dataIdentity: [String: [UInt8]] = [:]
    /// Members whose data connection is the ipc endpoint.
    var dataOverIPC: [String: Bool] = [:]
    /// Shared memory with members on this host: the parameter segment (written here, one for
    /// the run), each member's contribution segment once it has mapped it (`shared`), and the
    /// ones offered and not yet answered.
    var parameterSegment: SharedSegment?
    var shared: [String: SharedSegment] = [:]
    var offered: [String: SharedSegment] = [:]
    var state: TrainingState?
    var aggregator: StepAggregator?
    var completedShards = 0
    var metrics: [Int: [String: TrainingNotice.Metrics]] = [:]
    var losses: [String: TrainingNotice.Progress] = [:]
    /// Shard bytes each way over the job's life: kept in its training state, so that they
    /// survive a run's restart (a member lost or joining) and, through checkpoints, a
    /// coordinator's restart.
    var bytesIn: Int {
        get { state?.bytesIn ?? 0 }
        set { state?.bytesIn = newValue }
    }
    var bytesOut: Int {
        get { state?.bytesOut ?? 0 }
        set { state?.bytesOut = newValue }
    }
    /// Per member: bytes each way, this step's first and last shard arrival and bytes, the
    /// smoothed bandwidth that gives, and the round trip the worker reports.
    var memberBytesIn: [String: Int] = [:], memberBytesOut: [String: Int] = [:]
    var stepArrival: [String: (first: Date, last: Date, bytes: Int)] = [:]
    var bandwidth: [String: Double] = [:]
    var rttMs: [String: Double] = [:]
    var stepStartedAt = Date()
    var samplesPerSecond = 0.0
    /// Shards each member has sent this step, and when the first member sent its last.
    var shardsFrom: [String: Int] = [:]
    var firstMemberDoneAt: Date?
    var lastMemberDoneAt: Date?
    /// Smoothed time from a step's start to its last shard: the deadline follows it.
    var stepSeconds: Double?
    /// Members that missed a deadline: until they keep up again, their parameters are sent as
    /// copies, since the shared buffer may change before their queue drains.
    var lagging: Set<String> = []
    /// Bytes of parameter copies queued to a lagging member since it last sent a shard. A member
    /// that never drains its data socket (hostile, or a peer whose reader is gone) would
    /// otherwise make the coordinator queue a copy of the parameters for it every step, without
    /// end; past `maxQueuedCopies` parameter sets nothing more is sent to it until it sends a
    /// shard again (a late one too: a member back from a long stall).
    var queuedSinceHeard: [String: Int] = [:]
    static let maxQueuedCopies = 4
    var droppedThisStep: Set<String> = []

    /// When the step in progress gives up on the members that have not sent everything:
    /// derived from how long the members that keep up take (3× their smoothed step time plus
    /// `slack`, so that a busy host does not drop members that keep up), or in the first step (and evaluation steps) from when the first member finished;
    /// nil while nobody has finished.
    func deadline(slack: Double) -> Date? {
        // Members evaluate before an evaluation step's gradient, so its length says nothing of
        // the usual: only the within-step rule applies there.
        let evaluating = state.map { $0.step > 0 && evaluates(after: $0.step) } ?? false
        if let s = stepSeconds, !evaluating { return stepStartedAt.addingTimeInterval(3 * s + slack) }
        if let first = firstMemberDoneAt { return first.addingTimeInterval(3 * first.timeIntervalSince(stepStartedAt) + max(1, slack)) }
        return nil
    }

    /// The parameters, optimizer state and step of a job: kept across runs of the job.
    final class TrainingState {
        let model: Model
        let optimizer: Optimizer
        let optimizerState: FlatBuffer
        /// Steps completed.
        var step: Int
        /// θ̃: the parameters as the workers hold them under a lossy downlink (nil with fp32).
        var replica: FlatBuffer?
        /// θ − θ̃ of the shard being sent (lossy downlinks): what gets encoded.
        var difference: FlatBuffer?
        /// Training time so far (evaluations left out), and at each step that was evaluated.
        var trainSeconds = 0.0
        var evaluationDebt = 0.0
        var trainSecondsAt: [Int: Double] = [:]
        /// Shard bytes received and sent so far (`JobRun.bytesIn`, `bytesOut`).
        var bytesIn = 0, bytesOut = 0
        /// Parameter shards already updated in the step in progress (`step`). Without clip-norm
        /// each shard is updated as soon as it is complete, so a run that restarts mid-step (a
        /// member lost or joining) redoes the step's exchange but must not update these again:
        /// that would apply the step twice to them, and count it twice in the optimizer's moments.
        var appliedThisStep: Set<Int> = []
        /// The shard size `appliedThisStep` counts in (`JobRun.shardElements(_:resuming:)`).
        var appliedShardElements: Int?

        /// What a checkpoint records beside the tensors: the shards the step in progress had
        /// updated (one written mid-step, when the coordinator stops), and the job's totals, so
        /// that a restarted coordinator's status and metrics go on from them instead of from 0.
        var checkpointMetadata: [String: String] {
            var m = [Self.trainSecondsKey: "\(trainSeconds)", Self.bytesInKey: "\(bytesIn)", Self.bytesOutKey: "\(bytesOut)"]
            if !appliedThisStep.isEmpty {
                m[Self.appliedShardsKey] = appliedThisStep.sorted().map(String.init).joined(separator: ",")
                if let appliedShardElements { m[Self.appliedShardElementsKey] = "\(appliedShardElements)" }
            }
            return m
        }

        /// Takes back what `checkpointMetadata` recorded; a key that is absent (a checkpoint
        /// from before it was kept) or implausible leaves its default.
        func restore(from metadata: [String: String]) {
            appliedThisStep = Set(metadata[Self.appliedShardsKey]?.split(separator: ",").compactMap { Int($0) } ?? [])
            appliedShardElements = metadata[Self.appliedShardElementsKey].flatMap { Int($0) }.flatMap { $0 > 0 && $0 <= 1 << 24 ? $0 : nil }
            trainSeconds = metadata[Self.trainSecondsKey].flatMap(Double.init).flatMap { $0.isFinite && $0 >= 0 ? $0 : nil } ?? 0
            // Within [0, 2^56]: a total near Int.max would trap at the next addition.
            func total(_ key: String) -> Int { metadata[key].flatMap { Int($0) }.map { min(max(0, $0), 1 << 56) } ?? 0 }
            bytesIn = total(Self.bytesInKey)
            bytesOut = total(Self.bytesOutKey)
        }

        static let appliedShardsKey = "cohort.applied-shards"
        static let appliedShardElementsKey = "cohort.applied-shard-elements"
        static let trainSecondsKey = "cohort.train-seconds"
        static let bytesInKey = "cohort.bytes-in"
        static let bytesOutKey = "cohort.bytes-out"

        init(model: Model, optimizer: Optimizer, optimizerState: FlatBuffer, step: Int) {
            self.model = model
            self.optimizer = optimizer
            self.optimizerState = optimizerState
            self.step = step
        }

        /// Starts keeping θ̃ (equal to θ: what a (re)joining worker fetches).
        func keepReplica() {
            guard replica == nil else { return }
            let r = FlatBuffer(count: model.parameterCount)
            r.baseAddress.update(from: model.parameters.baseAddress, count: model.parameterCount)
            replica = r
            difference = FlatBuffer(count: model.parameterCount)
        }
    }

    init(job: Job.ID, spec: JobSpec, members: [String], state: TrainingState?, site: [String: TrainingNotice.Site] = [:]) {
        self.job = job
        self.spec = spec
        self.members = members
        self.site = site
        uplink = members.filter { site[$0]?.role != .member }
        self.state = state
        shardElements = Self.shardElements(spec, resuming: state)
        encoding = ShardEncoding(named: spec.training.shardEncoding.rawValue) ?? .fp32
        downlink = ShardCodec(ShardEncoding(named: spec.training.downlinkEncoding.rawValue) ?? .fp32, topKFraction: spec.training.topKFraction)
    }

    var steps: Int { spec.training.steps }

    /// Elements per shard: the spec's (`shard-size-kib`, or its encoding's default), except in
    /// a step some of whose shards were already updated (a run resumed mid-step, from memory or
    /// from a checkpoint). The layout those shards were counted in is kept then, so that their
    /// indices name the same ranges even if the default changed in between (a checkpoint of an
    /// older version). A checkpoint that does not record it is from before bf16 and fp16 took
    /// 2^19-element shards by default, when every encoding's default was 2^18.
    static func shardElements(_ spec: JobSpec, resuming state: TrainingState?) -> Int {
        let fromSpec = spec.training.shardSizeKiB * 256 // fp32 elements per shard
        guard let state, !state.appliedThisStep.isEmpty else { return fromSpec }
        return state.appliedShardElements ?? (spec.training.shardSizeKiBIsSet ? fromSpec : 1024 * 256)
    }

    func assignment(rank: Int) -> TrainingNotice.Assignment {
        var a = TrainingNotice.Assignment(job: job, spec: "", rank: rank, worldSize: members.count, shardElements: shardElements,
                                          encoding: spec.training.shardEncoding.rawValue)
        a.site = site[members[rank]]
        return a
    }

    /// Whether every member has loaded its data and attached its data connection.
    /// The member that carries `member`'s contribution to the coordinator: its site's delegate,
    /// or itself.
    func uplinkMember(of member: String) -> String {
        guard let role = site[member], role.role == .member else { return member }
        return uplink.first { site[$0]?.role == .delegate && site[$0]?.endpoint == role.endpoint } ?? member
    }

    var everyoneReady: Bool { members.allSatisfy { ready[$0] != nil } && uplink.allSatisfy { dataIdentity[$0] != nil } }

    /// Builds (or keeps) the authoritative model once every member agrees on it.
    func start() throws {
        let descriptions = Set(ready.values.compactMap { try? JSONDecoder().decode(ModelDescription.self, from: Data($0.model.utf8)) })
        guard descriptions.count == 1, let description = descriptions.first else {
            throw TrainingError("members built different models from the spec (their datasets differ?): "
                                + ready.map { "\($0.key): \($0.value.model)" }.sorted().joined(separator: "; "))
        }
        if spec.data.sharding == .shared {
            let hashes = Set(ready.values.map { $0.contentHash ?? "-" })
            guard hashes.count == 1 else {
                throw TrainingError("the members' copies of dataset `\(spec.data.dataset)` differ (content hashes \(hashes.sorted().joined(separator: ", "))); `shared` sharding needs identical data")
            }
        } else {
            // `per-site`: the data differ, but a text model's vocabulary belongs to the job (members
            // report its hash; nil for datasets without one).
            let vocabularies = Set(ready.values.compactMap(\.contentHash))
            guard vocabularies.count <= 1 else {
                throw TrainingError("the members' vocabularies for dataset `\(spec.data.dataset)` differ (\(vocabularies.sorted().joined(separator: ", "))); one job maps characters to one set of ids")
            }
        }
        // The workers' report fills in the sizes that come from their data, nothing else.
        guard spec.modelDescription(filling: description) == description else {
            throw TrainingError("the members built a model the job's spec does not describe: \(ready.values.first?.model ?? "")")
        }
        if let state, state.step > 0, state.model.modelDescription != description {
            // Never start over silently: the trained parameters stay, the job fails with why.
            throw TrainingError("the members built a different model from the one trained to step \(state.step) "
                                + "(their datasets changed?): \(ready.values.first?.model ?? "")")
        }
        if state == nil || state!.model.modelDescription != description {
            let model = try Model(description, seed: spec.seed)
            let optimizer = spec.coordinatorOptimizer
            state = TrainingState(model: model, optimizer: optimizer, optimizerState: optimizer.makeState(parameterCount: model.parameterCount), step: 0)
        }
        let layout = ShardLayout(parameterCount: state!.model.parameterCount, shardElements: shardElements)
        aggregator = StepAggregator(job: UInt64(job), layout: layout, encoding: encoding,
                                    kind: spec.training.mode == .local ? .delta : .gradient, topKFraction: spec.training.topKFraction)
        if downlink.encoding != .fp32 {
            state!.keepReplica()
            downbox = EncodedShards(codec: downlink, parameterCount: layout.parameterCount, shardElements: shardElements)
        }
        aggregator!.begin(step: UInt64(state!.step), members: Set(uplink))
        phase = state!.step >= steps ? .finishing : .training
        stepStartedAt = Date()
    }

    /// Sends parameter shard k, the parameters for computing step `step`, to every member:
    /// the shard itself (fp32), or under a lossy downlink θ − θ̃ encoded, which is then added to
    /// θ̃ exactly as the workers add it. Zero-copy from the parameter buffer (or the encoded
    /// slot). Safe because members are fixed for a run: shard k changes again only when every
    /// member sent its next contribution, which each does only after it received all of these.
    func sendParameters(shard k: Int, forStep step: Int, on tcp: Socket, ipc: Socket?) throws {
        guard let state, let aggregator else { return }
        let range = aggregator.layout.range(k)
        let params = state.model.parameters
        let payload: UnsafeRawBufferPointer, owner: any AnyObject & Sendable, kind: ShardKind
        if let downbox, let replica = state.replica, let difference = state.difference {
            payload = downbox.encodeDifference(shard: k, target: params.baseAddress, replica: replica.baseAddress,
                                               scratch: difference.baseAddress)
            (owner, kind) = (downbox, .delta)
        } else {
            payload = UnsafeRawBufferPointer(start: params.baseAddress + range.lowerBound, count: range.count * 4)
            (owner, kind) = (params, .parameters)
        }
        let header = ShardHeader(job: UInt64(job), step: UInt64(step), kind: kind, encoding: kind == .delta ? downlink.encoding : .fp32,
                                 shard: UInt32(k), shardCount: UInt32(aggregator.layout.shardCount),
                                 elementOffset: UInt64(range.lowerBound), elementCount: UInt32(range.count), sampleCount: 0)
        send(header, payload, owner: owner, on: tcp, ipc: ipc)
    }

    /// A run's start: every member fetches the whole of θ̃ (θ under an fp32 downlink), unless
    /// every member already holds it (their own initialisation from the spec's seed, checked by
    /// digest): then a `start` notice, and the first round does not wait for a megabyte of
    /// parameters through a TCP connection still in slow start.
    func sendStartParameters(forStep step: Int, on tcp: Socket, ipc: Socket?) throws {
        guard let state, let aggregator else { return }
        let source = state.replica ?? state.model.parameters
        let digest = source.digest
        if members.allSatisfy({ ready[$0]?.parametersDigest == digest }),
           let notice = try? Notice(kind: NoticeKind.start, json: TrainingNotice.Start(job: job, step: step)) {
            let bytes = Message.notice(notice).encode()
            for member in uplink {
                guard let identity = dataIdentity[member] else { continue }
                try? dataSocket(member, tcp, ipc).send([.bytes(identity), .bytes(bytes)])
            }
            return
        }
        for k in 0..<aggregator.layout.shardCount {
            let range = aggregator.layout.range(k)
            let header = ShardHeader(job: UInt64(job), step: UInt64(step), kind: .parameters, encoding: .fp32, shard: UInt32(k),
                                     shardCount: UInt32(aggregator.layout.shardCount), elementOffset: UInt64(range.lowerBound),
                                     elementCount: UInt32(range.count), sampleCount: 0)
            send(header, UnsafeRawBufferPointer(start: source.baseAddress + range.lowerBound, count: range.count * 4), owner: source, on: tcp, ipc: ipc)
        }
    }

    /// Whether this job's shards may go through shared memory: fp32 both ways, no overlap (a
    /// worker rewrites its contribution segment only after the parameters it waits for came,
    /// which with overlap it does not wait for).
    var sharedMemoryFits: Bool {
        encoding == .fp32 && downlink.encoding == .fp32 && !spec.training.overlap
    }

    /// Offers every member on the ipc endpoint (outside a site's reduction) segments in
    /// /dev/shm whose names start with `namePrefix`: one for the run's parameters, one per
    /// member for its contributions. A member uses them once it answers; until then its shards
    /// go through the socket.
    func offerSharedMemory(namePrefix: String, on ipc: Socket) throws {
        guard sharedMemoryFits, let state, let aggregator else { return }
        let candidates = uplink.compactMap { member -> (member: String, rank: Int, identity: [UInt8])? in
            guard dataOverIPC[member] == true, site[member] == nil, let identity = dataIdentity[member],
                  let rank = members.firstIndex(of: member) else { return nil }
            return (member, rank, identity)
        }
        guard !candidates.isEmpty else { return }
        let n = state.model.parameterCount, shards = aggregator.layout.shardCount
        let tag = "\(SharedSegment.directory)/\(namePrefix)\(job)-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        // Every segment first: if one cannot be made (a full /dev/shm), nobody is offered any.
        let parameters = try SharedSegment(creating: "\(tag)-parameters", elements: n, shards: shards)
        let segments = try candidates.map { c in
            (c.member, c.identity, try SharedSegment(creating: "\(tag)-\(c.rank)", elements: n, shards: 0))
        }
        parameterSegment = parameters
        for (member, identity, segment) in segments {
            let body = TrainingNotice.SharedMemory(job: job, parameters: parameters.path, contributions: segment.path,
                                                   parameterCount: n, shardCount: shards)
            guard (try? ipc.send([.bytes(identity), .bytes(Message.notice(try Notice(kind: NoticeKind.sharedMemory, json: body)).encode())])) != nil
            else { continue }
            offered[member] = segment
        }
    }

    /// A member mapped its segments: from now on its shards and parameters go through them.
    func sharedMemoryAccepted(by member: String, _ answer: TrainingNotice.SharedMemory) {
        guard let segment = offered[member], answer.contributions == segment.path else { return }
        offered[member] = nil
        shared[member] = segment
    }

    /// The data socket a member attached on (ipc on the coordinator's host, else tcp).
    private func dataSocket(_ member: String, _ tcp: Socket, _ ipc: Socket?) -> Socket {
        dataOverIPC[member] == true ? (ipc ?? tcp) : tcp
    }

    private func send(_ header: ShardHeader, _ payload: UnsafeRawBufferPointer, owner: any AnyObject & Sendable, on tcp: Socket, ipc: Socket?) {
        let envelope = Message.shard(header).encode()
        var sharedEnvelope: [UInt8]? // set once the shard is in the parameter segment
        for member in uplink {
            guard let identity = dataIdentity[member] else { continue }
            let frames: [OutboundFrame], bytes: Int
            if let segment = parameterSegment, shared[member] != nil, !lagging.contains(member),
               header.kind == .parameters, header.encoding == .fp32, let source = payload.baseAddress {
                if sharedEnvelope == nil {
                    // Written once, under the segment's sequence lock, so that a member that fell
                    // behind sees a rewrite instead of a torn shard.
                    segment.publish(shard: Int(header.shard), step: Int(header.step), from: source.assumingMemoryBound(to: Float.self),
                                    offset: Int(header.elementOffset), count: Int(header.elementCount))
                    sharedEnvelope = Message.sharedShard(header).encode()
                }
                (frames, bytes) = ([.bytes(identity), .bytes(sharedEnvelope!)], sharedEnvelope!.count)
            } else if lagging.contains(member) {
                let queued = queuedSinceHeard[member] ?? 0
                guard queued < Self.maxQueuedCopies * 4 * (aggregator?.layout.parameterCount ?? 0) else { continue }
                queuedSinceHeard[member] = queued + payload.count
                (frames, bytes) = ([.bytes(identity), .bytes(envelope), .bytes(Array(payload))], envelope.count + payload.count)
            } else {
                (frames, bytes) = ([.bytes(identity), .bytes(envelope), .zeroCopy(payload, owner: owner)], envelope.count + payload.count)
            }
            // A member that vanished: its heartbeats lapse and the run restarts without it.
            guard (try? dataSocket(member, tcp, ipc).send(frames)) != nil else { continue }
            bytesOut += bytes
            memberBytesOut[member, default: 0] += bytes
        }
    }

    func sendAllParameters(forStep step: Int, on tcp: Socket, ipc: Socket?) throws {
        guard let aggregator else { return }
        for k in 0..<aggregator.layout.shardCount { try sendParameters(shard: k, forStep: step, on: tcp, ipc: ipc) }
    }

    /// Applies the optimizer to shard k with the fused gradient.
    func applyShard(_ k: Int, gradientScale: Float = 1) {
        guard let state, let aggregator, state.appliedThisStep.insert(k).inserted else { return }
        state.appliedShardElements = shardElements
        let range = aggregator.layout.range(k)
        let lr = spec.coordinatorLearningRate(step: state.step)
        state.optimizer.step(range: range, parameters: state.model.parameters.buffer, gradientOfRange: aggregator.gradient(shard: k),
                             state: state.optimizerState.buffer, learningRate: lr, t: state.step / spec.stepsPerRound + 1,
                             gradientScale: gradientScale)
        aggregator.release(shard: k)
    }

    /// The global gradient norm over every shard (for clip-norm, once all are complete).
    func gradientNorm() -> Float {
        guard let aggregator else { return 0 }
        var sum = 0.0
        for k in 0..<aggregator.layout.shardCount { sum += GradientClipping.sumOfSquares(aggregator.gradient(shard: k)) }
        return Float(sum.squareRoot())
    }

    /// Whether test metrics are expected after `step` steps.
    func evaluates(after step: Int) -> Bool {
        step == steps || (spec.evalEvery > 0 && step % spec.evalEvery == 0)
    }
}

/// A job that cannot train as specified; the loop fails it with this reason.
struct TrainingError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension TrainingNotice.Metrics {
    /// Why the coordinator cannot take these metrics: a step that is not an evaluation step up to
    /// `reached` (it would sit in `JobRun.metrics` for good), or counts and times that no
    /// evaluation gives (summed, Int.max would trap). Nil when they are plausible.
    func problem(reached: Int, evaluates: (Int) -> Bool) -> String? {
        guard step >= 0, step <= reached, evaluates(step) else {
            return "metrics for step \(step), which is not an evaluation step of this job up to step \(reached)"
        }
        guard (0...(1 << 40)).contains(count), (0...count).contains(correct) else {
            return "metrics of \(correct) correct out of \(count) examples"
        }
        guard lossSum.isFinite, lossSum >= 0 else { return "a loss sum of \(lossSum)" }
        if let t = evalSeconds, !(t >= 0 && t <= 1e7) { return "an evaluation time of \(t) s" }
        if let b = bytesSent, !(0...(1 << 56)).contains(b) { return "\(b) bytes sent" }
        return nil
    }
}
