import CohortStore
import CohortTransport
import CohortWire
import Foundation

extension CoordinatorLoop {
    func handleControl(_ socket: Socket, _ frames: [InboundFrame]) throws {
        let identity = frames[0].bytes
        let message: Message
        do { message = try decode(frames) } catch { return refuseMalformed(socket, identity, error) }
        let caller = caller(of: frames[1])
        var method = "heartbeat"
        if case let .apiRequest(r) = message { method = r.method }
        if case let .notice(n) = message { method = n.kind }
        if let denial = Access.denial(caller, method, on: .control) {
            if case let .apiRequest(r) = message { return deny(socket, identity, r, caller, denial) }
            return deny(socket, identity, nil, caller, denial)
        }
        switch message {
        case let .apiRequest(request) where request.method == ApiMethod.register:
            let r: RegisterRequest
            do { r = try JSONDecoder().decode(RegisterRequest.self, from: Data(request.body)) } catch {
                return fail(socket, identity, request, .badRequest, "register: the body is not a RegisterRequest")
            }
            guard !r.name.isEmpty, r.name.count <= 128, r.cores > 0, r.memoryBytes >= 0 else {
                return fail(socket, identity, request, .badRequest, "register: name must be non-empty, cores positive")
            }
            // The institution is the one the worker's key was enrolled under, never what it claims.
            // Likewise its name: one worker record per enrolled key, so no key can take over another's.
            var institution = r.institution, name = r.name
            if case let .principal(p) = caller { institution = p.institution; name = p.name }
            let worker = try store.register(WorkerRegistration(name: name, institution: institution, cores: r.cores,
                                                               memoryBytes: r.memoryBytes, accelerators: r.accelerators))
            // A worker that registers again (a new connection, after a restart on either side)
            // replaces its old identity: the map holds one per worker, not one per connection ever made.
            workerByIdentity = workerByIdentity.filter { $0.value != worker.id }
            workerByIdentity[identity] = worker.id
            stats.workerConnections.store(workerByIdentity.count, ordering: .relaxed)
            controlIdentity[name] = identity
            siteEndpoints[name] = r.siteEndpoint
            lastSeen[worker.id] = Date()
            logger.info("worker registered", metadata: ["worker.id": "\(worker.id)", "worker.name": "\(name)"])
            // A worker on this host gets the ipc data endpoint and a session id naming it there.
            var ipcEndpoint: String?, session: String?
            if ipcData != nil, case let .principal(p) = caller, Self.isLocal(frames[1].property("Peer-Address")) {
                var rng = SystemRandomNumberGenerator()
                let id = (0..<16).map { i in UInt8.random(in: (i == 0 ? 1 : 0)...255, using: &rng) } // ids must not start with 0
                ipcSessions = ipcSessions.filter { $0.value.name != p.name }
                ipcSessions[id] = p
                ipcEndpoint = settings.ipcDataEndpoint
                session = id.map { String(format: "%02x", $0) }.joined()
            }
            reply(socket, identity, request, RegisterReply(workerId: worker.id,
                                                           heartbeatIntervalMs: Int(settings.registry.heartbeatInterval * 1000),
                                                           ipcData: ipcEndpoint, session: session))
            workersChanged = true
            // A member of a run that is still gathering (it restarted, or the assignment was
            // sent before it reconnected) is told again.
            for run in runs.values where run.phase == .gathering {
                if let rank = run.members.firstIndex(of: name), run.ready[name] == nil, let spec = try? store.job(run.job).spec {
                    var a = run.assignment(rank: rank)
                    a.spec = spec
                    sendNotice(to: name, kind: NoticeKind.assign, a)
                }
            }
        case let .heartbeat(beat):
            guard let id = workerByIdentity[identity] else {
                return send(socket, to: identity, .error(ErrorMessage(code: .rejected, message: "unknown worker: register before sending heartbeats")))
            }
            stats.heartbeats.add(1, ordering: .relaxed)
            lastSeen[id] = Date()
            // A worker declared lost that beats again is reachable on this connection again.
            if case let .principal(p) = caller, controlIdentity[p.name] == nil { controlIdentity[p.name] = identity }
            dirtyHeartbeats.insert(id)
            send(socket, to: identity, .heartbeat(beat)) // echoed so the worker can measure the round trip
        case let .notice(notice):
            try handleTrainingNotice(notice, from: caller.name)
        case let .apiRequest(request):
            fail(socket, identity, request, .badRequest, "unknown control method `\(request.method)`")
        default:
            refuseMalformed(socket, identity, .invalidValue(field: "envelope.type", reason: "is \(message.type), not a control message"))
        }
    }

    /// Liveness, then scheduling. Heartbeats already waiting on the socket are taken first:
    /// a worker must never be declared lost because the coordinator itself fell behind.
    func tick(now: Date) {
        drainControl()
        flushHeartbeats()
        do {
            let workers = try store.workers()
            // The database's heartbeat time lags by up to a tick; the loop's own is exact.
            let current = workers.map { w -> Worker in
                var w = w
                if let seen = lastSeen[w.id], seen > w.lastHeartbeat { w.lastHeartbeat = seen }
                return w
            }
            for worker in settings.registry.lost(current, now: now) {
                let silent = now.timeIntervalSince(worker.lastHeartbeat)
                try workerGone(worker, reason: String(format: "no heartbeat for %.1f s", silent), now: now)
            }
        } catch {
            logger.error("liveness check failed", metadata: ["error": "\(error)"])
        }
        if workersChanged { schedule(now: now) }
    }

