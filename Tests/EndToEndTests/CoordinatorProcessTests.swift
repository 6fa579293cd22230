import CohortClient
import CohortStore
import CohortTransport
import CohortWire
import Foundation
import Testing
import TestSupport

/// A coordinator process from the release binary, on a free port, CURVE on.
final class CoordinatorProcess: @unchecked Sendable { // used by one test at a time
    let dataDir: String
    let port: Int
    var daemon: Daemon?
    let ipc: Bool

    /// Tests share 2 cores with every other suite: members get 2 s of slack before a step drops
    /// them, unless a test is about dropping.
    let deadlineSlack: Double

    /// With `ipc`: shards through the ipc socket instead of shared memory (`--no-shared-memory`).
    let socketsOnly: Bool

    /// More `cohort coordinator` options.
    let extraArguments: [String]

    init(dataDir: String? = nil, ipc: Bool = false, socketsOnly: Bool = false, deadlineSlack: Double = 2, extraArguments: [String] = []) throws {
        self.extraArguments = extraArguments
        self.ipc = ipc
        self.socketsOnly = socketsOnly
        self.deadlineSlack = deadlineSlack
        self.dataDir = try dataDir ?? TestSupport.temporaryDirectory("coordinator").path
        port = freePortTriple()
        try start()
    }

    func start() throws {
        daemon = try Daemon(try cohortBinary(), ["coordinator", "--data-dir", dataDir, "--listen", "127.0.0.1:\(port)",
                                                  "--heartbeat-interval", "0.2", "--missed-heartbeats", "10",
                                                  "--deadline-slack", "\(deadlineSlack)"] + (ipc ? ["--ipc"] : []) + (socketsOnly ? ["--no-shared-memory"] : []) + extraArguments,
                            logPath: dataDir + "/coordinator.log")
    }

    var address: String { "127.0.0.1:\(port)" }
    /// The CLI as the first admin on the coordinator's host: `--key DATA_DIR/admin.key`, the
    /// coordinator's public key found beside it.
    var environment: [String: String] {
        ["COHORT_COORDINATOR": address, "COHORT_KEY": dataDir + "/admin.key"]
    }

    /// Waits until the coordinator has written its key and answers `hello`.
    func waitUntilServing(timeout: Double = 20) throws -> Client {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let key = try? CurveKeyPair.loadPublicKey(from: dataDir + "/coordinator.key.pub"), let userKeys = try? userKeys() {
                if let client = try? Client(address: CoordinatorAddress(parsing: address),
                                            credentials: .curve(keys: userKeys, serverKey: key), timeout: 0.5),
                   (try? client.hello()) != nil {
                    return client
                }
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestSupportError("the coordinator did not come up; log:\n\(daemon?.log ?? "")")
    }

    func userKeys() throws -> CurveKeyPair {
        try CurveKeyPair.load(from: dataDir + "/admin.key")
    }

    func cli(_ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(try cohortBinary(), arguments, environment: environment, timeout: 30)
    }
}

let digitsSpec = """
    name: NAME
    model: {kind: mlp, hidden: [32]}
    data: {dataset: digits}
    training: {steps: 10, global-batch-size: 32}
    """

@Suite(.tags(.integration), .serialized, .timeLimit(.minutes(5)))
struct CoordinatorProcessTests {
    @Test func theCLIDrivesTheCoordinatorWithTablesJSONAndExitCodes() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let specPath = c.dataDir + "/job.yaml"
        try digitsSpec.replacingOccurrences(of: "NAME", with: "digits-small").write(toFile: specPath, atomically: true, encoding: .utf8)

        let submitted = try await c.cli(["submit", "--json", "--request-id", "r-1", specPath])
        #expect(submitted.status == 0, "\(submitted.stderr)")
        let id = try JSONDecoder().decode([String: Int64].self, from: Data(submitted.stdout.utf8))["job"]
        #expect(id == 1)
        let again = try await c.cli(["submit", "--request-id", "r-1", specPath])
        #expect(again.stdout.contains("job 1 was already submitted with this request id"))

