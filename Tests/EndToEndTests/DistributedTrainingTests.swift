import CohortClient
import CohortCompute
import CohortWire
import Foundation
import Testing
import TestSupport

/// Real processes on loopback: a coordinator, workers enrolled with join tokens, jobs trained
/// synchronously over CURVE.
@Suite(.tags(.integration), .serialized, .timeLimit(.minutes(5)))
struct DistributedTrainingTests {
    static let examples = TestSupport.packageRoot.appendingPathComponent("deploy/datasets/examples")

    /// Starts `count` workers, each enrolled with its own token at its institution.
    func startWorkers(_ c: CoordinatorProcess, _ sites: [(name: String, institution: String)], extraArguments: [String] = []) async throws -> [Daemon] {
        var daemons: [Daemon] = []
        for site in sites {
            let token = try await c.cli(["admin", "token", "--institution", site.institution, "--role", "worker", "--ttl", "10m"])
            try #require(token.status == 0, "\(token.stderr)")
            let dir = c.dataDir + "/" + site.name
            daemons.append(try Daemon(try cohortBinary(), ["worker", "--state-dir", dir, "--join", token.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                                                            "--name", site.name, "--threads", "1"] + extraArguments,
                                      logPath: dir + ".log"))
        }
        return daemons
    }

    func waitForJob(_ c: CoordinatorProcess, _ id: Int64, until states: Set<String>, timeout: Double = 120) async throws -> JobView {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let out = try await c.cli(["status", "\(id)", "--json"])
            if out.status == 0, let s = try? JSONDecoder().decode(StatusReply.self, from: Data(out.stdout.utf8)), states.contains(s.job.state) {
                return s.job
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestSupportError("job \(id) did not reach \(states) within \(timeout) s; coordinator log:\n\(c.daemon?.log.suffix(3000) ?? "")")
    }

    func submit(_ c: CoordinatorProcess, _ spec: String) async throws -> Int64 {
        let path = c.dataDir + "/job-\(UUID().uuidString.prefix(6)).yaml"
        try spec.write(toFile: path, atomically: true, encoding: .utf8)
        let out = try await c.cli(["submit", "--json", path])
        try #require(out.status == 0, "\(out.stderr)")
        return try #require(try JSONDecoder().decode([String: Int64].self, from: Data(out.stdout.utf8))["job"])
    }

    /// A worker whose key was revoked is refused in the handshake: it says so and exits 1 at
    /// once, instead of retrying for ever a coordinator that will never let it in.
    @Test func aWorkerWhoseKeyWasRevokedSaysSoAndStops() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let first = try await startWorkers(c, [("gone-01", "pku")])
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !(try await c.cli(["workers"]).stdout.contains("gone-01")) { try await Task.sleep(for: .milliseconds(200)) }
        try #require(try await c.cli(["workers"]).stdout.contains("gone-01"), "the worker never registered:\n\(first[0].log)")
        first[0].stop()
        let revoke = try await c.cli(["admin", "revoke", "gone-01"])
        try #require(revoke.status == 0, "\(revoke.stderr)")
        let started = Date()
        let again = try Daemon(try cohortBinary(), ["worker", "--state-dir", c.dataDir + "/gone-01", "--name", "gone-01", "--threads", "1"],
                               logPath: c.dataDir + "/gone-01-again.log")
        while again.process.isRunning, Date().timeIntervalSince(started) < 20 { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!again.process.isRunning, "a revoked worker kept trying for 20 s:\n\(again.log)")
        again.stop(signal: SIGKILL)
        #expect(again.process.terminationStatus == 1)
        #expect(again.log.contains("refused this worker's key") && again.log.contains("--join"), "\(again.log)")
    }

