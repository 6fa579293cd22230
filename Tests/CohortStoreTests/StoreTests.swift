import Foundation
import Testing
import TestSupport
@testable import CohortStore

/// Each test on a fresh database file.
func freshStore() throws -> Store {
    try Store(path: try TestSupport.temporaryDirectory("store").appendingPathComponent("state.sqlite").path)
}

struct StoreTests {
    let job = NewJob(name: "digits", owner: "alice", spec: "model: {kind: mlp}", minWorkers: 2, maxWorkers: 3)

    @Test func theDatabaseIsInWALModeAndHealthy() throws {
        let store = try freshStore()
        #expect(try store.journalMode() == "wal")
        #expect(try store.integrityCheck() == "ok")
    }

    @Test func aRetriedSubmitWithTheSameRequestKeyMakesNoSecondJob() throws {
        let store = try freshStore()
        let first = try store.submit(job, requestKey: "req-1")
        let again = try store.submit(job, requestKey: "req-1")
        let other = try store.submit(job, requestKey: "req-2")
        #expect(first.created && !again.created && other.created)
        #expect(first.job.id == again.job.id)
        #expect(try store.jobs().count == 2)
        #expect(try store.events().filter { $0.kind == "job.submitted" }.count == 2)
    }

    /// A researcher's page of jobs is filtered before the limit: others' newer jobs cannot push
    /// theirs out of it.
    @Test func jobsFilterByOwnerBeforeTheLimit() throws {
        let store = try freshStore()
        let mine = try store.submit(job, requestKey: nil).job.id
        var others = job
        others.owner = "bob"
        for _ in 0..<5 { _ = try store.submit(others, requestKey: nil) }
        #expect(try store.jobs(owner: "alice", limit: 2).map(\.id) == [mine])
        #expect(try store.jobs(limit: 2).allSatisfy { $0.owner == "bob" })
        #expect(try store.jobs(state: .queued, owner: "bob", limit: 10).count == 5)
        // Likewise events by actor: alice's submission, the oldest event, does not fill bob's page.
        #expect(try store.events(actor: "bob", limit: 1).map(\.actor) == ["bob"])
    }

