import CohortCompute
import CohortSpec
import CohortStore
import CohortTransport
import CohortWire
import Foundation
import Logging

extension CoordinatorLoop {
    // MARK: - Runs

    /// A job was placed: tell each member to take it.
    func startRun(_ id: Job.ID) {
        do {
            let job = try store.job(id)
            let spec = try JobSpec.parse(yaml: job.spec, source: "job \(id)")
            let members = try store.assignedWorkerNames(of: id)
            let state = try suspended.removeValue(forKey: id) ?? loadCheckpoint(job: id)
            let run = JobRun(job: id, spec: spec, members: members, state: state,
                             site: spec.training.reduction == .institution ? try sites(of: members, job: id) : [:])
            runs[id] = run
            for (rank, member) in members.enumerated() {
                var a = run.assignment(rank: rank)
                a.spec = job.spec
                sendNotice(to: member, kind: NoticeKind.assign, a)
            }
            try store.setReason(id, "loading data on \(members.joined(separator: ", "))")
        } catch {
            failJob(id, "cannot start: \(error)")
        }
    }

    /// `reduction: institution`: for each institution with two or more members, its first member
    /// that listens on a site endpoint becomes the delegate; the others send to it.
    func sites(of members: [String], job: Job.ID) throws -> [String: TrainingNotice.Site] {
        var byInstitution: [String: [(name: String, key: String)]] = [:]
        var order: [String] = []
        for name in members {
            guard let p = try store.principal(named: name) else { continue }
            if byInstitution[p.institution] == nil { order.append(p.institution) }
            byInstitution[p.institution, default: []].append((name, p.publicKey))
        }
        var out: [String: TrainingNotice.Site] = [:]
        for institution in order {
            let names = byInstitution[institution]!
            guard names.count >= 2 else { continue }
            guard let delegate = names.first(where: { siteEndpoints[$0.name] != nil }), let endpoint = siteEndpoints[delegate.name] else {
                logger.warning("no worker of the institution listens on a site endpoint (--site-listen); its members send to the coordinator directly",
                               metadata: ["job.id": "\(job)", "institution": "\(institution)"])
                continue
            }
            let others = names.filter { $0.name != delegate.name }
            out[delegate.name] = TrainingNotice.Site(role: .delegate, endpoint: endpoint, delegateKey: delegate.key,
                                                     members: Dictionary(uniqueKeysWithValues: others.map { ($0.name, $0.key) }))
            for o in others { out[o.name] = TrainingNotice.Site(role: .member, endpoint: endpoint, delegateKey: delegate.key) }
            logger.info("site reduction", metadata: ["job.id": "\(job)", "institution": "\(institution)", "delegate": "\(delegate.name)",
                                                     "members": "\(others.map(\.name))"])
        }
        return out
    }

    /// Ends a job's run (cancelled, waiting, failed, a member lost), keeping its training state
    /// so that the job's next run continues from it; tells the members to drop it.
    func endRun(_ id: Job.ID, reason: String, keepState: Bool = true) {
        guard let run = runs.removeValue(forKey: id) else { return }
        if endedRuns.count > 10_000 { endedRuns.removeAll() }
        endedRuns.insert(id)
        if keepState, let state = run.state { suspended[id] = state }
        for member in run.members { sendNotice(to: member, kind: NoticeKind.release, TrainingNotice.Release(job: id, reason: reason)) }
    }

    func failJob(_ id: Job.ID, _ reason: String) {
        logger.error("job failed", metadata: ["job.id": "\(id)", "reason": "\(reason)"])
        endRun(id, reason: reason, keepState: false)
        _ = try? store.transition(id, to: .failed, reason: reason, actor: "coordinator")
        workersChanged = true
    }

    /// A member of a running job was lost: the run restarts with the members that remain (its
    /// step in progress is redone), or the job waits when too few remain.
    func memberLost(_ id: Job.ID, reason: String = "a member was lost; restarting the step") {
        guard runs[id] != nil else { return }
        endRun(id, reason: reason)
        if (try? store.job(id).state) == .running { startRun(id) }
    }

    func sendNotice(to member: String, kind: String, _ body: some Encodable) {
        guard let identity = controlIdentity[member], let notice = try? Notice(kind: kind, json: body) else { return }
        send(control, to: identity, .notice(notice))
    }

    // MARK: - Control notices from workers