    @Test func threeWorkersOfTwoInstitutionsTrainDigitsToNinetyFivePercent() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("pku-02", "pku"), ("sjtu-01", "sjtu")])
        let spec = try String(contentsOf: Self.examples.appendingPathComponent("digits-mlp.yaml"), encoding: .utf8)
            + "\ncluster: {min-workers: 3, institutions: [pku, sjtu]}\n"
        let id = try await submit(c, spec)
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        #expect(job.step == 1500)
        let store = try CohortStoreReader(c.dataDir)
        let accuracy = try #require(try store.metric(job: id, "test_accuracy"))
        #expect(accuracy >= 0.95, "test accuracy \(accuracy)")
        let status = try await c.cli(["status", "\(id)"])
        #expect(status.stdout.contains("checkpoint.written"))

        // The model comes down in chunks and reads back as the 64-256-10 MLP it is.
        let out = c.dataDir + "/model.safetensors"
        let download = try await c.cli(["download", "\(id)", "--out", out])
        #expect(download.status == 0, "\(download.stderr)")
        let model = try Safetensors.read(from: URL(fileURLWithPath: out))
        #expect(model.tensors.first { $0.name == "layers.0.weight" }?.shape == [256, 64])
        #expect(model.metadata["job"] == "\(id)")
        // Downloaded again over the first: the file is replaced whole, and a file named like a
        // partial download is someone else's (left alone). Into a directory: the file goes
        // inside it, and nothing already there is touched.
        try Data("mine".utf8).write(to: URL(fileURLWithPath: out + ".part"))
        #expect(try await c.cli(["download", "\(id)", "--out", out]).status == 0)
        #expect(try String(contentsOfFile: out + ".part", encoding: .utf8) == "mine")
        #expect(try Safetensors.read(from: URL(fileURLWithPath: out)).metadata["job"] == "\(id)")
        let folder = c.dataDir + "/models"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: folder + "/notes.txt"))
        let intoFolder = try await c.cli(["download", "\(id)", "--out", folder])
        #expect(intoFolder.status == 0, "\(intoFolder.stderr)")
        #expect(try String(contentsOfFile: folder + "/notes.txt", encoding: .utf8) == "keep me")
        #expect(try Safetensors.read(from: URL(fileURLWithPath: folder + "/job-\(id).safetensors")).metadata["job"] == "\(id)")
        withExtendedLifetime(workers) {}
    }

    /// Workers on the coordinator's host take the ipc data endpoint (named by the session id of
    /// their CURVE registration) and train exactly as over tcp: with their shards in shared
    /// memory (the default) and with every byte through the ipc socket.
    /// A host without a writable /dev/shm (some containers) takes the socket path instead: then
    /// the shared-memory case checks that fallback, and says so.
    @Test(arguments: [false, true])
    func workersOnTheCoordinatorsHostUseIPCAndMatchOneProcess(socketsOnly requested: Bool) async throws {
        let shmWritable = access("/dev/shm", W_OK) == 0
        if !requested && !shmWritable { print("note: /dev/shm is not writable here; checking the fallback to the ipc socket instead") }
        let socketsOnly = requested || !shmWritable
        let c = try CoordinatorProcess(ipc: true, socketsOnly: requested)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let id = try await submit(c, Self.equivalenceSpec + "\ncluster: {min-workers: 2}\n")
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        for w in workers {
            #expect(w.log.contains("data=ipc"), "\(w.log.suffix(500))")
            #expect(w.log.contains("shards through shared memory") != socketsOnly, "\(w.log.suffix(800))")
        }
        let mode = try FileManager.default.attributesOfItem(atPath: c.dataDir + "/ipc")[.posixPermissions] as? Int
        #expect(mode == 0o700, "only the coordinator's user may open the ipc directory")
        let relative = try await relativeDistanceToOneProcess(c, id)
        #expect(relative <= 1e-5, "‖θ₂ − θ₁‖ / ‖θ₁‖ = \(relative)")
        // What went over the socket: the gradients themselves, or headers alone.
        let parameters: Int = 64 * 64 + 64 + 64 * 10 + 10
        let gradientBytes = Double(4 * parameters * 50)
        let sent = try #require(try CohortStoreReader(c.dataDir).metric(job: id, "bytes_sent_per_worker"))
        if socketsOnly {
            #expect(sent > gradientBytes, "\(sent) bytes sent, gradients alone are \(gradientBytes)")
        } else {
            #expect(sent < 0.2 * gradientBytes, "\(sent) bytes sent through the socket; the gradients (\(gradientBytes)) should be in shared memory")
        }
        // The run's segments are gone with it.
        let log = try String(contentsOfFile: c.dataDir + "/coordinator.log", encoding: .utf8)
        let offered = log.split(separator: "\n").first { $0.contains("shared memory offered") }
        #expect((offered != nil) != socketsOnly, "\(log.suffix(800))")
        if !requested && !shmWritable { #expect(log.contains("no shared memory for the workers on this host")) }
        let tag = offered.flatMap { $0.split(separator: " ").first { $0.hasPrefix("segments=") } }
            .map { URL(fileURLWithPath: String($0.dropFirst("segments=".count).dropLast())).lastPathComponent } ?? "-"
        #expect(tag.hasPrefix("cohort-") != socketsOnly, "segments named in \(offered ?? "")")
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []).filter { $0.hasPrefix(tag) }
        #expect(left.isEmpty, "segments left behind: \(left)")
        withExtendedLifetime(workers) {}
    }

    /// `mode: local` with plain averaging and one worker is exactly local training: the round's
    /// delta applied with lr 1 lands on the worker's own parameters.
    @Test func localModeWithAveragingAndOneWorkerEqualsOneProcess() async throws {
        let c = try CoordinatorProcess(ipc: true)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku")])
        let spec = Self.equivalenceSpec.replacingOccurrences(of: "training: {steps: 50, global-batch-size: 64}",
            with: "training: {steps: 50, global-batch-size: 64, mode: local, local-steps: 10, outer-optimizer: {kind: average}}")
        let id = try await submit(c, spec)
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let relative = try await relativeDistanceToOneProcess(c, id)
        #expect(relative <= 1e-5, "‖θ_local − θ_single‖ / ‖θ_single‖ = \(relative)")
        withExtendedLifetime(workers) {}
    }

    /// DiLoCo: two workers of two institutions, 10 inner AdamW steps per round, outer Nesterov
    /// (lr 0.7, momentum 0.9): a tenth of the rounds, and it still learns digits.
    @Test func diLoCoWithTwoWorkersLearnsDigitsWithATenthOfTheRounds() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let spec = """
            name: diloco
            model: {kind: mlp, hidden: [128]}
            data: {dataset: digits}
            optimizer: {kind: adamw, lr: 0.003}
            training: {steps: 600, global-batch-size: 64, mode: local, local-steps: 10}
            eval-every: 300
            seed: 2
            cluster: {min-workers: 2}
            """
        let id = try await submit(c, spec)
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let reader = try CohortStoreReader(c.dataDir)
        let accuracy = try #require(try reader.metric(job: id, "test_accuracy"))
        #expect(accuracy >= 0.9, "test accuracy \(accuracy)")
        let bytesIn = try #require(try reader.metric(job: id, "bytes_in"))
        let parameters = 64 * 128 + 128 + 128 * 10 + 10
        #expect(bytesIn == Double((4 * parameters + shardEnvelopeBytes) * 2 * 60), "one delta per worker per round: 60 rounds, not 600 steps")
        withExtendedLifetime(workers) {}
    }

    /// bf16 gradient shards (small ones, many per step) halve the bytes and still train.
    @Test func bf16ShardsHalveTheUplinkAndStillTrain() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let spec = try String(contentsOf: Self.examples.appendingPathComponent("digits-mlp.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "  global-batch-size: 64", with: "  global-batch-size: 64\n  shard-encoding: bf16\n  shard-size-kib: 16")
            + "\ncluster: {min-workers: 2}\n"
        let id = try await submit(c, spec)
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let reader = try CohortStoreReader(c.dataDir)
        let accuracy = try #require(try reader.metric(job: id, "test_accuracy"))
        #expect(accuracy >= 0.95, "test accuracy \(accuracy)")
        let bytesIn = try #require(try reader.metric(job: id, "bytes_in"))
        let parameters = 64 * 256 + 256 + 256 * 10 + 10
        #expect(bytesIn == Double((2 * parameters + 5 * shardEnvelopeBytes) * 2 * 1500), "2 bytes per element (5 shards), 2 members, 1500 steps")
        withExtendedLifetime(workers) {}
    }

    /// DESIGN.md's promise: distributed training equals single-process training with the same
    /// global batch, up to float summation order.
    static let equivalenceSpec = """
        name: equivalence
        model: {kind: mlp, hidden: [64], activation: tanh}
        data: {dataset: digits, sharding: shared}
        optimizer: {kind: adamw, lr: 0.003, weight-decay: 0.01}
        schedule: {kind: cosine, warmup-steps: 5}
        training: {steps: 50, global-batch-size: 64}
        eval-every: 0
        seed: 11
        """

    @Test func twoWorkersEqualOneProcessWithinOneInAHundredThousand() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let id = try await submit(c, Self.equivalenceSpec + "\ncluster: {min-workers: 2}\n")
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let relative = try await relativeDistanceToOneProcess(c, id)
        #expect(relative <= 1e-5, "‖θ₂ − θ₁‖ / ‖θ₁‖ = \(relative)")
        print("equivalence after 50 steps, 2 workers vs 1 process: ‖θ₂ − θ₁‖ / ‖θ₁‖ = \(relative)")
        withExtendedLifetime(workers) {}
    }

    /// ‖θ_dist − θ_single‖ / ‖θ_single‖ between the coordinator's final checkpoint of `id` and
    /// `cohort train` of the same spec in one process.
    func relativeDistanceToOneProcess(_ c: CoordinatorProcess, _ id: Int64) async throws -> Double {
        let distributed = try Safetensors.read(from: URL(fileURLWithPath: c.dataDir + "/checkpoints/job-\(id)/step-50.safetensors"))
        let dir = try TestSupport.temporaryDirectory("single")
        try Self.equivalenceSpec.write(toFile: dir.path + "/spec.yaml", atomically: true, encoding: .utf8)
        let single = try await runProcess(try cohortBinary(), ["train", dir.path + "/spec.yaml", "--out", dir.path, "--threads", "1"])
        #expect(single.status == 0, "\(single.stderr)")
        let local = try Safetensors.read(from: dir.appendingPathComponent("equivalence-step50.safetensors"))
        var diff = 0.0, norm = 0.0, compared = 0
        for t in local.tensors where !t.name.hasPrefix("optimizer") {
            let other = try #require(distributed.tensors.first { $0.name == t.name }, "\(t.name) missing from the coordinator's checkpoint")
            #expect(other.shape == t.shape)
            for (a, b) in zip(t.values, other.values) {
                diff += Double(a - b) * Double(a - b)
                norm += Double(a) * Double(a)
            }
            compared += 1
        }
        #expect(compared == 4)
        return (diff / norm).squareRoot()
    }
}

