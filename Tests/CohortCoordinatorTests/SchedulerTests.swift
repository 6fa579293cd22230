import Foundation
import Testing
@testable import CohortCoordinator
@testable import CohortStore

func makeJob(_ id: Job.ID, min: Int = 1, max: Int = 1, priority: Int = 0, state: Job.State = .queued,
             institutions: [String] = [], cores: Int = 1, memory: Int64 = 0) -> Job {
    Job(id: id, name: "job\(id)", owner: "alice", spec: "", state: state, reason: nil, priority: priority,
        minWorkers: min, maxWorkers: max, institutions: institutions, minCores: cores, minMemoryBytes: memory,
        requestKey: nil, submittedAt: Date(), stateChangedAt: Date(), stateTimes: [:], step: 0, totalSteps: 0)
}

func makeWorker(_ id: Worker.ID, _ name: String, at institution: String = "pku", state: Worker.State = .idle,
                cores: Int = 8, memory: Int64 = 32 << 30, job: Job.ID? = nil, seen: Date = Date()) -> Worker {
    Worker(id: id, name: name, institution: institution, cores: cores, memoryBytes: memory, accelerators: [],
           state: state, lastHeartbeat: seen, registeredAt: seen, jobId: job)
}

struct SchedulerTests {
    @Test func placesJobsOnDisjointIdleWorkersUpToTheirMaximum() {
        let workers = (1...5).map { makeWorker(Int64($0), "w\($0)") }
        let plan = Scheduler.plan(jobs: [makeJob(1, min: 2, max: 3), makeJob(2, min: 2, max: 2)], workers: workers)
        #expect(plan.placements == [.init(job: 1, workers: [1, 2, 3]), .init(job: 2, workers: [4, 5])])
        #expect(plan.reasons.isEmpty)
    }

    @Test func higherPriorityGoesFirstAndFIFOWithinAPriority() {
        let workers = [makeWorker(1, "w1")]
        // The store hands jobs over in (priority desc, id) order; the plan keeps it.
        let plan = Scheduler.plan(jobs: [makeJob(5, priority: 10), makeJob(2), makeJob(3)], workers: workers)
        #expect(plan.placements.map(\.job) == [5])
        #expect(Set(plan.reasons.keys) == [2, 3])
    }

    @Test func aJobThatCannotBePlacedDoesNotBlockASmallerOneBehindIt() {
        let workers = [makeWorker(1, "w1"), makeWorker(2, "w2")]
        let plan = Scheduler.plan(jobs: [makeJob(1, min: 3, max: 3), makeJob(2, min: 1, max: 1)], workers: workers)
        #expect(plan.placements.map(\.job) == [2])
        #expect(plan.reasons[1] != nil)
    }

    @Test func institutionsAndResourcesAreRespected() {
        let workers = [makeWorker(1, "pku-01", at: "pku", cores: 2), makeWorker(2, "sjtu-01", at: "sjtu", cores: 16),
                       makeWorker(3, "mit-01", at: "mit", cores: 16, memory: 1 << 30)]
        let plan = Scheduler.plan(jobs: [makeJob(1, min: 1, max: 3, institutions: ["pku", "sjtu", "mit"], cores: 4, memory: 8 << 30)],
                                  workers: workers)
        #expect(plan.placements == [.init(job: 1, workers: [2])])
    }

    @Test func theReasonNamesEachWorkerThatCouldNotBeUsed() {
        let lostAt = Date(timeIntervalSince1970: 1_700_000_000)
        let workers = [makeWorker(1, "pku-01", state: .busy, job: 7), makeWorker(2, "sjtu-02", at: "sjtu", state: .lost, seen: lostAt),
                       makeWorker(3, "pku-03"), makeWorker(4, "mit-01", at: "mit")]
        let plan = Scheduler.plan(jobs: [makeJob(9, min: 3, max: 3, institutions: ["pku", "sjtu"])], workers: workers)
        let reason = plan.reasons[9]
        #expect(reason?.hasPrefix("needs 3 workers, 1 idle fits: ") == true)
        #expect(reason?.contains("pku-01 runs job 7") == true)
        #expect(reason?.contains("sjtu-02 lost at \(Scheduler.clock(lostAt))") == true)
        #expect(reason?.contains("mit-01 is at mit, not allowed") == true)
    }

    @Test func withNoWorkersTheReasonSaysSo() {
        let plan = Scheduler.plan(jobs: [makeJob(1)], workers: [])
        #expect(plan.reasons[1] == "needs 1 worker, 0 idle fit: no worker has registered yet")
    }

    @Test func runningAndFinishedJobsAreNotPlacedAgain() {
        let plan = Scheduler.plan(jobs: [makeJob(1, state: .running), makeJob(2, state: .completed)], workers: [makeWorker(1, "w")])
        #expect(plan.placements.isEmpty && plan.reasons.isEmpty)
    }
}

struct RegistryTests {
    @Test func aWorkerSilentForMoreThanItsMissedHeartbeatsIsLost() {
        let now = Date()
        let registry = Registry(heartbeatInterval: 1, missedHeartbeats: 3)
        let workers = [makeWorker(1, "fresh", seen: now.addingTimeInterval(-2.9)),
                       makeWorker(2, "silent", seen: now.addingTimeInterval(-3.1)),
                       makeWorker(3, "busy-silent", state: .busy, seen: now.addingTimeInterval(-10)),
                       makeWorker(4, "already-lost", state: .lost, seen: now.addingTimeInterval(-100))]
        #expect(registry.lost(workers, now: now).map(\.name) == ["silent", "busy-silent"])
    }
}

struct GrowthTests {
    @Test func runningJobsBelowTheirMaximumTakeIdleWorkersThatFit() {
        let a = makeJob(1, min: 1, max: 3, state: .running)
        let b = makeJob(2, min: 1, max: 2, priority: 5, state: .running, institutions: ["sjtu"])
        let full = makeJob(3, min: 1, max: 1, state: .running)
        let workers = [makeWorker(1, "pku-01"), makeWorker(2, "sjtu-01", at: "sjtu"), makeWorker(3, "pku-02"),
                       makeWorker(4, "busy", state: .busy, job: 3)]
        let growth = Scheduler.growth(running: [(a, 1), (b, 1), (full, 1)], workers: workers)
        #expect(growth[2] == [2], "the higher-priority job first, and only from its institutions")
        #expect(growth[1] == [1, 3], "then up to the maximum from what is left")
        #expect(growth[3] == nil, "a job at its maximum takes nothing")
    }
}
