import CohortStore
import Foundation

/// Placement, as a pure function: jobs (in the order they are considered) and workers in, the
/// placements and, for every job left unplaced, a reason a person understands, out.
///
/// Policy: FIFO within priority (higher first), with backfilling: a job that cannot be placed
/// reserves nothing, so a smaller job behind it may run on the workers that are free. A job
/// gets up to `maxWorkers` of the idle workers that fit it (institution allowed, enough cores and
/// memory), and is placed only when at least `minWorkers` fit. Jobs never share a worker.
public enum Scheduler {
    public struct Placement: Sendable, Hashable {
        public var job: Job.ID
        public var workers: [Worker.ID]
    }

    public struct Plan: Sendable, Hashable {
        public var placements: [Placement] = []
        /// For each job not placed: why.
        public var reasons: [Job.ID: String] = [:]
    }

    public static func plan(jobs: [Job], workers: [Worker], now: Date = Date()) -> Plan {
        var plan = Plan()
        var free = workers.filter { $0.state == .idle }.sorted { $0.id < $1.id }
        var takenBy: [Worker.ID: Job.ID] = [:]
        let sortedWorkers = workers.sorted { $0.id < $1.id }
        for job in jobs where job.state == .queued || job.state == .waiting {
            let fitting = free.isEmpty ? [] : free.filter { fits($0, job) }
            if fitting.count >= job.minWorkers {
                let chosen = Array(fitting.prefix(job.maxWorkers)).map(\.id)
                plan.placements.append(Placement(job: job.id, workers: chosen))
                free.removeAll { chosen.contains($0.id) }
                for w in chosen { takenBy[w] = job.id }
            } else {
                plan.reasons[job.id] = explain(job, fitting: fitting.count, workers: sortedWorkers, takenBy: takenBy, now: now)
            }
        }
        return plan
    }

    /// Running jobs below their maximum take idle workers that fit them (after every queued and
    /// waiting job had its chance): job → the workers it gains.
    public static func growth(running: [(job: Job, members: Int)], workers: [Worker]) -> [Job.ID: [Worker.ID]] {
        var free = workers.filter { $0.state == .idle }.sorted { $0.id < $1.id }
        var out: [Job.ID: [Worker.ID]] = [:]
        for (job, members) in running.sorted(by: { ($0.job.priority, -$0.job.id) > ($1.job.priority, -$1.job.id) })
        where job.state == .running && members < job.maxWorkers {
            let take = Array(free.filter { fits($0, job) }.prefix(job.maxWorkers - members)).map(\.id)
            guard !take.isEmpty else { continue }
            out[job.id] = take
            free.removeAll { take.contains($0.id) }
        }
        return out
    }

    static func fits(_ worker: Worker, _ job: Job) -> Bool {
        (job.institutions.isEmpty || job.institutions.contains(worker.institution))
            && worker.cores >= job.minCores && worker.memoryBytes >= job.minMemoryBytes
    }

    /// "needs 3 workers, 2 idle fit: pku-01 runs job 7, sjtu-02 lost at 10:42"; `workers` by id.
    static func explain(_ job: Job, fitting: Int, workers: [Worker], takenBy: [Worker.ID: Job.ID], now: Date) -> String {
        let noun = job.minWorkers == 1 ? "worker" : "workers"
        var head = "needs \(job.minWorkers) \(noun), \(fitting) idle \(fitting == 1 ? "fits" : "fit")"
        if workers.isEmpty { return head + ": no worker has registered yet" }
        // Only the first few notes are spelled out (and only they cost string formatting):
        // a pass over thousands of waiting jobs and workers stays cheap.
        var notes: [String] = []
        var more = 0
        for w in workers {
            let allowed = job.institutions.isEmpty || job.institutions.contains(w.institution)
            let notable = !allowed || w.cores < job.minCores || w.memoryBytes < job.minMemoryBytes
                || takenBy[w.id] != nil || w.state != .idle
            guard notable else { continue }
            guard notes.count < 6 else { more += 1; continue }
            if !allowed {
                notes.append("\(w.name) is at \(w.institution), not allowed")
            } else if w.cores < job.minCores {
                notes.append("\(w.name) has \(w.cores) cores, needs \(job.minCores)")
            } else if w.memoryBytes < job.minMemoryBytes {
                notes.append("\(w.name) has \(gib(w.memoryBytes)) GiB, needs \(gib(job.minMemoryBytes))")
            } else if let other = takenBy[w.id] {
                notes.append("\(w.name) goes to job \(other)")
            } else {
                switch w.state {
                case .busy: notes.append("\(w.name) runs job \(w.jobId.map(String.init) ?? "?")")
                case .lost: notes.append("\(w.name) lost at \(clock(w.lastHeartbeat))")
                case .gone: notes.append("\(w.name) left at \(clock(w.lastHeartbeat))")
                case .idle: break
                }
            }
        }
        if more > 0 { notes.append("and \(more) more") }
        if !notes.isEmpty { head += ": " + notes.joined(separator: ", ") }
        return head
    }

    static func gib(_ bytes: Int64) -> String {
        String(format: "%.0f", Double(bytes) / Double(1 << 30))
    }

    static func clock(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        localtime_r(&t, &parts)
        return String(format: "%02d:%02d:%02d", parts.tm_hour, parts.tm_min, parts.tm_sec)
    }
}

/// Liveness, as a pure function: a worker silent for `missedHeartbeats` intervals is lost.
public struct Registry: Sendable, Hashable {
    public var heartbeatInterval: TimeInterval
    public var missedHeartbeats: Int

    public init(heartbeatInterval: TimeInterval = 1, missedHeartbeats: Int = 5) {
        self.heartbeatInterval = heartbeatInterval
        self.missedHeartbeats = missedHeartbeats
    }

    public var lostAfter: TimeInterval { heartbeatInterval * Double(missedHeartbeats) }

    /// Workers alive in the database but silent for too long.
    public func lost(_ workers: [Worker], now: Date) -> [Worker] {
        workers.filter { ($0.state == .idle || $0.state == .busy) && now.timeIntervalSince($0.lastHeartbeat) > lostAfter }
    }
}