extension DistributedTrainingTests {
    static let faultSpec = """
        name: faults
        model: {kind: mlp, hidden: [256, 128]}
        data: {dataset: fashion-mnist}
        optimizer: {kind: adamw, lr: 0.001}
        training: {steps: 1500, global-batch-size: 128}
        eval-every: 0
        checkpoint-every: 200
        seed: 3
        cluster: {min-workers: 2, max-workers: 3}
        """

    /// `faultSpec`'s MLP on Fashion-MNIST: 784·256+256 + 256·128+128 + 128·10+10 parameters.
    static let faultParameters = 235_146

    /// The job's shard bytes, as its final metrics record them, cover every one of its 1,500
    /// steps with at least two members each way: totals that a run's restart or the
    /// coordinator's restart had set back to 0 would not.
    func expectBytesCoverEveryStep(_ c: CoordinatorProcess, _ id: Int64) throws {
        let reader = try CohortStoreReader(c.dataDir)
        let least = Double(1500 * 2 * Self.faultParameters * 4)
        for name in ["bytes_in", "bytes_out"] {
            let bytes = try #require(try reader.metric(job: id, name), "no \(name) metric")
            #expect(bytes >= least, "\(name) \(bytes) < \(least): the totals were reset")
        }
    }

    func events(_ c: CoordinatorProcess, _ id: Int64) async throws -> [EventView] {
        let out = try await c.cli(["events", "\(id)", "--json"])
        return try JSONDecoder().decode(EventsReply.self, from: Data(out.stdout.utf8)).events
    }

