#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Api methods and their JSON bodies. Later issues add theirs here the same way.
public enum ApiMethod {
    /// Open to every caller: the coordinator's endpoints, protocol version and public key.
    public static let hello = "hello"
}

/// The body of the reply to `hello`.
public struct HelloReply: Sendable, Hashable, Codable {
    public var protocolVersion: Int
    public var endpoints: Endpoints
    /// The coordinator's CURVE public key (Z85), when CURVE is on.
    public var publicKey: String?
    public var software: String

    public init(protocolVersion: Int = Int(Envelope.version), endpoints: Endpoints, publicKey: String?, software: String) {
        self.protocolVersion = protocolVersion
        self.endpoints = endpoints
        self.publicKey = publicKey
        self.software = software
    }
}

/// The body of every non-ok `ApiReply`.
public struct ApiErrorBody: Sendable, Hashable, Codable {
    public var error: String
    public init(error: String) { self.error = error }
}

extension ApiRequest {
    /// A request whose body is `value` as JSON.
    public init(requestId: UInt64, method: String, json value: some Encodable) throws {
        self.init(requestId: requestId, method: method, body: Array(try JSONEncoder().encode(value)))
    }
}

extension ApiReply {
    /// A reply whose body is `value` as JSON.
    public init(requestId: UInt64, status: Status = .ok, json value: some Encodable) throws {
        self.init(requestId: requestId, status: status, body: Array(try JSONEncoder().encode(value)))
    }

    /// The body decoded as `T`; an error status surfaces as the error text it carries.
    public func decodeBody<T: Decodable>(as type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(body))
    }
}

// MARK: - Jobs and workers (coordinator issue)

extension ApiMethod {
    public static let submit = "submit"
    public static let jobs = "jobs"
    public static let status = "status"
    public static let cancel = "cancel"
    public static let workers = "workers"
    public static let events = "events"
    /// The job's latest checkpoint, a chunk at a time: body `DownloadRequest`, reply body the raw
    /// bytes (a chunk shorter than asked for is the last).
    public static let download = "download"
    /// A failed or cancelled job back to the queue; it continues from its last checkpoint.
    public static let resume = "resume"
    /// Control endpoint: a worker announces itself and its capabilities.
    public static let register = "register"
}

/// `submit`: the job spec's YAML text and a client-chosen id that makes retries idempotent.
public struct SubmitRequest: Sendable, Hashable, Codable {
    public var spec: String
    public var requestId: String
    public init(spec: String, requestId: String) {
        self.spec = spec
        self.requestId = requestId
    }
}

/// `submit`'s reply: the job, and whether this request created it (false for a retry).
public struct SubmitReply: Sendable, Hashable, Codable {
    public var job: JobView
    public var created: Bool
    public init(job: JobView, created: Bool) {
        self.job = job
        self.created = created
    }
}

/// `jobs`: optionally only jobs in one state.
public struct JobsRequest: Sendable, Hashable, Codable {
    public var state: String?
    public var limit: Int?
    public init(state: String? = nil, limit: Int? = nil) {
        self.state = state
        self.limit = limit
    }
}

public struct JobsReply: Sendable, Hashable, Codable {
    public var jobs: [JobView]
    public init(jobs: [JobView]) { self.jobs = jobs }
}

/// `status` and `cancel`: one job by id.
public struct JobRequest: Sendable, Hashable, Codable {
    public var job: Int64
    public init(job: Int64) { self.job = job }
}

public struct StatusReply: Sendable, Hashable, Codable {
    public var job: JobView
    public var events: [EventView]
    /// The job's workers, by rank.
    public var members: [WorkerView]?
    /// The latest value of each recorded metric (`test_loss`, `test_accuracy`, …) and its step.
    public var metrics: [String: MetricView]?
    /// What the running job is doing now.
    public var live: LiveView?
    public init(job: JobView, events: [EventView], members: [WorkerView]? = nil, metrics: [String: MetricView]? = nil, live: LiveView? = nil) {
        self.job = job
        self.events = events
        self.members = members
        self.metrics = metrics
        self.live = live
    }
}

public struct MetricView: Sendable, Hashable, Codable {
    public var step: Int
    public var value: Double
    public init(step: Int, value: Double) {
        self.step = step
        self.value = value
    }
}

