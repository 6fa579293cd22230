import Foundation

/// A training job as the coordinator keeps it.
public struct Job: Sendable, Hashable, Codable {
    public typealias ID = Int64

    /// The lifecycle (docs/architecture.md draws it). Every change goes through
    /// `Store.transition`, which refuses any edge not listed in `allowedNext`.
    public enum State: String, Sendable, Hashable, Codable, CaseIterable {
        /// Accepted, not yet placed.
        case queued
        /// Could not be placed (or lost workers below its minimum); `reason` says why.
        case waiting
        case running
        case completed
        case failed
        case cancelled

        public var allowedNext: Set<State> {
            switch self {
            case .queued: return [.waiting, .running, .cancelled, .failed]
            case .waiting: return [.running, .cancelled, .failed]
            case .running: return [.waiting, .completed, .failed, .cancelled]
            case .completed: return []
            // Only an explicit resume takes a failed or cancelled job back to the queue.
            case .failed, .cancelled: return [.queued]
            }
        }

        public var isFinished: Bool { self == .completed || self == .failed || self == .cancelled }
    }

    public var id: ID
    public var name: String
    public var owner: String
    public var spec: String
    public var state: State
    /// Why the job is where it is, in words a person understands; set whenever it is not progressing.
    public var reason: String?
    public var priority: Int
    public var minWorkers: Int
    public var maxWorkers: Int
    /// Allowed institutions (empty: any).
    public var institutions: [String]
    public var minCores: Int
    public var minMemoryBytes: Int64
    public var requestKey: String?
    public var submittedAt: Date
    public var stateChangedAt: Date
    /// When the job entered each state it has been in (the latest time for repeated ones).
    public var stateTimes: [State: Date]
    public var step: Int
    public var totalSteps: Int
}

extension Job {
    /// The job `new` will be once stored, for deciding its placement before it is written.
    public static func provisional(_ new: NewJob, at now: Date = Date()) -> Job {
        Job(id: 0, name: new.name, owner: new.owner, spec: new.spec, state: .queued, reason: nil, priority: new.priority,
            minWorkers: new.minWorkers, maxWorkers: new.maxWorkers, institutions: new.institutions, minCores: new.minCores,
            minMemoryBytes: new.minMemoryBytes, requestKey: nil, submittedAt: now, stateChangedAt: now, stateTimes: [:],
            step: 0, totalSteps: new.totalSteps)
    }
}

/// The placement requirements and identity of a job being submitted.
public struct NewJob: Sendable, Hashable {
    public var name: String
    public var owner: String
    public var spec: String
    public var priority: Int
    public var minWorkers: Int
    public var maxWorkers: Int
    public var institutions: [String]
    public var minCores: Int
    public var minMemoryBytes: Int64
    public var totalSteps: Int

    public init(name: String, owner: String, spec: String, priority: Int = 0, minWorkers: Int = 1,
                maxWorkers: Int = 1, institutions: [String] = [], minCores: Int = 1, minMemoryBytes: Int64 = 0,
                totalSteps: Int = 0) {
        self.name = name
        self.owner = owner
        self.spec = spec
        self.priority = priority
        self.minWorkers = minWorkers
        self.maxWorkers = maxWorkers
        self.institutions = institutions
        self.minCores = minCores
        self.minMemoryBytes = minMemoryBytes
        self.totalSteps = totalSteps
    }
}

/// A worker daemon at an institution.
public struct Worker: Sendable, Hashable, Codable {
    public typealias ID = Int64

    public enum State: String, Sendable, Hashable, Codable, CaseIterable {
        case idle, busy, lost, gone
    }

    public var id: ID
    public var name: String
    public var institution: String
    public var cores: Int
    public var memoryBytes: Int64
    public var accelerators: [String]
    public var state: State
    public var lastHeartbeat: Date
    public var registeredAt: Date
    /// The job it runs, when busy.
    public var jobId: Job.ID?
}

/// What a worker says about itself when it registers.
public struct WorkerRegistration: Sendable, Hashable, Codable {
    public var name: String
    public var institution: String
    public var cores: Int
    public var memoryBytes: Int64
    public var accelerators: [String]

    public init(name: String, institution: String, cores: Int, memoryBytes: Int64, accelerators: [String] = []) {
        self.name = name
        self.institution = institution
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.accelerators = accelerators
    }
}

/// A worker's place in a running job.
public struct Assignment: Sendable, Hashable, Codable {
    public var jobId: Job.ID
    public var workerId: Worker.ID
    public var rank: Int
}

/// One line of the append-only audit trail.
public struct Event: Sendable, Hashable, Codable {
    public var id: Int64
    public var at: Date
    /// Who did it: a principal, "coordinator", "scheduler", a worker's name.
    public var actor: String
    public var kind: String
    public var jobId: Job.ID?
    public var workerId: Worker.ID?
    public var detail: String
}

/// The one error type of CohortStore.
public enum StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    case notFound(String)
    case illegalTransition(job: Job.ID, from: Job.State, to: Job.State)
    case conflict(String)
    case database(String)

    public var description: String {
        switch self {
        case let .notFound(what): return "\(what) does not exist"
        case let .illegalTransition(job, from, to):
            if from.isFinished && to != .queued { return "job \(job) is already \(from); it cannot become \(to)" }
            return "job \(job) is \(from); it cannot become \(to)"
        case let .conflict(what): return what
        case let .database(what): return "database error: \(what)"
        }
    }
}