    func waitForStep(_ c: CoordinatorProcess, _ id: Int64, atLeast step: Int) async throws {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let out = try await c.cli(["status", "\(id)", "--json"])
            if let s = try? JSONDecoder().decode(StatusReply.self, from: Data(out.stdout.utf8)), s.job.step >= step { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSupportError("job \(id) never reached step \(step)")
    }

    /// Over tcp, and on the coordinator's host with shared memory (the run restarts without
    /// the victim, with new segments).
    @Test(arguments: [false, true])
    func killingAWorkerMidJobDoesNotStopTheJob(ipc: Bool) async throws {
        let c = try CoordinatorProcess(ipc: ipc)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("pku-02", "pku"), ("sjtu-01", "sjtu")])
        try await Task.sleep(for: .seconds(1)) // let all three register, so the job takes three
        let id = try await submit(c, Self.faultSpec)
        try await waitForStep(c, id, atLeast: 100)
        // While it runs, status shows each institution's link.
        let live = try await c.cli(["status", "\(id)", "--json"])
        let links = try JSONDecoder().decode(StatusReply.self, from: Data(live.stdout.utf8)).live?.links ?? []
        #expect(Set(links.map(\.institution)) == ["pku", "sjtu"])
        #expect(links.allSatisfy { $0.bytesIn > 0 && $0.bytesOut > 0 })
        let text = try await c.cli(["status", "\(id)"])
        #expect(text.stdout.contains("links     per institution"))
        let victim = try #require(workers.first { $0.process.isRunning })
        victim.stop(signal: SIGKILL)
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        #expect(job.step == 1500)
        let kinds = try await events(c, id).map(\.kind)
        #expect(kinds.contains("worker.lost"))
        #expect(kinds.last == "job.completed")
        // (With shared memory only headers cross the socket: the bytes the totals count.)
        if !ipc { try expectBytesCoverEveryStep(c, id) }
        withExtendedLifetime(workers) {}
    }

    @Test func aWorkerStoppedWithSIGTERMSaysGoodbyeAndTheJobGoesOnWithoutWaiting() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        try await Task.sleep(for: .seconds(1))
        let id = try await submit(c, Self.faultSpec.replacingOccurrences(of: "min-workers: 2", with: "min-workers: 1"))
        try await waitForStep(c, id, atLeast: 100)
        workers[1].stop(signal: SIGTERM)
        #expect(workers[1].process.terminationStatus == 0, "SIGTERM is a clean exit")
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let lost = try await events(c, id).filter { $0.kind == "worker.lost" }.map(\.detail)
        #expect(lost == ["it stopped (said goodbye)"])
        withExtendedLifetime(workers) {}
    }

    @Test func aWorkerThatArrivesLaterJoinsTheRunningJob() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        var workers = try await startWorkers(c, [("pku-01", "pku")])
        let id = try await submit(c, Self.faultSpec.replacingOccurrences(of: "min-workers: 2", with: "min-workers: 1"))
        try await waitForStep(c, id, atLeast: 100)
        workers += try await startWorkers(c, [("sjtu-01", "sjtu")])
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let grown = try await events(c, id).filter { $0.kind == "job.grown" }.map(\.detail)
        #expect(grown == ["sjtu-01"])
        #expect(workers[1].log.contains("job taken"))
        withExtendedLifetime(workers) {}
    }

    /// A cancelled job's state goes to a checkpoint (rather than staying in the coordinator's
    /// memory), and `cohort resume` continues from it; `cohort watch` on a job that ended
    /// cancelled exits 1.
    @Test func aCancelledJobResumesWhereItStopped() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let id = try await submit(c, Self.faultSpec)
        try await waitForStep(c, id, atLeast: 300)
        #expect(try await c.cli(["cancel", "\(id)"]).status == 0)
        #expect(c.daemon?.log.contains("checkpoint on cancel") == true)
        let watched = try await c.cli(["watch", "\(id)"])
        #expect(watched.status == 1, "watch on a cancelled job exits \(watched.status)")
        let resumed = try await c.cli(["resume", "\(id)"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let queued = try #require(try await events(c, id).last { $0.kind == "job.queued" })
        let from = try #require(Int(queued.detail.split(separator: "its checkpoint at step ").last?.prefix(while: \.isNumber) ?? ""), "\(queued.detail)")
        #expect(from >= 300)
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let twice = try await c.cli(["resume", "\(id)"])
        #expect(twice.status == 4 && twice.stderr.contains("only a failed or cancelled job can be resumed"))
        withExtendedLifetime(workers) {}
    }

    @Test func killingTheCoordinatorMidJobResumesFromItsCheckpoint() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let id = try await submit(c, Self.faultSpec)
        try await waitForStep(c, id, atLeast: 450) // past two checkpoints
        c.daemon?.stop(signal: SIGKILL)
        // The newest checkpoint's file is lost too: the restart falls back to the one before
        // (it must never start over from step 0 unseen).
        let directory = c.dataDir + "/checkpoints/job-\(id)"
        let newest = try #require(try FileManager.default.contentsOfDirectory(atPath: directory)
            .compactMap { Int($0.dropFirst("step-".count).dropLast(".safetensors".count)) }.max())
        try FileManager.default.removeItem(atPath: directory + "/step-\(newest).safetensors")
        try c.start()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let all = try await events(c, id)
        #expect(all.contains { $0.kind == "job.waiting" && $0.detail.contains("coordinator restarted") })
        let log = c.daemon?.log ?? ""
        #expect(log.contains("a checkpoint cannot be read; trying the one before"))
        #expect(log.contains("step=\(newest - 200) [CohortCoordinator] resuming from checkpoint"), "\(log.suffix(1500))")
        withExtendedLifetime(workers) {}
    }
}