public struct LiveView: Sendable, Hashable, Codable {
    public var step: Int
    public var trainLoss: Double?
    public var samplesPerSecond: Double
    public var bytesIn: Int
    public var bytesOut: Int
    /// Each member's link: bytes each way, round trip, and measured bandwidth.
    public var links: [LinkView]?
    public init(step: Int, trainLoss: Double?, samplesPerSecond: Double, bytesIn: Int, bytesOut: Int, links: [LinkView]? = nil) {
        self.step = step
        self.trainLoss = trainLoss
        self.samplesPerSecond = samplesPerSecond
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.links = links
    }
}

public struct LinkView: Sendable, Hashable, Codable {
    public var member: String
    public var institution: String
    public var bytesIn: Int
    public var bytesOut: Int
    /// Heartbeat round trip as the worker measured it, ms.
    public var rttMs: Double?
    /// Bytes of a step's contribution over the time between its first and last shard, MB/s.
    public var bandwidthMBps: Double?
    public init(member: String, institution: String, bytesIn: Int, bytesOut: Int, rttMs: Double?, bandwidthMBps: Double?) {
        self.member = member
        self.institution = institution
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.rttMs = rttMs
        self.bandwidthMBps = bandwidthMBps
    }
}

public struct WorkersReply: Sendable, Hashable, Codable {
    public var workers: [WorkerView]
    public init(workers: [WorkerView]) { self.workers = workers }
}

/// `events`: the audit trail, of one job or all, after an event id.
public struct EventsRequest: Sendable, Hashable, Codable {
    public var job: Int64?
    public var after: Int64?
    public var limit: Int?
    public init(job: Int64? = nil, after: Int64? = nil, limit: Int? = nil) {
        self.job = job
        self.after = after
        self.limit = limit
    }
}

public struct EventsReply: Sendable, Hashable, Codable {
    public var events: [EventView]
    public init(events: [EventView]) { self.events = events }
}

/// A job as clients see it (the `--json` shape of `jobs`, `status`, `submit`; docs/cli.md).
public struct JobView: Sendable, Hashable, Codable {
    public var id: Int64
    public var name: String
    public var owner: String
    public var state: String
    /// Why the job is where it is; present whenever it is not progressing.
    public var reason: String?
    public var priority: Int
    public var minWorkers: Int
    public var maxWorkers: Int
    public var workers: [String]
    public var step: Int
    public var totalSteps: Int
    /// Seconds since the Unix epoch.
    public var submittedAt: Double
    public var stateChangedAt: Double
    /// When the job entered each state, seconds since the epoch, by state name.
    public var stateTimes: [String: Double]

    public init(id: Int64, name: String, owner: String, state: String, reason: String?, priority: Int,
                minWorkers: Int, maxWorkers: Int, workers: [String], step: Int, totalSteps: Int,
                submittedAt: Double, stateChangedAt: Double, stateTimes: [String: Double]) {
        self.id = id
        self.name = name
        self.owner = owner
        self.state = state
        self.reason = reason
        self.priority = priority
        self.minWorkers = minWorkers
        self.maxWorkers = maxWorkers
        self.workers = workers
        self.step = step
        self.totalSteps = totalSteps
        self.submittedAt = submittedAt
        self.stateChangedAt = stateChangedAt
        self.stateTimes = stateTimes
    }
}

public struct WorkerView: Sendable, Hashable, Codable {
    public var id: Int64
    public var name: String
    public var institution: String
    public var state: String
    public var cores: Int
    public var memoryBytes: Int64
    public var accelerators: [String]
    public var job: Int64?
    /// Seconds since the Unix epoch.
    public var lastHeartbeat: Double

    public init(id: Int64, name: String, institution: String, state: String, cores: Int, memoryBytes: Int64,
                accelerators: [String], job: Int64?, lastHeartbeat: Double) {
        self.id = id
        self.name = name
        self.institution = institution
        self.state = state
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.accelerators = accelerators
        self.job = job
        self.lastHeartbeat = lastHeartbeat
    }
}

public struct EventView: Sendable, Hashable, Codable {
    public var id: Int64
    public var at: Double
    public var actor: String
    public var kind: String
    public var job: Int64?
    public var worker: Int64?
    public var detail: String

