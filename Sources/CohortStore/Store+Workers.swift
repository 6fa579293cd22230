import Foundation
import GRDB

extension Store {
    /// Registers a worker (or updates a known one by name) and marks it alive and idle, unless
    /// it still holds an assignment (a coordinator restart: it goes on with its job).
    @discardableResult
    public func register(_ r: WorkerRegistration, at now: Date = Date()) throws(StoreError) -> Worker {
        try write { db in
            let t = now.timeIntervalSince1970
            try db.execute(sql: "INSERT OR IGNORE INTO institutions (name, created_at) VALUES (?, ?)", arguments: [r.institution, t])
            let institution = try Int64.fetchOne(db, sql: "SELECT id FROM institutions WHERE name = ?", arguments: [r.institution])!
            let accelerators = r.accelerators.joined(separator: ",")
            if let id = try Int64.fetchOne(db, sql: "SELECT id FROM workers WHERE name = ?", arguments: [r.name]) {
                let busy = try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM assignments WHERE worker_id = ? AND released_at IS NULL)", arguments: [id]) ?? false
                try db.execute(sql: """
                    UPDATE workers SET institution_id = ?, cores = ?, memory_bytes = ?, accelerators = ?, state = ?, last_heartbeat = ?
                    WHERE id = ?
                    """, arguments: [institution, r.cores, r.memoryBytes, accelerators, busy ? "busy" : "idle", t, id])
                try Self.appendEvent(db, at: now, actor: r.name, kind: "worker.registered", worker: id, detail: "re-registered")
                return try Self.fetchWorker(db, id)
            }
            try db.execute(sql: """
                INSERT INTO workers (name, institution_id, cores, memory_bytes, accelerators, state, last_heartbeat, registered_at)
                VALUES (?, ?, ?, ?, ?, 'idle', ?, ?)
                """, arguments: [r.name, institution, r.cores, r.memoryBytes, accelerators, t, t])
            let id = db.lastInsertedRowID
            try Self.appendEvent(db, at: now, actor: r.name, kind: "worker.registered", worker: id, detail: r.institution)
            return try Self.fetchWorker(db, id)
        }
    }

    /// Records a heartbeat. A worker that was declared lost comes back as idle.
    public func heartbeat(_ id: Worker.ID, at now: Date = Date()) throws(StoreError) {
        try write { db in
            try db.execute(sql: "UPDATE workers SET last_heartbeat = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, id])
            guard db.changesCount == 1 else { throw StoreError.notFound("worker \(id)") }
            try db.execute(sql: "UPDATE workers SET state = 'idle' WHERE id = ? AND state = 'lost'", arguments: [id])
            if db.changesCount == 1 {
                try Self.appendEvent(db, at: now, actor: "registry", kind: "worker.returned", worker: id)
            }
        }
    }

    /// Declares a worker lost: releases its assignment and records the event. Returns the job
    /// it was running, if any, so the caller can tell the job.
    @discardableResult
    public func markLost(_ id: Worker.ID, reason: String, at now: Date = Date()) throws(StoreError) -> Job.ID? {
        try write { db in
            let job = try Int64.fetchOne(db, sql: "SELECT job_id FROM assignments WHERE worker_id = ? AND released_at IS NULL", arguments: [id])
            try db.execute(sql: "UPDATE workers SET state = 'lost' WHERE id = ?", arguments: [id])
            try db.execute(sql: "UPDATE assignments SET released_at = ? WHERE worker_id = ? AND released_at IS NULL",
                           arguments: [now.timeIntervalSince1970, id])
            try Self.appendEvent(db, at: now, actor: "registry", kind: "worker.lost", job: job, worker: id, detail: reason)
            return job
        }
    }

    public func workers() throws(StoreError) -> [Worker] {
        try read { db in
            try Row.fetchAll(db, sql: Self.workerSelect + " ORDER BY w.id").map(Self.worker(from:))
        }
    }

    public func worker(named name: String) throws(StoreError) -> Worker? {
        try read { db in try Row.fetchOne(db, sql: Self.workerSelect + " WHERE w.name = ?", arguments: [name]).map(Self.worker(from:)) }
    }

    /// Places a job on workers (rank = position) and marks it running, in one transaction.
    @discardableResult
    public func start(_ job: Job.ID, on workers: [Worker.ID], actor: String = "scheduler", at now: Date = Date()) throws(StoreError) -> Job {
        try write { db in try Self.start(db, job, on: workers, actor: actor, at: now) }
    }

    /// Places many jobs in one transaction (a scheduling pass after many workers arrived).
    public func start(_ placements: [(job: Job.ID, workers: [Worker.ID])], actor: String = "scheduler", at now: Date = Date()) throws(StoreError) {
        guard !placements.isEmpty else { return }
        try write { db in
            for p in placements { _ = try Self.start(db, p.job, on: p.workers, actor: actor, at: now) }
        }
    }

    /// Adds workers to a running job (it had fewer than its maximum), in one transaction.
    public func grow(_ job: Job.ID, with workers: [Worker.ID], actor: String = "scheduler", at now: Date = Date()) throws(StoreError) {
        try write { db in
            var rank = (try Int.fetchOne(db, sql: "SELECT MAX(rank) FROM assignments WHERE job_id = ? AND released_at IS NULL", arguments: [job]) ?? -1) + 1
            var names: [String] = []
            for worker in workers {
                try db.execute(sql: "INSERT INTO assignments (job_id, worker_id, rank, assigned_at) VALUES (?, ?, ?, ?)",
                               arguments: [job, worker, rank, now.timeIntervalSince1970])
                try db.execute(sql: "UPDATE workers SET state = 'busy' WHERE id = ?", arguments: [worker])
                names += try String.fetchAll(db, sql: "SELECT name FROM workers WHERE id = ?", arguments: [worker])
                rank += 1
            }
            try Self.appendEvent(db, at: now, actor: actor, kind: "job.grown", job: job, detail: names.joined(separator: ","))
        }
    }

    static func start(_ db: Database, _ job: Job.ID, on workers: [Worker.ID], actor: String, at now: Date) throws -> Job {
        let t = now.timeIntervalSince1970
        var names: [String] = []
        for (rank, worker) in workers.enumerated() {
            try db.execute(sql: "INSERT INTO assignments (job_id, worker_id, rank, assigned_at) VALUES (?, ?, ?, ?)",
                           arguments: [job, worker, rank, t])
            try db.execute(sql: "UPDATE workers SET state = 'busy' WHERE id = ?", arguments: [worker])
            names += try String.fetchAll(db, sql: "SELECT name FROM workers WHERE id = ?", arguments: [worker])
        }
        try appendEvent(db, at: now, actor: actor, kind: "job.placed", job: job, detail: names.joined(separator: ","))
        return try transition(db, job, to: .running, reason: nil, actor: actor, at: now)
    }

    /// The names of a job's current workers, by rank.
    public func assignedWorkerNames(of job: Job.ID) throws(StoreError) -> [String] {
        try read { db in
            try String.fetchAll(db, sql: """
                SELECT w.name FROM assignments a JOIN workers w ON w.id = a.worker_id
                WHERE a.job_id = ? AND a.released_at IS NULL ORDER BY a.rank
                """, arguments: [job])
        }
    }

    /// Current worker names of every job that has any, in one query.
    public func assignedWorkerNames() throws(StoreError) -> [Job.ID: [String]] {
        try read { db in
            var out: [Job.ID: [String]] = [:]
            for row in try Row.fetchAll(db, sql: """
                SELECT a.job_id, w.name FROM assignments a JOIN workers w ON w.id = a.worker_id
                WHERE a.released_at IS NULL ORDER BY a.job_id, a.rank
                """) {
                out[row["job_id"], default: []].append(row["name"])
            }
            return out
        }
    }

    /// The open assignments of a job, by rank.
    public func assignments(of job: Job.ID) throws(StoreError) -> [Assignment] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT job_id, worker_id, rank FROM assignments WHERE job_id = ? AND released_at IS NULL ORDER BY rank",
                             arguments: [job]).map { Assignment(jobId: $0["job_id"], workerId: $0["worker_id"], rank: $0["rank"]) }
        }
    }

    static func releaseAssignments(_ db: Database, job: Job.ID, at now: Date) throws {
        try db.execute(sql: """
            UPDATE workers SET state = 'idle'
            WHERE state = 'busy' AND id IN (SELECT worker_id FROM assignments WHERE job_id = ? AND released_at IS NULL)
            """, arguments: [job])
        try db.execute(sql: "UPDATE assignments SET released_at = ? WHERE job_id = ? AND released_at IS NULL",
                       arguments: [now.timeIntervalSince1970, job])
    }

    static let workerSelect = """
        SELECT w.*, i.name AS institution,
               (SELECT job_id FROM assignments a WHERE a.worker_id = w.id AND a.released_at IS NULL) AS job_id
        FROM workers w JOIN institutions i ON i.id = w.institution_id
        """

    static func fetchWorker(_ db: Database, _ id: Worker.ID) throws -> Worker {
        guard let row = try Row.fetchOne(db, sql: workerSelect + " WHERE w.id = ?", arguments: [id]) else {
            throw StoreError.notFound("worker \(id)")
        }
        return try worker(from: row)
    }

    static func worker(from row: Row) throws -> Worker {
        let stateText: String = row["state"]
        guard let state = Worker.State(rawValue: stateText) else { throw StoreError.database("worker has unknown state \(stateText)") }
        let accelerators: String = row["accelerators"]
        return Worker(id: row["id"], name: row["name"], institution: row["institution"], cores: row["cores"],
                      memoryBytes: row["memory_bytes"], accelerators: accelerators.split(separator: ",").map(String.init),
                      state: state, lastHeartbeat: Date(timeIntervalSince1970: row["last_heartbeat"]),
                      registeredAt: Date(timeIntervalSince1970: row["registered_at"]), jobId: row["job_id"])
    }
}

extension Store {
    /// Records many heartbeats in one transaction. Lost workers that beat again come back idle;
    /// returns how many did.
    @discardableResult
    public func recordHeartbeats(_ beats: [(Worker.ID, Date)]) throws(StoreError) -> Int {
        try write { db in
            var returned = 0
            for (id, at) in beats {
                try db.execute(sql: "UPDATE workers SET last_heartbeat = ? WHERE id = ?", arguments: [at.timeIntervalSince1970, id])
                try db.execute(sql: "UPDATE workers SET state = 'idle' WHERE id = ? AND state = 'lost'", arguments: [id])
                if db.changesCount == 1 {
                    returned += 1
                    try Self.appendEvent(db, at: at, actor: "registry", kind: "worker.returned", worker: id)
                }
            }
            return returned
        }
    }
}