extension DistributedTrainingTests {
    /// SIGTERM to the coordinator mid-job, with no periodic checkpoints (`checkpoint-every: 0`,
    /// the default): it writes the job's state as a checkpoint on its way out, and the restarted
    /// coordinator resumes from that step instead of step 0.
    @Test func stoppingTheCoordinatorMidJobCheckpointsWhereItStopped() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let id = try await submit(c, Self.faultSpec.replacingOccurrences(of: "checkpoint-every: 200", with: "checkpoint-every: 0"))
        try await waitForStep(c, id, atLeast: 300)
        c.daemon?.stop(signal: SIGTERM)
        let stopLog = c.daemon?.log ?? ""
        let stoppedAt = try #require(stopLog.split(separator: "\n").last { $0.contains("checkpoint on stop") }, "\(stopLog.suffix(2000))")
        let step = try #require(stoppedAt.split(separator: "step=").last.flatMap { Int($0.prefix { $0.isNumber }) })
        #expect(step >= 300)
        try c.start()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        #expect(c.daemon?.log.contains("resuming from checkpoint") == true)
        try expectBytesCoverEveryStep(c, id)
        withExtendedLifetime(workers) {}
    }
}

extension DistributedTrainingTests {
    /// Checkpoints that cannot be written (here a file sits where the job's checkpoint directory
    /// goes; a full disk acts alike): training goes on past the periodic ones, each recorded as
    /// `checkpoint.failed`; the final one fails the job with the reason; once the way is clear,
    /// `cohort resume` finishes it from the state the coordinator kept.
    @Test func checkpointsThatCannotBeWrittenNeitherStallNorLoseTheJob() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        try FileManager.default.createDirectory(atPath: c.dataDir + "/checkpoints", withIntermediateDirectories: true)
        let blocker = c.dataDir + "/checkpoints/job-1"
        try Data("not a directory".utf8).write(to: URL(fileURLWithPath: blocker))
        let id = try await submit(c, """
            name: disk-trouble
            model: {kind: mlp, hidden: [64]}
            data: {dataset: digits}
            training: {steps: 60, global-batch-size: 32}
            eval-every: 0
            checkpoint-every: 20
            cluster: {min-workers: 2}
            """)
        #expect(id == 1)
        let failed = try await waitForJob(c, id, until: ["completed", "failed"], timeout: 90)
        #expect(failed.state == "failed")
        #expect(failed.reason?.contains("the final checkpoint could not be written") == true, "\(failed.reason ?? "")")
        #expect(failed.step == 60, "training went past the failed periodic checkpoints")
        #expect(try await events(c, id).filter { $0.kind == "checkpoint.failed" }.count == 2)
        try FileManager.default.removeItem(atPath: blocker)
        #expect(try await c.cli(["resume", "\(id)"]).status == 0)
        let done = try await waitForJob(c, id, until: ["completed", "failed"], timeout: 90)
        #expect(done.state == "completed", "\(done.reason ?? "")")
        #expect(FileManager.default.fileExists(atPath: blocker + "/step-60.safetensors"))
        withExtendedLifetime(workers) {}
    }
}