    @Test func everyAllowedTransitionWorksAndEveryOtherIsRefused() throws {
        for from in Job.State.allCases {
            for to in Job.State.allCases {
                let store = try freshStore()
                let id = try store.submit(job, requestKey: nil).job.id
                try drive(store, id, to: from)
                if from.allowedNext.contains(to) {
                    let moved = try store.transition(id, to: to, reason: "because", actor: "test")
                    #expect(moved.state == to)
                    #expect(moved.stateTimes[to] != nil)
                } else {
                    #expect(throws: StoreError.illegalTransition(job: id, from: from, to: to)) {
                        try store.transition(id, to: to, reason: nil, actor: "test")
                    }
                    #expect(try store.job(id).state == from, "a refused transition changes nothing")
                }
            }
        }
    }

    /// Walks a queued job to `state` along allowed edges.
    func drive(_ store: Store, _ id: Job.ID, to state: Job.State) throws {
        let path: [Job.State] = switch state {
        case .queued: []
        case .waiting: [.waiting]
        case .running: [.running]
        case .completed: [.running, .completed]
        case .failed: [.failed]
        case .cancelled: [.cancelled]
        }
        for s in path { try store.transition(id, to: s, reason: nil, actor: "test") }
    }

    @Test func cancellingAFinishedJobSaysSo() throws {
        let store = try freshStore()
        let id = try store.submit(job, requestKey: nil).job.id
        try store.transition(id, to: .running, reason: nil, actor: "t")
        try store.transition(id, to: .completed, reason: nil, actor: "t")
        let error = #expect(throws: StoreError.self) { try store.transition(id, to: .cancelled, reason: nil, actor: "alice") }
        #expect(error?.description == "job \(id) is already completed; it cannot become cancelled")
    }

    @Test func placingAJobMakesItsWorkersBusyAndFinishingReleasesThem() throws {
        let store = try freshStore()
        let a = try store.register(WorkerRegistration(name: "pku-01", institution: "pku", cores: 8, memoryBytes: 1 << 34))
        let b = try store.register(WorkerRegistration(name: "sjtu-01", institution: "sjtu", cores: 4, memoryBytes: 1 << 33))
        let id = try store.submit(job, requestKey: nil).job.id
        let running = try store.start(id, on: [a.id, b.id])
        #expect(running.state == .running)
        #expect(try store.assignments(of: id).map(\.rank) == [0, 1])
        #expect(try store.workers().map(\.state) == [.busy, .busy])
        #expect(try store.workers().map(\.jobId) == [id, id])
        try store.transition(id, to: .completed, reason: nil, actor: "coordinator")
        #expect(try store.workers().map(\.state) == [.idle, .idle])
        #expect(try store.assignments(of: id).isEmpty)
    }

    @Test func aLostWorkerLosesItsAssignmentAndComesBackIdle() throws {
        let store = try freshStore()
        let a = try store.register(WorkerRegistration(name: "pku-01", institution: "pku", cores: 8, memoryBytes: 1 << 34))
        let id = try store.submit(job, requestKey: nil).job.id
        try store.start(id, on: [a.id])
        #expect(try store.markLost(a.id, reason: "no heartbeat for 15 s") == id)
        #expect(try store.worker(named: "pku-01")?.state == .lost)
        #expect(try store.assignments(of: id).isEmpty)
        try store.heartbeat(a.id)
        #expect(try store.worker(named: "pku-01")?.state == .idle)
        #expect(try store.events().map(\.kind).suffix(2) == ["worker.lost", "worker.returned"])
    }

    @Test func reRegisteringAfterARestartKeepsABusyWorkerOnItsJob() throws {
        let store = try freshStore()
        let r = WorkerRegistration(name: "pku-01", institution: "pku", cores: 8, memoryBytes: 1 << 34)
        let a = try store.register(r)
        let id = try store.submit(job, requestKey: nil).job.id
        try store.start(id, on: [a.id])
        let again = try store.register(r)
        #expect(again.id == a.id)
        #expect(again.state == .busy)
        #expect(again.jobId == id)
    }

    /// Revoking the last admin would lock everyone out for good: refused, until another admin exists.
    @Test func theLastAdminCannotBeRevoked() throws {
        let store = try freshStore()
        try store.addPrincipal(name: "root", institution: "hub", role: .admin, publicKey: "k1", actor: "setup")
        try store.addPrincipal(name: "bob", institution: "pku", role: .researcher, publicKey: "k2", actor: "setup")
        #expect(throws: StoreError.self) { try store.revoke("root", actor: "root") }
        #expect(try store.principal(named: "root")?.revokedAt == nil)
        try store.revoke("bob", actor: "root")
        try store.addPrincipal(name: "second", institution: "hub", role: .admin, publicKey: "k3", actor: "setup")
        try store.revoke("root", actor: "second")
        #expect(try store.principal(named: "root")?.revokedAt != nil)
        #expect(throws: StoreError.self) { try store.revoke("second", actor: "second") }
    }

    /// A look at the log wants its newest events; paging with an id goes on from there.
    @Test func eventsAreTheNewestOrTheNextPage() throws {
        let store = try freshStore()
        for i in 0..<5 { try store.recordEvent(actor: "admin", kind: "test", detail: "\(i)") }
        let all = try store.events().filter { $0.kind == "test" }
        #expect(all.map(\.detail) == ["0", "1", "2", "3", "4"])
        #expect(try store.events(limit: 2, newest: true).map(\.detail) == ["3", "4"])
        #expect(try store.events(afterId: all[1].id, limit: 2).map(\.detail) == ["2", "3"])
    }

    @Test func theEventLogIsAppendOnly() throws {
        let store = try freshStore()
        try store.recordEvent(actor: "admin", kind: "test")
        #expect(throws: StoreError.self) {
            try store.write { db in try db.execute(sql: "DELETE FROM events") }
        }
        #expect(throws: StoreError.self) {
            try store.write { db in try db.execute(sql: "UPDATE events SET actor = 'mallory'") }
        }
        #expect(try store.events().map(\.actor) == ["admin"])
    }

    @Test func anOnlineBackupIsAConsistentCopy() throws {
        let store = try freshStore()
        for i in 0..<20 { _ = try store.submit(job, requestKey: "k\(i)") }
        let dir = try TestSupport.temporaryDirectory("backup")
        let target = dir.appendingPathComponent("copy.sqlite").path
        try store.backup(to: target)
        let copy = try Store(path: target)
        #expect(try copy.jobs().count == 20)
        #expect(try copy.integrityCheck() == "ok")
        #expect(throws: StoreError.self) { try store.backup(to: target) }
    }

    @Test func unknownJobsAreNotFound() throws {
        let store = try freshStore()
        let error = #expect(throws: StoreError.self) { try store.job(99) }
        #expect(error?.description == "job 99 does not exist")
    }
}