    func handleTrainingNotice(_ notice: Notice, from member: String) throws {
        switch notice.kind {
        case NoticeKind.ready:
            let ready = try notice.decodeBody(as: TrainingNotice.Ready.self)
            guard let run = runs[ready.job], run.members.contains(member) else { return }
            run.ready[member] = ready
            try beginIfReady(run)
        case NoticeKind.metrics:
            let m = try notice.decodeBody(as: TrainingNotice.Metrics.self)
            guard let run = runs[m.job], run.members.contains(member) else { return }
            if let problem = metricsProblem(m, run) {
                logger.warning("metrics refused", metadata: ["worker.name": "\(member)", "job.id": "\(run.job)", "reason": "\(problem)"])
                let key = "metrics/\(member)/\(run.state?.step ?? -1)"
                if rejectionLogged.insert(key).inserted {
                    try? store.recordEvent(actor: member, kind: "metrics.rejected", job: run.job, detail: problem)
                }
                return
            }
            run.metrics[m.step, default: [:]][member] = m
            try metricsArrived(run, step: m.step)
        case NoticeKind.decline:
            // A member that cannot load the job would leave it gathering for good: the job fails
            // with the member's reason (fix the site, then `cohort resume`).
            let d = try notice.decodeBody(as: TrainingNotice.Release.self)
            guard let run = runs[d.job], run.members.contains(member), run.phase == .gathering else { return }
            failJob(run.job, "\(member) cannot take the job: \(Self.oneLine(d.reason))")
        case NoticeKind.resync:
            let r = try notice.decodeBody(as: TrainingNotice.Release.self)
            guard let run = runs[r.job], run.members.contains(member) else { return }
            try resync(run, member, reason: Self.oneLine(r.reason))
        case NoticeKind.goodbye:
            // A worker stopping cleanly (SIGTERM): no need to wait for its heartbeats to lapse.
            if let worker = try store.worker(named: member), worker.state == .idle || worker.state == .busy {
                try workerGone(worker, reason: "it stopped (said goodbye)", now: Date())
            }
        case NoticeKind.progress:
            let p = try notice.decodeBody(as: TrainingNotice.Progress.self)
            guard let run = runs[p.job], run.members.contains(member) else { return }
            run.losses[member] = p
            if let rtt = p.rttMs { run.rttMs[member] = rtt }
        default:
            logger.info("unknown notice", metadata: ["kind": "\(notice.kind)", "from": "\(member)"])
        }
    }

    /// A member's replica of θ̃ is lost and it has dropped the job (`resync`). While the job
    /// trains, its run restarts: the step is redone and the start sends θ̃ whole to every
    /// member whose parameters do not match, which after a restart is every one past step 0.
    /// While it finishes, the member's final evaluation is no longer awaited. A run still
    /// gathering sends θ̃ whole anyway: the notice is ignored then. Only under a lossy downlink
    /// (with fp32 every step sends the whole parameters, and a worker never asks), and
    /// `maxResyncs` times per member and job: past that the member is left to the step
    /// deadlines, as a stalled one is.
    private func resync(_ run: JobRun, _ member: String, reason: String) throws {
        // Gathering: a stale one from the run before (it came ahead of the member's `ready`).
        guard run.phase == .training || run.phase == .finishing else { return }
        let key = "\(run.job)/\(member)"
        let count = resyncs[key, default: 0] + 1
        resyncs[key] = count
        let metadata: Logger.Metadata = ["job.id": "\(run.job)", "worker.name": "\(member)", "reason": "\(reason)"]
        let fp32 = run.spec.training.downlinkEncoding == .fp32
        if fp32 || count > Self.maxResyncs {
            // Said once per member and job: a member that repeats it cannot fill the log or the database.
            guard count == (fp32 ? 1 : Self.maxResyncs + 1) else { return }
            let why = fp32 ? "the job's downlink is fp32: every step sends the whole parameters"
                : "it asked \(Self.maxResyncs) times already; the step deadlines leave it out from now on"
            logger.warning("a member asked for the parameters again; not honoured", metadata: metadata.merging(["why": "\(why)"]) { a, _ in a })
            try? store.recordEvent(actor: member, kind: "member.resync", job: run.job, detail: "\(reason) (not honoured: \(why))")
            return
        }
        try? store.recordEvent(actor: member, kind: "member.resync", job: run.job, detail: reason)
        switch run.phase {
        case .training:
            logger.warning("a member lost its copy of the parameters; restarting the run to send them whole", metadata: metadata)
            memberLost(run.job, reason: "\(member) lost its copy of the parameters; restarting the step")
        case .finishing:
            // It will not evaluate: the job completes with the others' reports.
            run.lagging.insert(run.uplinkMember(of: member))
            if let step = run.state?.step { try metricsArrived(run, step: step) }
        default:
            break
        }
    }