extension DistributedTrainingTests {
    /// A worker that cannot load its job (here its data root lacks the dataset) says so, and the
    /// job fails with its reason instead of waiting for it for good.
    @Test func aWorkerThatCannotLoadTheJobFailsItWithTheReason() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let empty = c.dataDir + "/empty-data-root"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let workers = try await startWorkers(c, [("pku-01", "pku")], extraArguments: ["--data-root", empty])
        let id = try await submit(c, """
            name: no-data-here
            model: {kind: mlp, hidden: [16]}
            data: {dataset: digits}
            training: {steps: 5, global-batch-size: 8}
            cluster: {min-workers: 1}
            """)
        let job = try await waitForJob(c, id, until: ["completed", "failed"], timeout: 60)
        #expect(job.state == "failed")
        #expect(job.reason?.contains("pku-01 cannot take the job") == true && job.reason?.contains("digits") == true, "\(job.reason ?? "")")
        withExtendedLifetime(workers) {}
    }
}

extension DistributedTrainingTests {
    /// A worker whose coordinator stops answering says so in its log (with what to check) while
    /// it keeps trying, and says when it answers again.
    @Test func aWorkerSaysWhenTheCoordinatorStopsAnswering() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku")])
        try await Task.sleep(for: .seconds(2))
        c.daemon?.stop(signal: SIGKILL)
        try await Task.sleep(for: .seconds(13))
        let log = { (try? String(contentsOfFile: c.dataDir + "/pku-01.log", encoding: .utf8)) ?? "" }
        #expect(log().contains("no answer from the coordinator; still trying"), "\(log().suffix(1500))")
        try c.start()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        try await Task.sleep(for: .seconds(2))
        #expect(log().contains("the coordinator answers again"), "\(log().suffix(1500))")
        withExtendedLifetime(workers) {}
    }
}