    public init(id: Int64, at: Double, actor: String, kind: String, job: Int64?, worker: Int64?, detail: String) {
        self.id = id
        self.at = at
        self.actor = actor
        self.kind = kind
        self.job = job
        self.worker = worker
        self.detail = detail
    }
}

/// `register` on the control endpoint.
public struct RegisterRequest: Sendable, Hashable, Codable {
    public var name: String
    public var institution: String
    public var cores: Int
    public var memoryBytes: Int64
    public var accelerators: [String]
    /// Where this worker's institution-local endpoint listens (`--site-listen`), for jobs with
    /// `reduction: institution`: `tcp://HOST:PORT`, reachable only inside its site.
    public var siteEndpoint: String?

    public init(name: String, institution: String, cores: Int, memoryBytes: Int64, accelerators: [String] = []) {
        self.name = name
        self.institution = institution
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.accelerators = accelerators
    }
}

public struct RegisterReply: Sendable, Hashable, Codable {
    public var workerId: Int64
    /// How often the coordinator expects a heartbeat.
    public var heartbeatIntervalMs: Int
    /// For a worker on the coordinator's host when the coordinator offers ipc: the data
    /// endpoint to use instead of tcp (no CURVE; its directory is the coordinator user's), and
    /// the session id to present there as routing identity, which names this worker.
    public var ipcData: String?
    public var session: String?
    public init(workerId: Int64, heartbeatIntervalMs: Int, ipcData: String? = nil, session: String? = nil) {
        self.workerId = workerId
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.ipcData = ipcData
        self.session = session
    }
}

// MARK: - Training notices (workers issue)

/// The kinds of `Notice` and their bodies.
public enum NoticeKind {
    /// coordinator → worker (control): take a job. Body `Assignment`.
    public static let assign = "assign"
    /// worker → coordinator (control): the job's data and model are loaded. Body `Ready`.
    public static let ready = "ready"
    /// worker → coordinator (control): it cannot take the job it was assigned (its data root
    /// lacks the dataset, a file does not read, …). Body `Release`: the job and why.
    public static let decline = "decline"
    /// worker → coordinator (data): binds this data connection to the sender. Body `Attach`.
    public static let attach = "attach"
    /// worker → coordinator (control): test metrics after a step. Body `Metrics`.
    public static let metrics = "metrics"
    /// worker → coordinator (control): training loss of its slice. Body `Progress`.
    public static let progress = "progress"
    /// worker → coordinator (control): the worker is stopping (SIGTERM). Empty body.
    public static let goodbye = "goodbye"
    /// worker → coordinator (control): the worker's replica of θ̃ is lost (a lossy parameter
    /// difference did not decode) and it has dropped the job; the coordinator restarts the run,
    /// whose start sends it θ̃ whole. Body `Release`: the job and why.
    public static let resync = "resync"
    /// coordinator → worker (control): drop the job. Body `Release`.
    public static let release = "release"
    /// coordinator → worker (data): start at a step from the parameters the worker already holds
    /// (its own initialisation matched θ̃). Body `Start`.
    public static let start = "start"
    /// coordinator → worker on its host (ipc data): exchange shards through these files. The
    /// worker answers with the same notice once it has mapped them. Body `SharedMemory`.
    public static let sharedMemory = "shared-memory"
}

public enum TrainingNotice {
    public struct Assignment: Sendable, Hashable, Codable {
        public var job: Int64
        public var spec: String
        public var rank: Int
        public var worldSize: Int
        public var shardElements: Int
        public var encoding: String
        /// `reduction: institution`: this worker's part in its site's reduction (nil: flat).
        public var site: Site?
        public init(job: Int64, spec: String, rank: Int, worldSize: Int, shardElements: Int, encoding: String) {
            self.job = job
            self.spec = spec
            self.rank = rank
            self.worldSize = worldSize
            self.shardElements = shardElements
            self.encoding = encoding
        }
    }