        let jobs = try await c.cli(["jobs"])
        #expect(jobs.stdout.hasPrefix("ID  NAME"))
        #expect(jobs.stdout.contains("needs 1 worker, 0 idle fit: no worker has registered yet"))
        let json = try await c.cli(["jobs", "--json", "--state", "waiting"])
        let parsed = try JSONDecoder().decode(JobsReply.self, from: Data(json.stdout.utf8))
        #expect(parsed.jobs.map(\.id) == [1])

        let status = try await c.cli(["status", "1"])
        #expect(status.stdout.contains("state     waiting"))
        #expect(try await c.cli(["cancel", "1"]).status == 0)
        let twice = try await c.cli(["cancel", "1"])
        #expect(twice.status == 4)
        #expect(twice.stderr.contains("job 1 is already cancelled"))
        let missing = try await c.cli(["status", "77"])
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("job 77 does not exist"))

        try "name: x\ntraining: {steps: -3}\n".write(toFile: specPath, atomically: true, encoding: .utf8)
        let bad = try await c.cli(["submit", specPath])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("training.steps"))
        #expect(bad.stderr.contains("model"))

        // A researcher enrols with a join token from the CLI and works without any key flags.
        let token = try await c.cli(["admin", "token", "--institution", "pku", "--role", "researcher", "--ttl", "1h"])
        #expect(token.status == 0, "\(token.stderr)")
        let aliceKey = c.dataDir + "/alice/key"
        let enrolled = try await runProcess(try cohortBinary(), ["enroll", "--join", token.stdout, "--key", aliceKey, "--name", "alice"],
                                           environment: [:], timeout: 30)
        #expect(enrolled.stdout.contains("enrolled as alice: researcher at pku"), "\(enrolled.stderr)")
        let reuse = try await runProcess(try cohortBinary(), ["enroll", "--join", token.stdout, "--key", c.dataDir + "/mallory/key"],
                                         environment: [:], timeout: 30)
        #expect(reuse.status == 4 && reuse.stderr.contains("already used"))
        try digitsSpec.replacingOccurrences(of: "NAME", with: "alices").write(toFile: specPath, atomically: true, encoding: .utf8)
        let asAlice = ["COHORT_KEY": aliceKey, "COHORT_COORDINATOR": ""]
        let mine = try await runProcess(try cohortBinary(), ["submit", "--json", specPath], environment: asAlice.filter { !$0.value.isEmpty }, timeout: 30)
        #expect(mine.status == 0, "\(mine.stderr)")
        let others = try await runProcess(try cohortBinary(), ["cancel", "1", "--key", aliceKey], environment: [:], timeout: 30)
        #expect(others.status == 6 && others.stderr.contains("belongs to admin"))
        let revoke = try await c.cli(["admin", "revoke", "alice"])
        #expect(revoke.stdout.contains("revoked alice"))
        // Refused in the handshake, and told so at once rather than after the time-out.
        let asked = Date()
        let refused = try await runProcess(try cohortBinary(), ["jobs", "--key", aliceKey, "--timeout", "20"], environment: [:], timeout: 30)
        #expect(refused.status == 6, "\(refused.stderr)")
        #expect(refused.stderr.contains("refused this key") && refused.stderr.contains("revoked"), "\(refused.stderr)")
        #expect(Date().timeIntervalSince(asked) < 10, "a revoked key waited out the time-out")

        let events = try await c.cli(["events", "1"])
        #expect(events.stdout.contains("job.cancelled"))

        let backupPath = c.dataDir + "/backup.sqlite"
        let backup = try await c.cli(["admin", "backup", "--data-dir", c.dataDir, "--out", backupPath])
        #expect(backup.stdout.contains("integrity: ok"))

        c.daemon?.stop(signal: SIGTERM)
        #expect(c.daemon?.process.terminationStatus == 0, "SIGTERM is a graceful exit")
        let unreachable = try await c.cli(["jobs", "--timeout", "1"])
        #expect(unreachable.status == 5)
        #expect(unreachable.stderr.contains("did not answer within 1 s"))
    }

    /// While a client submits in a loop, the coordinator is killed with SIGKILL at random moments
    /// and restarted, 30 times. Every acknowledged submit must exist exactly once afterwards,
    /// with its event, and the database must pass `PRAGMA integrity_check`.
    /// A second coordinator on the same data directory is refused before it touches anything:
    /// it used to remove the first one's ipc socket before failing to bind.
    @Test func aSecondCoordinatorOnTheSameDataDirectoryIsRefused() async throws {
        let c = try CoordinatorProcess(ipc: true)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        #expect(FileManager.default.fileExists(atPath: c.dataDir + "/ipc/data"))
        let second = try await runProcess(try cohortBinary(), ["coordinator", "--data-dir", c.dataDir, "--listen", "127.0.0.1:\(freePortTriple())", "--ipc"],
                                          environment: [:], timeout: 30)
        #expect(second.status == 1, "\(second.stderr)")
        #expect(second.stderr.contains("another coordinator (pid \(c.daemon?.process.processIdentifier ?? 0)) is using \(c.dataDir)"), "\(second.stderr)")
        #expect(FileManager.default.fileExists(atPath: c.dataDir + "/ipc/data"), "the first one's ipc socket is still there")
        #expect(try await c.cli(["jobs"]).status == 0)
    }

    @Test(.tags(.slow)) func killedThirtyTimesMidSubmitNothingAcknowledgedIsLostOrDoubled() async throws {
        let c = try CoordinatorProcess()
        let acknowledged = try await onDedicatedThread { () -> [String: Int64] in
            var rng = SeededGenerator(seed: 30)
            var acked: [String: Int64] = [:]
            var next = 0
            var pending: String? = nil // a request that was sent but not acknowledged: retried as is
            for _ in 0..<30 {
                let client = try c.waitUntilServing()
                let killAt = Date().addingTimeInterval(Double.random(in: 0.05...0.4, using: &rng))
                while Date() < killAt {
                    let key = pending ?? "req-\(next)"
                    if pending == nil { next += 1 }
                    pending = key
                    let spec = digitsSpec.replacingOccurrences(of: "NAME", with: key)
                    guard let reply = try? client.submit(spec: spec, requestId: key) else { break }
                    acked[key] = reply.job.id
                    pending = nil
                }
                c.daemon?.stop(signal: SIGKILL)
                try c.start()
            }
            // Finish the last unacknowledged request, as a real client would.
            let client = try c.waitUntilServing()
            if let key = pending {
                acked[key] = try client.submit(spec: digitsSpec.replacingOccurrences(of: "NAME", with: key), requestId: key).job.id
            }
            return acked
        }
        c.daemon?.stop(signal: SIGTERM)
        #expect(acknowledged.count > 30, "the loop must have submitted through the kills")

        let store = try Store(path: c.dataDir + "/state.sqlite")
        #expect(try store.integrityCheck() == "ok")
        let jobs = try store.jobs(limit: 100_000)
        let byName = Dictionary(grouping: jobs, by: \.name)
        for (key, id) in acknowledged {
            #expect(byName[key]?.count == 1, "\(key) must exist exactly once")
            #expect(byName[key]?.first?.id == id)
        }
        let submittedEvents = try store.events(limit: 1_000_000).filter { $0.kind == "job.submitted" }
        #expect(submittedEvents.count == jobs.count, "one submit event per job, none lost")
        #expect(Set(submittedEvents.compactMap(\.jobId)) == Set(jobs.map(\.id)))
        let starts = try store.events(limit: 1_000_000).filter { $0.kind == "coordinator.started" }.count
        #expect(starts == 31)
    }
}

extension Tag {
    @Tag static var slow: Self
}