    /// Why a member's metrics cannot be taken (see `TrainingNotice.Metrics.problem`).
    private func metricsProblem(_ m: TrainingNotice.Metrics, _ run: JobRun) -> String? {
        m.problem(reached: (run.state?.step ?? 0) + run.spec.stepsPerRound, evaluates: run.evaluates(after:))
    }

    private func beginIfReady(_ run: JobRun) throws {
        guard run.phase == .gathering, run.everyoneReady else { return }
        do { try run.start() } catch { return failJob(run.job, "\(error)") }
        guard let state = run.state else { return }
        try store.setReason(run.job, nil)
        logger.info("training started", metadata: ["job.id": "\(run.job)", "step": "\(state.step)", "members": "\(run.members.count)",
                                                   "parameters": "\(state.model.parameterCount)"])
        if settings.ipc && settings.sharedMemory, let ipcData {
            do {
                try run.offerSharedMemory(namePrefix: settings.sharedMemoryNamePrefix, on: ipcData)
                if let segment = run.parameterSegment {
                    logger.info("shared memory offered", metadata: ["job.id": "\(run.job)", "segments": "\(segment.path.dropLast("parameters".count))*",
                                                                    "members": "\(run.offered.keys.sorted())"])
                }
            } catch {
                logger.warning("no shared memory for the workers on this host; their shards go through the ipc socket",
                               metadata: ["job.id": "\(run.job)", "error": "\(error)"])
            }
        }
        try run.sendStartParameters(forStep: state.step, on: data, ipc: ipcData)
        if run.phase == .finishing { try metricsArrived(run, step: state.step) }
    }

    // MARK: - The data endpoint

    func handleData(_ socket: Socket, _ frames: [InboundFrame]) throws {
        let identity = frames[0].bytes
        let message: Message
        do { message = try decode(frames) } catch { return refuseMalformed(socket, identity, error) }
        let caller = caller(of: frames[1], identity: identity, ipc: socket === ipcData)
        let kind: String = if case let .notice(n) = message { n.kind } else { "shard" }
        if let denial = Access.denial(caller, kind, on: .data) { return deny(socket, identity, nil, caller, denial) }
        let member = caller.name
        switch message {
        case let .notice(n) where n.kind == NoticeKind.attach:
            let attach = try n.decodeBody(as: TrainingNotice.Attach.self)
            guard let run = runs[attach.job], run.members.contains(member) else { return }
            run.dataIdentity[member] = identity
            run.dataOverIPC[member] = socket === ipcData
            try beginIfReady(run)
        case let .notice(n) where n.kind == NoticeKind.sharedMemory:
            let answer = try n.decodeBody(as: TrainingNotice.SharedMemory.self)
            guard let run = runs[answer.job], run.members.contains(member) else { return }
            run.sharedMemoryAccepted(by: member, answer)
            logger.info("shards through shared memory", metadata: ["job.id": "\(run.job)", "worker.name": "\(member)"])
        case let .shard(header), let .sharedShard(header):
            // Job ids are positive Int64s: a larger u64 names no job (and must not trap).
            guard let job = Job.ID(exactly: header.job) else { return rejectShard(nil, member, "no job has id \(header.job)") }
            guard let run = runs[job], run.aggregator != nil, run.phase == .training else {
                // Frames still on the wire when a run ends (cancelled, completed, restarted) are
                // expected: dropped quietly. Anything else is refused and recorded.
                if endedRuns.contains(job) || runs[job] != nil { return }
                return rejectShard(nil, member, "no step of job \(header.job) is in progress")
            }
            // The member is reading and training again (a late shard included): copies may be
            // queued to it again.
            run.queuedSinceHeard.removeValue(forKey: member)
            if case .sharedShard = message {
                // The elements are in the member's contribution segment.
                guard let segment = run.shared[member] else {
                    return rejectShard(run, member, "a shared-memory shard, but no segment is shared with \(member)")
                }
                guard Int(header.elementOffset) + Int(header.elementCount) <= segment.elements else {
                    return rejectShard(run, member, "shard covers \(header.elementOffset)+\(header.elementCount), beyond the segment's \(segment.elements) elements")
                }
                let payload = UnsafeRawBufferPointer(start: segment.floats + Int(header.elementOffset), count: Int(header.elementCount) * 4)
                return try contribute(run, member, header, frames, payload: payload, owner: segment, writable: false)
            }
            try contribute(run, member, header, frames, payload: frames[2].unsafeBytes, owner: frames[2], writable: true)
        default:
            refuseMalformed(socket, identity, .invalidValue(field: "envelope.type", reason: "is \(message.type), not a data message"))
        }
    }