    static func isLocal(_ address: String?) -> Bool {
        guard let a = address else { return false }
        return a == "127.0.0.1" || a == "::1" || a.hasPrefix("127.") || a == "::ffff:127.0.0.1"
    }

    /// A worker is gone (silent, or it said goodbye): its assignment is released and its job told.
    func workerGone(_ worker: Worker, reason: String, now: Date) throws {
        let job = try store.markLost(worker.id, reason: reason, at: now)
        workersChanged = true
        controlIdentity[worker.name] = nil
        logger.warning("worker lost", metadata: ["worker.name": "\(worker.name)", "reason": "\(reason)"])
        if let job { try jobLostWorker(job, worker: worker, now: now) }
    }

    /// A running job whose members fall below its minimum waits, with the reason.
    private func jobLostWorker(_ id: Job.ID, worker: Worker, now: Date) throws {
        let job = try store.job(id)
        guard job.state == .running else { return }
        let remaining = try store.assignments(of: id).count
        if remaining < job.minWorkers {
            endRun(id, reason: "lost \(worker.name); waiting for workers")
            try store.transition(id, to: .waiting,
                                 reason: "lost \(worker.name) at \(Scheduler.clock(now)); needs \(job.minWorkers) workers, has \(remaining)",
                                 actor: "registry", at: now)
        } else {
            memberLost(id)
        }
    }

    /// A full pass: every queued and waiting job against every worker. Runs when workers
    /// changed (registered, lost, returned, freed), so that reasons stay true.
    func schedule(now: Date) {
        workersChanged = false
        do {
            let jobs = try store.schedulableJobs()
            if !jobs.isEmpty { apply(Scheduler.plan(jobs: jobs, workers: try placeableWorkers(), now: now), to: jobs, now: now) }
            try growRunningJobs(now: now)
        } catch {
            logger.error("scheduling failed", metadata: ["error": "\(error)"])
        }
    }

    /// Workers left idle join running jobs below their maximum, at the next step boundary:
    /// the run restarts with the new members from the parameters it has (the step in progress
    /// is redone), and the global batch is re-split among them.
    private func growRunningJobs(now: Date) throws {
        let running = try store.jobs(state: .running, limit: 100_000).filter { $0.maxWorkers > 1 }
        guard !running.isEmpty else { return }
        let sizes = try running.map { ($0, try store.assignments(of: $0.id).count) }
        for (job, gained) in Scheduler.growth(running: sizes, workers: try placeableWorkers()) {
            try store.grow(job, with: gained, at: now)
            logger.info("job grows", metadata: ["job.id": "\(job)", "workers": "\(gained.count)"])
            endRun(job, reason: "more workers joined; restarting at the step boundary")
            startRun(job)
        }
    }

    /// A new job alone: when no worker changed since the last full pass, every job already
    /// waiting still cannot be placed, so only the new one needs a look.
    func scheduleNewJob(_ job: Job, now: Date) {
        if workersChanged { return schedule(now: now) }
        do {
            apply(Scheduler.plan(jobs: [job], workers: try placeableWorkers(), now: now), to: [job], now: now)
        } catch {
            logger.error("scheduling failed", metadata: ["error": "\(error)"])
        }
    }

    private func apply(_ plan: Scheduler.Plan, to jobs: [Job], now: Date) {
        do {
            try store.start(plan.placements.map { ($0.job, $0.workers) }, at: now)
            for p in plan.placements {
                logger.info("job placed", metadata: ["job.id": "\(p.job)", "workers": "\(p.workers.count)"])
                startRun(p.job)
            }
            var changedReasons: [(Job.ID, String?)] = []
            for job in jobs {
                guard let reason = plan.reasons[job.id] else { continue }
                if job.state == .queued {
                    try store.transition(job.id, to: .waiting, reason: reason, actor: "scheduler", at: now)
                } else if job.reason != reason {
                    changedReasons.append((job.id, reason))
                }
            }
            try store.setReasons(changedReasons)
        } catch {
            logger.error("scheduling failed", metadata: ["error": "\(error)"])
        }
    }

    /// Workers as the scheduler should see them: one that this coordinator process has not heard
    /// register (after a restart) cannot be told about a job yet, so it counts as not there.
    func placeableWorkers() throws -> [Worker] {
        try store.workers().map { w in
            var w = w
            if w.state == .idle && controlIdentity[w.name] == nil { w.state = .lost }
            return w
        }
    }

    func flushHeartbeats() {
        guard !dirtyHeartbeats.isEmpty else { return }
        let beats = dirtyHeartbeats.compactMap { id in lastSeen[id].map { (id, $0) } }
        dirtyHeartbeats.removeAll()
        do { if try store.recordHeartbeats(beats) > 0 { workersChanged = true } } catch {
            logger.error("could not record heartbeats", metadata: ["error": "\(error)"])
        }
    }
}
