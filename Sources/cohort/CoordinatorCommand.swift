import ArgumentParser
import CohortCoordinator
import CohortSpec
import CohortStore
import CohortTransport
import CohortWire
import Foundation
import Logging
import ServiceLifecycle

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the coordinator daemon: the consortium's state (SQLite) and its three endpoints.")

    @Option(help: "Directory for state.sqlite, the coordinator's key and checkpoints.") var dataDir: String?
    @Option(help: "Config file (YAML, docs/configuration.md); flags override it.") var config: String?
    @Option(help: "Listen on HOST:PORT for api; control is PORT+1, data PORT+2. Default 0.0.0.0:7600.") var listen: String?
    @Option(help: "The address clients and workers are told to use (hello, join tokens). Default: --listen's.") var advertise: String?
    @Flag(help: "Serve tcp without CURVE: anyone on the network can read and send everything. Testing only.") var plaintext = false
    @Flag(help: "Offer workers on this host an ipc data endpoint (DATA_DIR/ipc, mode 0700): faster than tcp.") var ipc = false
    @Flag(help: "With --ipc: send every shard's bytes through the ipc socket instead of shared memory.") var noSharedMemory = false
    @Option(help: "Checkpoints kept per job (the newest).") var keepCheckpoints: Int?
    @Option(help: "Seconds added to each step's deadline before late members are dropped from the step.") var deadlineSlack: Double?
    @Option(help: "Seconds the end of a job waits for the final evaluation's other reports after the first (10× with none).") var evaluationGrace: Double?
    @Option(help: "Seconds between worker heartbeats.") var heartbeatInterval: Double?
    @Option(help: "Heartbeats a worker may miss before it is declared lost.") var missedHeartbeats: Int?
    @Option(help: "Threads for the data connections' socket I/O (plus one for api and control). Default: the cores, up to 4.") var ioThreads: Int?

    func run() async throws {
        var file = CoordinatorConfig()
        if let config {
            do { file = try CoordinatorConfig.load(path: config) } catch let e as SpecError { throw ValidationError(e.description) }
        }
        guard let dataDir = dataDir ?? file.dataDir else {
            throw ValidationError("--data-dir is required (or `data-dir:` in the config file)")
        }
        guard !dataDir.isEmpty else { throw ValidationError("--data-dir is empty: give a directory (an empty one would be /)") }
        // As the config file requires them (docs/configuration.md).
        let interval = heartbeatInterval ?? file.heartbeatInterval ?? 1
        guard interval >= 0.05 && interval <= 60 else {
            throw ValidationError("--heartbeat-interval must be from 0.05 to 60 seconds, got \(interval)")
        }
        let missed = missedHeartbeats ?? file.missedHeartbeats ?? 5
        guard missed >= 1 && missed <= 10_000 else {
            throw ValidationError("--missed-heartbeats must be from 1 to 10000, got \(missed)")
        }
        let listenText = listen ?? file.listen ?? "0.0.0.0:7600"
        let listenAddress: CoordinatorAddress
        let advertised: CoordinatorAddress
        do {
            listenAddress = try CoordinatorAddress(parsing: listenText)
            let adv = advertise ?? file.advertise ?? (listenAddress.host == "0.0.0.0" || listenAddress.host == "*"
                ? "\(ProcessInfo.processInfo.hostName):\(listenAddress.port)" : listenText)
            advertised = try CoordinatorAddress(parsing: adv)
        } catch {
            throw ValidationError(error.description)
        }
        // Held for the process's life (see DirectoryLock).
        try createDirectory(dataDir, what: "data directory")
        let lock = try DirectoryLock(directory: dataDir, name: "coordinator", holder: "coordinator")
        defer { withExtendedLifetime(lock) {} }
        var logger = Logger(label: "cohort.coordinator")
        logger.logLevel = .info
        Allocator.avoidPerMessageMapping()
        var settings = CoordinatorSettings(
            dataDirectory: dataDir, address: advertised, plaintext: plaintext || (file.plaintext ?? false),
            registry: Registry(heartbeatInterval: interval, missedHeartbeats: missed))
        settings.ipc = ipc || (file.ipc ?? false)
        settings.sharedMemory = !noSharedMemory
        settings.keepCheckpoints = keepCheckpoints ?? file.keepCheckpoints ?? 3
        settings.deadlineSlack = deadlineSlack ?? file.deadlineSlack ?? 0.5
        guard settings.deadlineSlack >= 0 && settings.deadlineSlack <= 3600 else {
            throw ValidationError("--deadline-slack must be from 0 to 3600 seconds")
        }
        settings.evaluationGrace = evaluationGrace ?? file.evaluationGrace ?? 60
        guard settings.evaluationGrace >= 0 && settings.evaluationGrace <= 86_400 else {
            throw ValidationError("--evaluation-grace must be from 0 to 86400 seconds")
        }
        guard settings.keepCheckpoints >= 1 else { throw ValidationError("--keep-checkpoints must be at least 1") }
        settings.ioThreads = ioThreads ?? file.ioThreads ?? Context.defaultDataIOThreads
        guard CoordinatorSettings.ioThreadRange.contains(settings.ioThreads) else {
            let r = CoordinatorSettings.ioThreadRange
            throw ValidationError("--io-threads must be from \(r.lowerBound) to \(r.upperBound), got \(settings.ioThreads)")
        }
        let bindHost = listenAddress.host == "0.0.0.0" ? "*" : listenAddress.endpointHostForBind
        settings.apiEndpoint = "tcp://\(bindHost):\(listenAddress.port)"
        settings.controlEndpoint = "tcp://\(bindHost):\(listenAddress.port + 1)"
        settings.dataEndpoint = "tcp://\(bindHost):\(listenAddress.port + 2)"
        if !settings.plaintext {
            logger.info("coordinator public key file", metadata: ["path": "\(settings.keyPath).pub"])
        }
        let group = ServiceGroup(services: [CoordinatorService(settings: settings, logger: logger)],
                                 gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}

extension CoordinatorAddress {
    var endpointHostForBind: String { host.contains(":") ? "[\(host)]" : host }
}

struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Administer a coordinator on its own host.",
                                                    subcommands: [Token.self, Revoke.self, Principals.self, Backup.self])

    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a consistent copy of the coordinator's database while it runs.")
        @Option(help: "The coordinator's data directory.") var dataDir: String
        @Option(help: "Where to write the copy (must not exist).") var out: String

        func run() throws {
            guard !dataDir.isEmpty else { throw ValidationError("--data-dir is empty: give the coordinator's data directory") }
            let path = dataDir + "/state.sqlite"
            guard FileManager.default.fileExists(atPath: path) else {
                throw ValidationError("\(path) does not exist: is --data-dir the coordinator's data directory?")
            }
            let store = try Store(path: path)
            try store.backup(to: out)
            let check = try Store(path: out).integrityCheck()
            print("backup written to \(out) (integrity: \(check))")
        }
    }
}
