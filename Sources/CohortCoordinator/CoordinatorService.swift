import CohortStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A coordinator running on its own thread. `start` returns once the endpoints are bound (or
/// throws why they could not be); `stop` asks the loop to finish and waits for it.
public final class RunningCoordinator: Sendable {
    public let store: Store
    public let stats = CoordinatorStats()
    private let stopFlag = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    private init(store: Store) { self.store = store }

    public static func start(_ settings: CoordinatorSettings, logger: Logger) throws -> RunningCoordinator {
        let store = try Store(path: settings.databasePath)
        let running = RunningCoordinator(store: store)
        let ready = DispatchSemaphore(value: 0)
        let startError = Mutex<(any Error)?>(nil)
        let thread = Thread {
            let loop: CoordinatorLoop
            do {
                loop = try CoordinatorLoop(settings: settings, store: store, logger: logger, stats: running.stats)
            } catch {
                startError.withLock { $0 = error }
                ready.signal()
                running.finished.signal()
                return
            }
            ready.signal()
            loop.run { running.stopFlag.load(ordering: .acquiring) }
            running.finished.signal()
        }
        thread.name = "cohort-coordinator"
        thread.stackSize = 4 << 20
        thread.start()
        ready.wait()
        if let error = startError.withLock({ $0 }) { throw error }
        try? store.recordEvent(actor: "coordinator", kind: "coordinator.started", detail: settings.address.description)
        logger.info("coordinator serving", metadata: [
            "api": "\(settings.apiEndpoint)", "control": "\(settings.controlEndpoint)", "data": "\(settings.dataEndpoint)",
            "state": "\(settings.databasePath)", "io-threads": "\(settings.ioThreads)"])
        return running
    }

    /// Asks the loop to finish its current message, flush heartbeats and close; waits for it.
    public func stop() {
        if stopFlag.exchange(true, ordering: .acquiringAndReleasing) { return }
        finished.wait()
    }

    /// Waits (off the cooperative pool) until the loop has finished.
    func waitUntilFinished() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            Thread {
                self.finished.wait()
                self.finished.signal()
                c.resume()
            }.start()
        }
    }
}

/// The coordinator as a `Service` of a `ServiceGroup`: SIGTERM or SIGINT ends it gracefully.
public struct CoordinatorService: Service {
    let settings: CoordinatorSettings
    let logger: Logger

    public init(settings: CoordinatorSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    public func run() async throws {
        let running = try RunningCoordinator.start(settings, logger: logger)
        await withGracefulShutdownHandler {
            await running.waitUntilFinished()
        } onGracefulShutdown: {
            logger.notice("shutting down")
            Thread { running.stop() }.start()
        }
        try? running.store.recordEvent(actor: "coordinator", kind: "coordinator.stopped")
    }
}
