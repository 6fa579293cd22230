import CohortStore
import CohortTransport
import CohortWire
import Foundation

extension CoordinatorLoop {
    func handleControl(_ socket: Socket, _ frames: [InboundFrame]) throws {
        let identity = frames[0].bytes
        let message: Message
        do { message = try decode(frames) } catch { return refuseMalformed(socket, identity, error) }
        switch message {
        case let .apiRequest(request) where request.method == ApiMethod.register:
            let r: RegisterRequest
            do { r = try JSONDecoder().decode(RegisterRequest.self, from: Data(request.body)) } catch {
                return fail(socket, identity, request, .badRequest, "register: the body is not a RegisterRequest")
            }
            guard !r.name.isEmpty, r.name.count <= 128, !r.institution.isEmpty, r.cores > 0, r.memoryBytes >= 0 else {
                return fail(socket, identity, request, .badRequest, "register: name and institution must be non-empty, cores positive")
            }
            let worker = try store.register(WorkerRegistration(name: r.name, institution: r.institution, cores: r.cores,
                                                               memoryBytes: r.memoryBytes, accelerators: r.accelerators))
            workerByIdentity[identity] = worker.id
            lastSeen[worker.id] = Date()
            logger.info("worker registered", metadata: ["worker.id": "\(worker.id)", "worker.name": "\(r.name)"])
            reply(socket, identity, request, RegisterReply(workerId: worker.id,
                                                           heartbeatIntervalMs: Int(settings.registry.heartbeatInterval * 1000)))
            schedule(now: Date())
        case let .heartbeat(beat):
            guard let id = workerByIdentity[identity] else {
                return send(socket, to: identity, .error(ErrorMessage(code: .rejected, message: "unknown worker: register before sending heartbeats")))
            }
            stats.heartbeats.add(1, ordering: .relaxed)
            lastSeen[id] = Date()
            dirtyHeartbeats.insert(id)
            send(socket, to: identity, .heartbeat(beat)) // echoed so the worker can measure the round trip
        case let .apiRequest(request):
            fail(socket, identity, request, .badRequest, "unknown control method `\(request.method)`")
        default:
            refuseMalformed(socket, identity, .invalidValue(field: "envelope.type", reason: "is \(message.type), not a control message"))
        }
    }

    /// Liveness, then scheduling.
    func tick(now: Date) {
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
                let silent = Int(now.timeIntervalSince(worker.lastHeartbeat))
                let job = try store.markLost(worker.id, reason: "no heartbeat for \(silent) s", at: now)
                logger.warning("worker lost", metadata: ["worker.name": "\(worker.name)", "silent.s": "\(silent)"])
                if let job { try jobLostWorker(job, worker: worker, now: now) }
            }
        } catch {
            logger.error("liveness check failed", metadata: ["error": "\(error)"])
        }
        schedule(now: now)
    }

    /// A running job whose members fall below its minimum waits, with the reason.
    private func jobLostWorker(_ id: Job.ID, worker: Worker, now: Date) throws {
        let job = try store.job(id)
        guard job.state == .running else { return }
        let remaining = try store.assignments(of: id).count
        if remaining < job.minWorkers {
            try store.transition(id, to: .waiting,
                                 reason: "lost \(worker.name) at \(Scheduler.clock(now)); needs \(job.minWorkers) workers, has \(remaining)",
                                 actor: "registry", at: now)
        }
    }

    func schedule(now: Date) {
        do {
            let jobs = try store.schedulableJobs()
            guard !jobs.isEmpty else { return }
            let plan = Scheduler.plan(jobs: jobs, workers: try store.workers(), now: now)
            for p in plan.placements {
                try store.start(p.job, on: p.workers, at: now)
                logger.info("job placed", metadata: ["job.id": "\(p.job)", "workers": "\(p.workers.count)"])
            }
            for job in jobs {
                guard let reason = plan.reasons[job.id] else { continue }
                if job.state == .queued {
                    try store.transition(job.id, to: .waiting, reason: reason, actor: "scheduler", at: now)
                } else if job.reason != reason {
                    try store.setReason(job.id, reason)
                }
            }
        } catch {
            logger.error("scheduling failed", metadata: ["error": "\(error)"])
        }
    }

    func flushHeartbeats() {
        guard !dirtyHeartbeats.isEmpty else { return }
        let beats = dirtyHeartbeats.compactMap { id in lastSeen[id].map { (id, $0) } }
        dirtyHeartbeats.removeAll()
        do { try store.recordHeartbeats(beats) } catch {
            logger.error("could not record heartbeats", metadata: ["error": "\(error)"])
        }
    }
}
