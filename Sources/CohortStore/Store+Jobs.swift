import Foundation
import GRDB

extension Store {
    /// Records a new job in state `queued`, or straight in `waiting` with `waitingReason` when the
    /// caller already knows it cannot be placed (one transaction, one fsync). With a `requestKey`
    /// that was seen before, returns the job that key created and `created == false`: a retried
    /// submit never makes a second job.
    public func submit(_ new: NewJob, requestKey: String?, waitingReason: String? = nil,
                       at now: Date = Date()) throws(StoreError) -> (job: Job, created: Bool) {
        try write { db in
            if let requestKey, let existing = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE request_key = ?", arguments: [requestKey]) {
                return (try Self.job(from: existing), false)
            }
            let t = now.timeIntervalSince1970
            try db.execute(sql: """
                INSERT INTO jobs (name, owner, spec, state, reason, priority, min_workers, max_workers, institutions,
                                  min_cores, min_memory_bytes, request_key, submitted_at, state_changed_at, queued_at, total_steps)
                VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [new.name, new.owner, new.spec, "queued: waiting for the scheduler", new.priority,
                                 new.minWorkers, new.maxWorkers, new.institutions.joined(separator: ","), new.minCores,
                                 new.minMemoryBytes, requestKey, t, t, t, new.totalSteps])
            let id = db.lastInsertedRowID
            try Self.appendEvent(db, at: now, actor: new.owner, kind: "job.submitted", job: id, detail: new.name)
            if let waitingReason {
                return (try Self.transition(db, id, to: .waiting, reason: waitingReason, actor: "scheduler", at: now), true)
            }
            return (try Self.fetchJob(db, id), true)
        }
    }

    public func job(_ id: Job.ID) throws(StoreError) -> Job {
        try read { db in try Self.fetchJob(db, id) }
    }

    /// Jobs, newest first, optionally only those in `state`.
    /// The newest jobs (of one state, of one owner, when given), at most `limit`.
    public func jobs(state: Job.State? = nil, owner: String? = nil, limit: Int = 1000) throws(StoreError) -> [Job] {
        try read { db in
            var conditions: [String] = [], arguments: [any DatabaseValueConvertible] = []
            if let state { conditions.append("state = ?"); arguments.append(state.rawValue) }
            if let owner { conditions.append("owner = ?"); arguments.append(owner) }
            arguments.append(limit)
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ") + " "
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM jobs \(filter)ORDER BY id DESC LIMIT ?", arguments: StatementArguments(arguments))
            return try rows.map(Self.job(from:))
        }
    }

    /// Jobs the scheduler considers, in the order it considers them: priority, then FIFO.
    public func schedulableJobs() throws(StoreError) -> [Job] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE state IN ('queued','waiting') ORDER BY priority DESC, id")
                .map(Self.job(from:))
        }
    }

    /// Moves a job to `state` with its reason, in one transaction with its event. Refuses any
    /// transition the state machine does not allow. A finished job's workers are released.
    @discardableResult
    public func transition(_ id: Job.ID, to state: Job.State, reason: String?, actor: String,
                           at now: Date = Date()) throws(StoreError) -> Job {
        try write { db in try Self.transition(db, id, to: state, reason: reason, actor: actor, at: now) }
    }

    static func transition(_ db: Database, _ id: Job.ID, to state: Job.State, reason: String?, actor: String,
                           at now: Date) throws -> Job {
        let job = try fetchJob(db, id)
        guard job.state.allowedNext.contains(state) else {
            throw StoreError.illegalTransition(job: id, from: job.state, to: state)
        }
        let t = now.timeIntervalSince1970
        try db.execute(sql: "UPDATE jobs SET state = ?, reason = ?, state_changed_at = ?, \(state.rawValue)_at = ? WHERE id = ?",
                       arguments: [state.rawValue, reason, t, t, id])
        if state.isFinished || state == .waiting {
            try releaseAssignments(db, job: id, at: now)
        }
        try appendEvent(db, at: now, actor: actor, kind: "job.\(state.rawValue)", job: id, detail: reason ?? "")
        return try fetchJob(db, id)
    }

    /// Updates why a job is not progressing, without changing its state (no event: reasons are
    /// refreshed by every scheduling pass; transitions carry their own).
    public func setReason(_ id: Job.ID, _ reason: String?) throws(StoreError) {
        try write { db in
            try db.execute(sql: "UPDATE jobs SET reason = ? WHERE id = ?", arguments: [reason, id])
        }
    }

    /// Updates many jobs' reasons in one transaction (a scheduling pass over thousands of
    /// waiting jobs must not cost thousands of fsyncs).
    public func setReasons(_ reasons: [(Job.ID, String?)]) throws(StoreError) {
        guard !reasons.isEmpty else { return }
        try write { db in
            for (id, reason) in reasons {
                try db.execute(sql: "UPDATE jobs SET reason = ? WHERE id = ?", arguments: [reason, id])
            }
        }
    }

    /// Records how far a running job has got.
    public func setProgress(_ id: Job.ID, step: Int) throws(StoreError) {
        try write { db in try db.execute(sql: "UPDATE jobs SET step = ? WHERE id = ?", arguments: [step, id]) }
    }

    static func fetchJob(_ db: Database, _ id: Job.ID) throws -> Job {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]) else {
            throw StoreError.notFound("job \(id)")
        }
        return try job(from: row)
    }

    static func job(from row: Row) throws -> Job {
        var times: [Job.State: Date] = [:]
        for s in Job.State.allCases {
            if let t: Double = row["\(s.rawValue)_at"] { times[s] = Date(timeIntervalSince1970: t) }
        }
        let stateText: String = row["state"]
        guard let state = Job.State(rawValue: stateText) else { throw StoreError.database("job has unknown state \(stateText)") }
        let institutions: String = row["institutions"]
        return Job(id: row["id"], name: row["name"], owner: row["owner"], spec: row["spec"], state: state,
                   reason: row["reason"], priority: row["priority"], minWorkers: row["min_workers"],
                   maxWorkers: row["max_workers"],
                   institutions: institutions.split(separator: ",").map(String.init),
                   minCores: row["min_cores"], minMemoryBytes: row["min_memory_bytes"], requestKey: row["request_key"],
                   submittedAt: Date(timeIntervalSince1970: row["submitted_at"]),
                   stateChangedAt: Date(timeIntervalSince1970: row["state_changed_at"]),
                   stateTimes: times, step: row["step"], totalSteps: row["total_steps"])
    }
}

extension Store {
    /// Records named metrics of a step (test loss, accuracy, samples/s) in one transaction.
    public func recordMetrics(job: Job.ID, step: Int, _ values: [String: Double], at now: Date = Date()) throws(StoreError) {
        try write { db in
            for (name, value) in values {
                try db.execute(sql: "INSERT OR REPLACE INTO metrics (job_id, step, name, value, at) VALUES (?, ?, ?, ?, ?)",
                               arguments: [job, step, name, value, now.timeIntervalSince1970])
            }
        }
    }

    /// The latest value of each metric of a job.
    public func latestMetrics(job: Job.ID) throws(StoreError) -> [String: (step: Int, value: Double)] {
        try read { db in
            var out: [String: (step: Int, value: Double)] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT name, step, value FROM metrics WHERE job_id = ? ORDER BY step", arguments: [job]) {
                out[row["name"]] = (row["step"], row["value"])
            }
            return out
        }
    }

    /// Records a checkpoint file that is already durable on disk, with its event.
    public func recordCheckpoint(job: Job.ID, step: Int, path: String, bytes: Int, at now: Date = Date()) throws(StoreError) {
        try write { db in
            try db.execute(sql: "INSERT INTO checkpoints (job_id, step, path, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [job, step, path, bytes, now.timeIntervalSince1970])
            try Self.appendEvent(db, at: now, actor: "coordinator", kind: "checkpoint.written", job: job, detail: "step \(step): \(path)")
        }
    }

    /// A job's checkpoints, newest first.
    public func checkpoints(job: Job.ID) throws(StoreError) -> [(step: Int, path: String)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT step, path FROM checkpoints WHERE job_id = ? ORDER BY step DESC, id DESC", arguments: [job])
                .map { ($0["step"], $0["path"]) }
        }
    }

    /// The newest checkpoint of a job, if any.
    public func latestCheckpoint(job: Job.ID) throws(StoreError) -> (step: Int, path: String)? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT step, path FROM checkpoints WHERE job_id = ? ORDER BY step DESC, id DESC LIMIT 1", arguments: [job])
                .map { ($0["step"], $0["path"]) }
        }
    }
}
