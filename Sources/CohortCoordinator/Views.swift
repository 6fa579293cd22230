import CohortStore
import CohortWire

extension JobView {
    init(_ job: Job, workers: [String]) {
        var times: [String: Double] = [:]
        for (state, date) in job.stateTimes { times[state.rawValue] = date.timeIntervalSince1970 }
        self.init(id: job.id, name: job.name, owner: job.owner, state: job.state.rawValue, reason: job.reason,
                  priority: job.priority, minWorkers: job.minWorkers, maxWorkers: job.maxWorkers, workers: workers,
                  step: job.step, totalSteps: job.totalSteps, submittedAt: job.submittedAt.timeIntervalSince1970,
                  stateChangedAt: job.stateChangedAt.timeIntervalSince1970, stateTimes: times)
    }
}

extension WorkerView {
    init(_ w: Worker) {
        self.init(id: w.id, name: w.name, institution: w.institution, state: w.state.rawValue, cores: w.cores,
                  memoryBytes: w.memoryBytes, accelerators: w.accelerators, job: w.jobId,
                  lastHeartbeat: w.lastHeartbeat.timeIntervalSince1970)
    }
}

extension EventView {
    init(_ e: Event) {
        self.init(id: e.id, at: e.at.timeIntervalSince1970, actor: e.actor, kind: e.kind, job: e.jobId, worker: e.workerId, detail: e.detail)
    }
}

extension PrincipalView {
    init(_ p: Principal) {
        self.init(name: p.name, institution: p.institution, role: p.role.rawValue, publicKey: p.publicKey,
                  createdAt: p.createdAt.timeIntervalSince1970, revokedAt: p.revokedAt?.timeIntervalSince1970)
    }
}