extension DistributedTrainingTests {
    /// `data.sharding: per-site`: each worker samples its own site's data with a batch of its
    /// slice's size (its own permutation, seeded by the job and the worker), so a site needs
    /// only its slice's examples: here 1024 of a global batch of 2048, which no site's ~1600
    /// digits could fill alone.
    @Test func perSiteShardingTrainsEachSiteOnItsOwnData() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let workers = try await startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let id = try await submit(c, """
            name: each-on-its-own
            model: {kind: mlp, hidden: [64]}
            data: {dataset: digits, sharding: per-site}
            optimizer: {kind: sgd, lr: 0.1, momentum: 0.9}
            training: {steps: 100, global-batch-size: 2048}
            eval-every: 0
            cluster: {min-workers: 2}
            """)
        let job = try await waitForJob(c, id, until: ["completed", "failed"])
        #expect(job.state == "completed", "\(job.reason ?? "")")
        let accuracy = try #require(try CohortStoreReader(c.dataDir).metric(job: id, "test_accuracy"))
        #expect(accuracy >= 0.85, "test accuracy \(accuracy)")
        for name in ["pku-01", "sjtu-01"] {
            let log = try String(contentsOfFile: c.dataDir + "/\(name).log", encoding: .utf8)
            #expect(!log.contains("step failed"), "\(name): \(log.suffix(800))")
        }
        withExtendedLifetime(workers) {}
    }
}

/// The bytes of a shard's header message (counted with its payload).
let shardEnvelopeBytes = Message.shard(ShardHeader(job: 1, step: 1, kind: .gradient, encoding: .fp32, shard: 0, shardCount: 1,
                                                   elementOffset: 0, elementCount: 1, sampleCount: 1)).encode().count

/// Reads metrics straight from a coordinator's database (after the fact, read-only).
struct CohortStoreReader {
    let path: String
    init(_ dataDir: String) throws { path = dataDir + "/state.sqlite" }

    func metric(job: Int64, _ name: String) throws -> Double? {
        let out = Process()
        out.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        out.arguments = ["python3", "-c", "import sqlite3,sys; r=sqlite3.connect(sys.argv[1]).execute('select value from metrics where job_id=? and name=? order by step desc limit 1',(int(sys.argv[2]),sys.argv[3])).fetchone(); print(r[0] if r else '')", path, "\(job)", name]
        let pipe = Pipe()
        out.standardOutput = pipe
        try out.run()
        out.waitUntilExit()
        return Double(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
