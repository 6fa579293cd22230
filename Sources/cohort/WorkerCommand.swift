import ArgumentParser
import CohortCompute
import CohortTransport
import CohortWire
import CohortWorker
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// `cohort worker`: a site's worker daemon.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker daemon: enrol once with a join token, register, and train the jobs the coordinator assigns.")

    @Option(help: "Coordinator address HOST[:PORT]. Env: COHORT_COORDINATOR. Default: the one pinned at enrolment.") var coordinator: String?
    @Option(help: "The worker's state directory: its key (DIR/key) and the pinned coordinator.") var stateDir: String
    @Option(help: "Datasets directory. Env: COHORT_DATA_ROOT. Default: ~/.local/share/cohort/datasets.") var dataRoot: String?
    @Option(help: "A join token: enrol this worker first (once; later starts need none).") var join: String?
    @Option(help: "The worker's name (at enrolment; default INSTITUTION-worker-N).") var name: String?
    @Option(help: "Compute threads. Default: all cores.") var threads: Int?
    @Option(help: ArgumentHelp("HOST:PORT inside this site where the worker, as its institution's delegate, takes the other members' contributions (jobs with `reduction: institution`). Only the current job's enrolled members of the institution are admitted (CURVE).", valueName: "HOST:PORT"))
    var siteListen: String?

    func run() async throws {
        if let siteListen {
            let parts = siteListen.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let port = Int(parts[1]), (1...65535).contains(port) else {
                throw ValidationError("--site-listen must be HOST:PORT (an address inside the site and a port 1–65535), got `\(siteListen)`")
            }
        }
        guard !stateDir.isEmpty else { throw ValidationError("--state-dir is empty: give the worker's directory") }
        // One worker per state directory (one key), held for the process's life (DirectoryLock).
        // A directory that is not there yet is made by enrolment (with --join), or is a mistake
        // the checks below report.
        if join != nil {
            try createDirectory(stateDir, what: "state directory", mode: 0o700)
        }
        let lock = FileManager.default.fileExists(atPath: stateDir)
            ? try DirectoryLock(directory: stateDir, name: "worker", holder: "worker") : nil
        defer { withExtendedLifetime(lock) {} }
        let keyPath = stateDir + "/key"
        if let join {
            let token: JoinToken
            do { token = try JoinToken(text: join) } catch { throw ValidationError(error.description) }
            if FileManager.default.fileExists(atPath: Pinned.path(for: keyPath)) {
                print("already enrolled (\(Pinned.path(for: keyPath)) exists); ignoring --join")
            } else {
                _ = try Enroll.enroll(token: token, stateDir: stateDir, key: nil, name: name, timeout: 10)
            }
        }
        guard FileManager.default.fileExists(atPath: keyPath) else {
            if FileManager.default.fileExists(atPath: Pinned.path(for: keyPath)) {
                throw ValidationError("\(keyPath) is missing but \(Pinned.path(for: keyPath)) is there: the enrolment is incomplete; "
                                      + "move \(stateDir) aside and enrol again with a new --join TOKEN")
            }
            throw ValidationError("\(stateDir) holds no enrolled key: start the worker once with --join TOKEN (from `cohort admin token --role worker`)")
        }
        guard let pinned = Pinned.load(for: keyPath) else {
            throw ValidationError("\(Pinned.path(for: keyPath)) (the coordinator's address and key pinned at enrolment) is missing or does not read; "
                                  + "move \(stateDir) aside and enrol again with a new --join TOKEN")
        }
        let keys = try CurveKeyPair.load(from: keyPath)
        let serverKey: CurveKey
        let address: CoordinatorAddress
        do {
            serverKey = try CurveKey(z85: pinned.publicKey)
            address = try CoordinatorAddress(parsing: coordinator ?? ProcessInfo.processInfo.environment[CoordinatorAddress.environmentVariable] ?? pinned.address)
        } catch {
            throw ValidationError("\(error)")
        }
        let n = threads ?? ProcessInfo.processInfo.activeProcessorCount
        guard n >= 1 else { throw ValidationError("--threads must be at least 1") }
        Allocator.avoidPerMessageMapping()
        let settings = WorkerSettings(address: address, keys: keys, serverKey: serverKey, dataRoot: DataRoot.resolve(explicit: dataRoot),
                                      name: name ?? "worker", threads: n, siteListen: siteListen)
        var logger = Logger(label: "cohort.worker")
        logger[metadataKey: "worker"] = "\(name ?? URL(fileURLWithPath: stateDir).lastPathComponent)"
        let service = WorkerService(settings: settings, logger: logger)
        let group = ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}

/// The worker loop on its own thread, as a `Service`: SIGTERM or SIGINT stop it between messages.
struct WorkerService: Service {
    let settings: WorkerSettings
    let logger: Logger

    func run() async throws {
        let stop = StopFlag()
        try await withGracefulShutdownHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let thread = Thread {
                    // The agent (its sockets and context) is gone when this returns, so its
                    // goodbye has been handed to the network before the process can exit.
                    func serve() throws {
                        let agent = try WorkerAgent(settings: settings, logger: logger)
                        agent.run { stop.flag.load(ordering: .acquiring) }
                        if let status = agent.keyRefusedStatus {
                            throw CommandFailure("the coordinator at \(settings.address) refused this worker's key in the handshake "
                                                 + "(status \(status)): it was revoked. Move the state directory aside and start the "
                                                 + "worker again with a new --join TOKEN (from `cohort admin token --role worker`)")
                        }
                    }
                    do {
                        try serve()
                        c.resume()
                    } catch {
                        c.resume(throwing: error)
                    }
                }
                thread.name = "cohort-worker"
                thread.stackSize = 8 << 20
                thread.start()
            }
        } onGracefulShutdown: {
            stop.flag.store(true, ordering: .releasing)
        }
    }
}

final class StopFlag: Sendable {
    let flag = Atomic<Bool>(false)
}