    /// A site's reduction: its members send their contributions to the delegate over the
    /// site's network (fp32, CURVE); the delegate adds its own, sends one contribution to the
    /// coordinator, and relays the parameters it receives to the members.
    public struct Site: Sendable, Hashable, Codable {
        public enum Role: String, Sendable, Hashable, Codable { case delegate, member }
        public var role: Role
        /// The delegate's site endpoint and CURVE public key (Z85): where members connect.
        public var endpoint: String
        public var delegateKey: String
        /// The delegate only: the members it admits, name → CURVE public key (Z85).
        public var members: [String: String]
        public init(role: Role, endpoint: String, delegateKey: String, members: [String: String] = [:]) {
            self.role = role
            self.endpoint = endpoint
            self.delegateKey = delegateKey
            self.members = members
        }
    }

    /// The segments of the shared-memory data plane (`SharedSegment`): parameters and
    /// sequence words written by the coordinator, contributions written by this worker. Both
    /// hold `parameterCount` Floats and `shardCount` sequence words.
    public struct SharedMemory: Sendable, Hashable, Codable {
        public var job: Int64
        public var parameters: String
        public var contributions: String
        public var parameterCount: Int
        public var shardCount: Int
        public init(job: Int64, parameters: String, contributions: String, parameterCount: Int, shardCount: Int) {
            self.job = job
            self.parameters = parameters
            self.contributions = contributions
            self.parameterCount = parameterCount
            self.shardCount = shardCount
        }
    }

    public struct Start: Sendable, Hashable, Codable {
        public var job: Int64
        public var step: Int
        public init(job: Int64, step: Int) {
            self.job = job
            self.step = step
        }
    }

    public struct Ready: Sendable, Hashable, Codable {
        public var job: Int64
        /// The model the worker built from the spec and its dataset, as JSON.
        public var model: String
        public var parameterCount: Int
        public var trainExamples: Int
        public var contentHash: String?
        /// SHA-256 of the worker's parameters as it built them from the spec's seed: when every
        /// member's equals the coordinator's θ̃, the run starts with `start` instead of shipping them.
        public var parametersDigest: String?
        public init(job: Int64, model: String, parameterCount: Int, trainExamples: Int, contentHash: String?) {
            self.job = job
            self.model = model
            self.parameterCount = parameterCount
            self.trainExamples = trainExamples
            self.contentHash = contentHash
        }
    }

    public struct Attach: Sendable, Hashable, Codable {
        public var job: Int64
        public init(job: Int64) { self.job = job }
    }

    public struct Metrics: Sendable, Hashable, Codable {
        public var job: Int64
        public var step: Int
        public var lossSum: Double
        public var correct: Int
        public var count: Int
        /// How long the evaluation took (the coordinator leaves it out of the training time).
        public var evalSeconds: Double?
        /// Bytes the worker sent for the job so far (every frame, envelopes included).
        public var bytesSent: Int?
        public init(job: Int64, step: Int, lossSum: Double, correct: Int, count: Int) {
            self.job = job
            self.step = step
            self.lossSum = lossSum
            self.correct = correct
            self.count = count
        }
    }

    public struct Progress: Sendable, Hashable, Codable {
        public var job: Int64
        public var step: Int
        public var loss: Double
        public var samples: Int
        /// The worker's smoothed heartbeat round trip to the coordinator, in milliseconds.
        public var rttMs: Double?
        public init(job: Int64, step: Int, loss: Double, samples: Int, rttMs: Double? = nil) {
            self.job = job
            self.step = step
            self.loss = loss
            self.samples = samples
            self.rttMs = rttMs
        }
    }

    public struct Release: Sendable, Hashable, Codable {
        public var job: Int64
        public var reason: String
        public init(job: Int64, reason: String) {
            self.job = job
            self.reason = reason
        }
    }
}

extension Notice {
    public init(kind: String, json value: some Encodable) throws {
        self.init(kind: kind, body: Array(try JSONEncoder().encode(value)))
    }

    public func decodeBody<T: Decodable>(as type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(body))
    }
}

public struct DownloadRequest: Sendable, Hashable, Codable {
    public var job: Int64
    public var offset: Int
    public var length: Int
    /// The checkpoint to read (its step); nil: the newest. A client names the step the first
    /// chunk's header gave, so that a checkpoint written mid-download cannot splice into it.
    public var step: Int?
    public init(job: Int64, offset: Int, length: Int, step: Int? = nil) {
        self.job = job
        self.offset = offset
        self.length = length
        self.step = step
    }
}
