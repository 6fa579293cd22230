import CohortCompute
import CohortSpec
import CohortStore
import CohortTransport
import CohortWire
import Foundation

/// Everything a coordinator is configured with (docs/configuration.md lists each setting).
public struct CoordinatorSettings: Sendable {
    /// Holds `state.sqlite`, the coordinator's key and checkpoints.
    public var dataDirectory: String
    /// The address clients are told to use (hello); also the default bind address.
    public var address: CoordinatorAddress
    /// Bind endpoints; by default every interface on the address's PORT, PORT+1, PORT+2.
    public var apiEndpoint: String
    public var controlEndpoint: String
    public var dataEndpoint: String
    /// tcp without CURVE: only with an explicit flag, and logged as a warning.
    public var plaintext: Bool
    /// Offer workers on this host an ipc data endpoint (DATA_DIR/ipc, mode 0700), 1.3–1.5×
    /// faster than tcp. Off where network namespaces share a host (they do not separate ipc).
    public var ipc = false
    /// With `ipc`: exchange fp32 shards with those workers through shared-memory segments in
    /// /dev/shm, only headers on the socket (fp32 both ways, no overlap).
    public var sharedMemory = true
    /// Checkpoints kept per job (the newest); older files are deleted after each new one.
    public var keepCheckpoints = 3
    /// Slack added to a step's deadline (3× the smoothed step time of the members that keep up,
    /// plus this): how long a busy host may stall a member before it is dropped from a step.
    public var deadlineSlack = 0.5
    /// How long the end of a job waits for the final evaluation's remaining reports once the
    /// first has arrived (10× this when none has): a member alive but silent (its evaluation
    /// failed, or it is hostile) cannot keep a job from completing.
    public var evaluationGrace = 60.0
    /// libzmq I/O threads for the data endpoints' connections (plus one for api and control):
    /// they do each connection's socket reads and writes (and CURVE), a connection on one of
    /// them. One thread serialises every member's shards through one core; with a thread per
    /// busy connection the kernel's copies for different members run side by side
    /// (docs/architecture.md, "I/O threads").
    public var ioThreads = Context.defaultDataIOThreads
    /// What `ioThreads` may be: libzmq's affinity mask has 64 bits, and thread 0 is api's and control's.
    public static let ioThreadRange = 1...63
    public var registry: Registry
    /// How often liveness and scheduling run.
    public var tickMilliseconds: Int
    /// Largest frame accepted on the api and control endpoints.
    public var maxMessageBytes: Int
    /// Turns a submitted spec (YAML text) into the job to store; throws `SpecRejected`.
    public var parseSpec: @Sendable (_ yaml: String, _ owner: String) throws -> NewJob

    public init(dataDirectory: String, address: CoordinatorAddress = CoordinatorAddress(host: "127.0.0.1"),
                bindHost: String = "*", plaintext: Bool = false, registry: Registry = Registry(),
                tickMilliseconds: Int = 500, maxMessageBytes: Int = 16 << 20,
                parseSpec: @escaping @Sendable (String, String) throws -> NewJob = CoordinatorSettings.jobSpecParser) {
        self.dataDirectory = dataDirectory
        self.address = address
        apiEndpoint = "tcp://\(bindHost):\(address.port)"
        controlEndpoint = "tcp://\(bindHost):\(address.port + 1)"
        dataEndpoint = "tcp://\(bindHost):\(address.port + 2)"
        self.plaintext = plaintext
        self.registry = registry
        self.tickMilliseconds = tickMilliseconds
        self.maxMessageBytes = maxMessageBytes
        self.parseSpec = parseSpec
    }

    /// A submitted spec, validated by CohortSpec, becomes the job the store keeps.
    public static let jobSpecParser: @Sendable (String, String) throws -> NewJob = { yaml, owner in
        let spec: JobSpec
        do { spec = try JobSpec.parse(yaml: yaml, source: "job spec") } catch let e as SpecError {
            throw SpecRejected(problems: e.problems.map(\.description))
        }
        return NewJob(name: spec.name, owner: owner, spec: yaml, priority: spec.cluster.priority,
                      minWorkers: spec.cluster.minWorkers, maxWorkers: spec.cluster.maxWorkers,
                      institutions: spec.cluster.institutions, minCores: spec.cluster.minCores,
                      minMemoryBytes: Int64(spec.cluster.minMemoryGiB * Double(1 << 30)), totalSteps: spec.training.steps)
    }

    public var databasePath: String { dataDirectory + "/state.sqlite" }
    public var keyPath: String { dataDirectory + "/coordinator.key" }
    public var ipcDataEndpoint: String { "ipc://" + dataDirectory + "/ipc/data" }
    /// How this coordinator's shared-memory segment names start: `cohort-`, then a hash of the
    /// data directory, so coordinators on one host never touch each other's segments.
    public var sharedMemoryNamePrefix: String {
        SharedSegment.namePrefix + ContentHash.sha256(bytes: Array(dataDirectory.utf8)).prefix(16) + "-"
    }
}

/// A job spec that cannot be accepted; `problems` lists every one, each with its field path.
public struct SpecRejected: Error, Sendable, CustomStringConvertible {
    public var problems: [String]
    public init(problems: [String]) { self.problems = problems }
    public var description: String { "the job spec has \(problems.count) problem(s):\n" + problems.map { "  " + $0 }.joined(separator: "\n") }
}