    /// One shard of a member's contribution: fused, completing its shard when it is the last;
    /// under `overlap`, a shard of the next round is kept until that round begins.
    /// `payload` is in `owner`: the shard's frame (`writable`: the aggregator may fuse into it),
    /// or a member's shared-memory segment (never written: the member can still change it).
    private func contribute(_ run: JobRun, _ member: String, _ header: ShardHeader, _ frames: [InboundFrame],
                            payload: UnsafeRawBufferPointer, owner: AnyObject, writable: Bool) throws {
        guard let aggregator = run.aggregator else { return }
        let outcome = withExtendedLifetime(frames) {
            aggregator.contribute(from: member, header: header, payload: payload, owner: owner, writable: writable)
        }
        refuseLate(run, aggregator)
        // What crossed the socket: a shared-memory shard's elements did not.
        let bytes = frames.dropFirst().reduce(0) { $0 + $1.count }
        switch outcome {
        case .failure(.staleStep) where run.spec.training.overlap && header.step == aggregator.step + UInt64(run.spec.stepsPerRound)
            && run.uplink.contains(member) && keepsEarly(run, aggregator, member, header):
            run.early.append((member, header, frames))
        case let .failure(rejection):
            rejectShard(run, member, rejection.description)
        case .success(.parked), .success(.fused):
            run.bytesIn += bytes
            memberSentShard(run, member, bytes: bytes)
        case let .success(.complete(k)):
            run.bytesIn += bytes
            memberSentShard(run, member, bytes: bytes)
            try shardComplete(run, k)
        }
    }

    /// Whether a shard of the next round is kept for it: one of the job's shards as its layout
    /// cuts them (its size checked when it was decoded), and the first from this member for
    /// that shard (recorded here). So each member keeps at most one round's shards, and no
    /// member can use up another's room.
    private func keepsEarly(_ run: JobRun, _ aggregator: StepAggregator, _ member: String, _ h: ShardHeader) -> Bool {
        let layout = aggregator.layout
        guard Int(h.shardCount) == layout.shardCount, h.shard < h.shardCount, h.encoding == aggregator.encoding else { return false }
        let r = layout.range(Int(h.shard))
        guard h.elementOffset == UInt64(r.lowerBound), h.elementCount == UInt32(r.count) else { return false }
        return run.earlyShards[member, default: []].insert(h.shard).inserted
    }

    private func memberSentShard(_ run: JobRun, _ member: String, bytes: Int) {
        run.shardsFrom[member, default: 0] += 1
        run.memberBytesIn[member, default: 0] += bytes
        let arrived = Date()
        let so = run.stepArrival[member]
        run.stepArrival[member] = (so?.first ?? arrived, arrived, (so?.bytes ?? 0) + bytes)
        if run.shardsFrom[member] == run.aggregator?.layout.shardCount {
            let now = Date()
            if run.firstMemberDoneAt == nil { run.firstMemberDoneAt = now }
            run.lastMemberDoneAt = now
        }
    }

    /// Past a step's deadline, its incomplete shards complete with the contributions that
    /// arrived (weighted among themselves); members that missed it are dropped from the step
    /// and recorded, and take part again from the next one.
    func checkDeadlines(now: Date) {
        // The end of a job: members that have not reported the final evaluation within the
        // grace are not waited for (alive but silent: an evaluation that failed, a hostile member).
        for run in runs.values where run.phase == .finishing {
            guard let since = run.finishingSince, let step = run.state?.step else { continue }
            let deadline = run.firstFinalReportAt?.addingTimeInterval(settings.evaluationGrace) ?? since.addingTimeInterval(10 * settings.evaluationGrace)
            guard now > deadline else { continue }
            do { try metricsArrived(run, step: step, waitingOver: true) } catch {
                logger.error("could not complete the job", metadata: ["job.id": "\(run.job)", "error": "\(error)"])
            }
        }
        for run in runs.values where run.phase == .training {
            guard let deadline = run.deadline(slack: settings.deadlineSlack), now > deadline, let aggregator = run.aggregator else { continue }
            let late = Set(run.uplink.filter { (run.shardsFrom[$0] ?? 0) < aggregator.layout.shardCount })
            guard !late.isEmpty else { continue }
            let open = (0..<aggregator.layout.shardCount).filter { !aggregator.isComplete(shard: $0) }
            guard !open.isEmpty else { continue } // the step is complete: nothing to give up on
            // A shard nobody sent cannot close: wait, and close none (a shard closed now would
            // be complete without its optimizer step, and the step could never end).
            guard open.allSatisfy({ !aggregator.arrived(shard: $0).isEmpty }) else { continue }
            let closed = open.filter { aggregator.close(shard: $0) }
            refuseLate(run, aggregator)
            run.droppedThisStep = late
            run.lagging.formUnion(late)
            let step = run.state?.step ?? 0
            logger.warning("members missed the step deadline; the step completes without them",
                           metadata: ["job.id": "\(run.job)", "step": "\(step)", "late": "\(late.sorted())"])
            try? store.recordEvent(actor: "coordinator", kind: "step.dropped", job: run.job,
                                   detail: "step \(step): \(late.sorted().joined(separator: ", ")) missed the deadline")
            do {
                for k in closed where run.state?.step == step { try shardComplete(run, k) }
            } catch {
                logger.error("could not finish the step", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Contributions the aggregator accepted and then found out of range when it fused them:
    /// rejected as on arrival, and the member's shard no longer counts as sent.
    private func refuseLate(_ run: JobRun, _ aggregator: StepAggregator) {
        for (member, rejection) in aggregator.takeLateRefusals() {
            if let sent = run.shardsFrom[member], sent > 0 { run.shardsFrom[member] = sent - 1 }
            rejectShard(run, member, "\(rejection.description) (found when it was fused with the next contribution)")
        }
    }

    private func rejectShard(_ run: JobRun?, _ member: String, _ reason: String) {
        stats.rejectedShards.add(1, ordering: .relaxed)
        logger.warning("shard rejected", metadata: ["worker.name": "\(member)", "reason": "\(reason)"])
        // Counted always; recorded once per member and step, so a flood cannot grow the database.
        let key = "\(member)/\(run?.state?.step ?? -1)"
        if rejectionLogged.insert(key).inserted {
            try? store.recordEvent(actor: member, kind: "shard.rejected", job: run?.job, detail: reason)
        }
    }

    private func shardComplete(_ run: JobRun, _ k: Int) throws {
        guard let state = run.state, let aggregator = run.aggregator else { return }
        run.completedShards += 1
        if run.spec.optimizer.clipNorm == nil {
            run.applyShard(k)
            try run.sendParameters(shard: k, forStep: state.step + run.spec.stepsPerRound, on: data, ipc: ipcData)
        }
        guard run.completedShards == aggregator.layout.shardCount else { return }
        if let maxNorm = run.spec.optimizer.clipNorm {
            // Global-norm clipping needs the whole gradient: every shard is applied after the last lands.
            let scale = GradientClipping.scale(norm: run.gradientNorm(), maxNorm: maxNorm)
            for j in 0..<aggregator.layout.shardCount { run.applyShard(j, gradientScale: scale) }
            try run.sendAllParameters(forStep: state.step + run.spec.stepsPerRound, on: data, ipc: ipcData)
        }
        try stepDone(run)
    }

    private func stepDone(_ run: JobRun) throws {
        guard let state = run.state, let aggregator = run.aggregator else { return }
        state.step += run.spec.stepsPerRound
        state.appliedThisStep.removeAll(keepingCapacity: true)
        run.completedShards = 0
        let elapsed = Date().timeIntervalSince(run.stepStartedAt)
        // Training time leaves out what members spent evaluating (reported with their metrics).
        let evaluating = min(state.evaluationDebt, elapsed)
        state.evaluationDebt -= evaluating
        state.trainSeconds += elapsed - evaluating
        if run.evaluates(after: state.step) { state.trainSecondsAt[state.step] = state.trainSeconds }
        let evaluated = state.step > run.spec.stepsPerRound && run.evaluates(after: state.step - run.spec.stepsPerRound)
        if !evaluated {
            // How long the members that made it took: stragglers do not stretch the deadline.
            let sample = (run.lastMemberDoneAt ?? Date()).timeIntervalSince(run.stepStartedAt)
            run.stepSeconds = run.stepSeconds.map { 0.8 * $0 + 0.2 * sample } ?? sample
        }
        if run.droppedThisStep.isEmpty {
            // A member that sent everything on time is keeping up again.
            run.lagging.subtract(run.uplink.filter { run.shardsFrom[$0] == aggregator.layout.shardCount })
        }
        for (member, a) in run.stepArrival {
            let span = a.last.timeIntervalSince(a.first)
            // The first shard's bytes arrived before the clock started: count the rest.
            let shards = max(run.shardsFrom[member] ?? 1, 1)
            guard span > 0.0005, shards > 1 else { continue }
            let rate = Double(a.bytes) * Double(shards - 1) / Double(shards) / span / 1e6
            run.bandwidth[member] = run.bandwidth[member].map { 0.8 * $0 + 0.2 * rate } ?? rate
        }
        run.stepArrival = [:]
        run.shardsFrom = [:]
        run.firstMemberDoneAt = nil
        run.lastMemberDoneAt = nil
        run.droppedThisStep = []
        run.samplesPerSecond = Double(run.spec.training.globalBatchSize * run.spec.stepsPerRound) / max(elapsed, 1e-9)
        run.stepStartedAt = Date()
        rejectionLogged.removeAll(keepingCapacity: true)
        if state.step - lastProgressWrite[run.job, default: -1_000_000] >= 50 || Date().timeIntervalSince(lastProgressAt) > 1 || state.step == run.steps {
            // The progress row and a periodic checkpoint are bookkeeping: if the disk is full or
            // the database busy, training goes on (the next one may succeed) instead of stalling
            // with the step advanced but the next one never begun.
            do {
                try store.setProgress(run.job, step: state.step)
                lastProgressWrite[run.job] = state.step
                lastProgressAt = Date()
            } catch {
                logger.error("could not record the job's progress", metadata: ["job.id": "\(run.job)", "error": "\(error)"])
            }
        }
        if run.spec.checkpointEvery > 0 && state.step % run.spec.checkpointEvery == 0 && state.step < run.steps {
            do { try writeCheckpoint(run) } catch {
                logger.error("could not write a checkpoint; training goes on", metadata: ["job.id": "\(run.job)", "step": "\(state.step)", "error": "\(error)"])
                try? store.recordEvent(actor: "coordinator", kind: "checkpoint.failed", job: run.job, detail: "step \(state.step): \(error)")
            }
        }
        if state.step >= run.steps {
            run.phase = .finishing
            try metricsArrived(run, step: state.step)
        } else {
            aggregator.begin(step: UInt64(state.step), members: Set(run.uplink))
            // `overlap`: what members already sent of this round.
            let early = run.early
            run.early = []
            for e in early where e.header.step == UInt64(state.step) && runs[run.job] === run && run.phase == .training {
                try contribute(run, e.member, e.header, e.frames, payload: e.frames[2].unsafeBytes, owner: e.frames[2], writable: true)
            }
        }
    }

    /// Records a step's test metrics once every member reported them; completes the job after
    /// the last step's. `waitingOver`: the final evaluation's grace ran out; what arrived is
    /// recorded (nothing, when no one reported) and the job completes.
    private func metricsArrived(_ run: JobRun, step: Int, waitingOver: Bool = false) throws {
        // Members that missed the last deadline are not waited for (they may never answer).
        // (A site member is behind its delegate: it keeps up when the delegate does.)
        let required = run.members.filter { !run.lagging.contains(run.uplinkMember(of: $0)) }
        let reports = run.metrics[step] ?? [:]
        if run.phase == .finishing, step >= run.steps, !reports.isEmpty, run.firstFinalReportAt == nil { run.firstFinalReportAt = Date() }
        if waitingOver {
            let silent = required.filter { reports[$0] == nil }.sorted()
            logger.warning("members did not report the final evaluation in time; the job completes without them",
                           metadata: ["job.id": "\(run.job)", "silent": "\(silent)"])
            try? store.recordEvent(actor: "coordinator", kind: "evaluation.incomplete", job: run.job,
                                   detail: "step \(step): no evaluation from \(silent.joined(separator: ", ")) within the grace of \(settings.evaluationGrace) s")
            guard !reports.isEmpty else { return try finish(run) }
        } else {
            guard !reports.isEmpty, required.allSatisfy({ reports[$0] != nil }) else { return }
        }
        // Each report was checked (metricsProblem); summed as Double, the totals cannot overflow.
        let count = reports.values.reduce(0.0) { $0 + Double($1.count) }
        let lossSum = reports.values.reduce(0) { $0 + $1.lossSum }
        let correct = reports.values.reduce(0.0) { $0 + Double($1.correct) }
        let trainLoss = run.losses.values.map(\.loss).reduce(0, +) / Double(max(run.losses.count, 1))
        var values = ["test_loss": lossSum / max(count, 1), "test_accuracy": correct / max(count, 1),
                      "samples_per_second": run.samplesPerSecond, "bytes_in": Double(run.bytesIn), "bytes_out": Double(run.bytesOut)]
        if !run.losses.isEmpty { values["train_loss"] = trainLoss }
        if let state = run.state {
            state.evaluationDebt += reports.values.compactMap(\.evalSeconds).max() ?? 0
            if let t = state.trainSecondsAt.removeValue(forKey: step) { values["train_seconds"] = t }
        }
        let sent = reports.values.compactMap(\.bytesSent)
        if !sent.isEmpty {
            values["bytes_sent_per_worker"] = sent.reduce(0.0) { $0 + Double($1) } / Double(sent.count)
            values["bytes_sent_max_worker"] = Double(sent.max()!)
        }
        try store.recordMetrics(job: run.job, step: step, values)
        run.metrics[step] = nil
        logger.info("evaluated", metadata: ["job.id": "\(run.job)", "step": "\(step)",
                                            "test.loss": "\(values["test_loss"]!)", "test.accuracy": "\(values["test_accuracy"]!)"])
        guard run.phase == .finishing, step >= run.steps else { return }
        try finish(run)
    }

    /// The job's last step and its evaluation are done: the final checkpoint, then completed.
    /// If the checkpoint cannot be written (a full disk), the job fails with why, keeping its
    /// state: `cohort resume` finishes it once the disk is fixed.
    private func finish(_ run: JobRun) throws {
        let path: String
        do { path = try writeCheckpoint(run) } catch {
            let reason = "the final checkpoint could not be written (\(error)); fix that and `cohort resume \(run.job)`"
            logger.error("job failed", metadata: ["job.id": "\(run.job)", "reason": "\(reason)"])
            endRun(run.job, reason: reason, keepState: true)
            try store.transition(run.job, to: .failed, reason: reason, actor: "coordinator")
            workersChanged = true
            return
        }
        run.phase = .done
        endRun(run.job, reason: "completed", keepState: false)
        try store.transition(run.job, to: .completed, reason: nil, actor: "coordinator")
        logger.notice("job completed", metadata: ["job.id": "\(run.job)", "checkpoint": "\(path)"])
        workersChanged = true
    }

    // MARK: - Checkpoints

    /// Parameters and optimizer state as safetensors (temporary name, fsync, rename), then a row
    /// in SQLite; the last `keepCheckpoints` of the job are kept.
    @discardableResult
    func writeCheckpoint(_ run: JobRun) throws -> String {
        guard let state = run.state else { return "" }
        return try writeCheckpoint(job: run.job, dataset: run.spec.data.dataset, state: state)
    }

    @discardableResult
    func writeCheckpoint(job: Job.ID, dataset: String, state: JobRun.TrainingState) throws -> String {
        let dir = URL(fileURLWithPath: settings.dataDirectory).appendingPathComponent("checkpoints/job-\(job)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("step-\(state.step).safetensors")
        let extra = state.checkpointMetadata.merging(["job": "\(job)", "dataset": dataset]) { own, _ in own }
        try ModelCheckpoint.write(to: url, model: state.model, optimizer: state.optimizer, state: state.optimizerState,
                                  step: state.step, extra: extra)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
        try store.recordCheckpoint(job: job, step: state.step, path: url.path, bytes: bytes)
        // Keep the newest few.
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        let steps = files.compactMap { f -> Int? in
            guard f.hasPrefix("step-"), f.hasSuffix(".safetensors") else { return nil }
            return Int(f.dropFirst(5).dropLast(12))
        }.sorted()
        for old in steps.dropLast(keepCheckpoints) {
            try? FileManager.default.removeItem(at: dir.appendingPathComponent("step-\(old).safetensors"))
        }
        return url.path
    }

    /// The training state of a job's newest readable checkpoint (after a coordinator restart);
    /// nil when the job has none. A checkpoint whose file is gone or does not read is skipped for
    /// the one before it (with a warning); if the job has checkpoints and none reads, this
    /// throws, and the job fails with why: it never starts over from step 0 unseen.
    func loadCheckpoint(job: Job.ID) throws -> JobRun.TrainingState? {
        let checkpoints = try store.checkpoints(job: job)
        guard !checkpoints.isEmpty else { return nil }
        let spec = try JobSpec.parse(yaml: try store.job(job).spec, source: "job \(job)")
        var problems: [String] = []
        for (step, path) in checkpoints {
            do {
                let url = URL(fileURLWithPath: path)
                let file = try Safetensors.read(from: url)
                guard let description = try CheckpointMetadata.model(file.metadata) else {
                    throw TrainingError("it records no model description")
                }
                let model = try Model(description, seed: spec.seed)
                let optimizer = spec.coordinatorOptimizer
                let state = optimizer.makeState(parameterCount: model.parameterCount)
                try ModelCheckpoint.read(from: url, into: model, optimizer: optimizer, state: state)
                logger.notice("resuming from checkpoint", metadata: ["job.id": "\(job)", "step": "\(step)", "path": "\(path)"])
                let training = JobRun.TrainingState(model: model, optimizer: optimizer, optimizerState: state, step: step)
                training.restore(from: file.metadata)
                return training
            } catch {
                logger.warning("a checkpoint cannot be read; trying the one before", metadata: ["job.id": "\(job)", "path": "\(path)", "error": "\(error)"])
                problems.append("step \(step) (\(path)): \(error)")
            }
        }
        throw TrainingError("none of the job's checkpoints can be read: " + problems.joined(separator: "; "))
    }

    /// A cancelled job's training state goes to disk (a checkpoint, unless the newest already
    /// holds it) instead of staying in memory until a resume that may never come; `cohort
    /// resume` continues from that checkpoint. Kept in memory only if it cannot be written.
    func persistSuspended(_ id: Job.ID) {
        guard let state = suspended[id] else { return }
        do {
            try checkpointIfNewer(job: id, dataset: nil, state: state, why: "on cancel")
            suspended[id] = nil
        } catch {
            logger.warning("keeping a cancelled job's state in memory: its checkpoint could not be written", metadata: ["job.id": "\(id)", "error": "\(error)"])
        }
    }

    /// A graceful stop (SIGTERM): every job's training state that is newer than its last
    /// checkpoint (running, or suspended while it waits) is written as one, so that the
    /// restarted coordinator resumes where this one stopped rather than at the last periodic
    /// checkpoint (or step 0: `checkpoint-every` is 0 by default). Mid-step, the checkpoint
    /// records which parameter shards the step had already updated.
    func checkpointOnStop() {
        let states = runs.values.compactMap { run in run.state.map { (run.job, Optional(run.spec.data.dataset), $0) } }
            + suspended.map { ($0.key, String?.none, $0.value) }
        for (id, dataset, state) in states {
            do { try checkpointIfNewer(job: id, dataset: dataset, state: state, why: "on stop") } catch {
                logger.error("could not write a checkpoint on stop", metadata: ["job.id": "\(id)", "error": "\(error)"])
            }
        }
    }

    /// Writes `state` as a checkpoint unless the job's newest already holds it (the same step,
    /// at a step boundary) or nothing was trained yet. `dataset` nil: read from the job's spec.
    private func checkpointIfNewer(job id: Job.ID, dataset: String?, state: JobRun.TrainingState, why: String) throws {
        if state.appliedThisStep.isEmpty {
            guard state.step > 0 else { return }
            guard try store.latestCheckpoint(job: id)?.step != state.step else { return }
        }
        let dataset = try dataset ?? JobSpec.parse(yaml: store.job(id).spec).data.dataset
        let path = try writeCheckpoint(job: id, dataset: dataset, state: state)
        logger.notice("checkpoint \(why)", metadata: ["job.id": "\(id)", "step": "\(state.step)", "path": "\(path)"])
    }
}
