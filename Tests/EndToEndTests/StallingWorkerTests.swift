import CohortCompute
import CohortSpec
import CohortTransport
import CohortWire
import Foundation
import Synchronization
import Testing
import TestSupport

/// A worker that does everything right (enrols, registers, heartbeats, loads "data", attaches,
/// says it is ready) except send its gradients: a stuck GPU, a deadlocked trainer.
final class StallingWorker: @unchecked Sendable { // its thread owns the sockets; others only flip `stop`
    let stop = Atomic<Bool>(false)
    let done = DispatchSemaphore(value: 0)
    /// `assign` notices received so far.
    let assignments = Atomic<Int>(0)

    /// With `partial`, from step `fromStep` on it sends the first `now` shards of a (zero)
    /// gradient as soon as a step's parameters are in and the rest `later` seconds after; before
    /// that step, all at once.
    /// It reports (empty) test metrics for step `lastStep`, as a worker does when a job ends.
    struct Partial: Sendable { let now: Int; let later: Double; let fromStep: UInt64; let lastStep: UInt64 }

    /// With `hostile`, it answers every step's parameters with poison instead of silence: a
    /// gradient of finite values large enough to overflow a weighted sum, one full of NaN, one
    /// of the wrong size, one for a stale step, one for another job, one for a job id beyond
    /// Int64, and metrics with counts of Int.max. Its gradients travel in `encoding` (fp32 or
    /// bf16: a bf16 job parks a first contribution unchecked and refuses it when it is fused).
    ///
    /// With `resync`, once the first parameters of each assignment arrive it says what a worker
    /// says whose copy of θ̃ was lost (`resync`), as a real one does when a lossy shard does not
    /// decode, and goes silent until it is assigned again.
    init(keyPath: String, address: CoordinatorAddress, serverKey: CurveKey, model: ModelDescription, contentHash: String?,
         hostile: Bool = false, partial: Partial? = nil, encoding: ShardEncoding = .fp32, resync: Bool = false) throws {
        let keys = try CurveKeyPair.load(from: keyPath)
        Thread { [self] in
            defer { done.signal() }
            guard let context = try? Context(), let control = try? Socket(context, .dealer), let data = try? Socket(context, .dealer) else { return }
            try? control.setLinger(milliseconds: 0)
            try? data.setLinger(milliseconds: 0)
            try? control.makeCurveClient(keys: keys, serverKey: serverKey)
            try? data.makeCurveClient(keys: keys, serverKey: serverKey)
            try? control.connect(address.endpoints.control)
            try? data.connect(address.endpoints.data)
            let register = try? ApiRequest(requestId: 1, method: ApiMethod.register,
                                           json: RegisterRequest(name: "stuck", institution: "", cores: 4, memoryBytes: 1 << 30))
            if let register { try? control.send(Message.apiRequest(register).encode()) }
            var sequence: UInt64 = 0
            var landed: [UInt64: [ShardHeader]] = [:] // parameter shards per step (partial)
            var pending: [(at: Date, header: ShardHeader)] = []
            var resyncedAssignment = 0
            func sendZeros(_ h: ShardHeader) {
                let zeros = [Float](repeating: 0, count: Int(h.elementCount)).withUnsafeBytes { Array($0) }
                try? data.send([.bytes(Message.shard(h).encode()), .bytes(zeros)])
            }
            while !stop.load(ordering: .relaxed) {
                sequence += 1
                try? control.send(Message.heartbeat(Heartbeat(sequence: sequence, sentAtNanos: 0)).encode(), dontWait: true)
                while let frames = try? control.receive(dontWait: true) {
                    guard case let .notice(n)? = try? frames[0].withUnsafeBytes({ try Message.decode($0) }), n.kind == NoticeKind.assign,
                          let a = try? n.decodeBody(as: TrainingNotice.Assignment.self) else { continue }
                    assignments.add(1, ordering: .relaxed)
                    let json = String(decoding: (try? JSONEncoder().encode(model)) ?? Data(), as: UTF8.self)
                    if let attach = try? Notice(kind: NoticeKind.attach, json: TrainingNotice.Attach(job: a.job)),
                       let ready = try? Notice(kind: NoticeKind.ready, json: TrainingNotice.Ready(job: a.job, model: json, parameterCount: 0,
                                                                                                 trainExamples: 0, contentHash: contentHash)) {
                        try? data.send(Message.notice(attach).encode())
                        try? control.send(Message.notice(ready).encode())
                    }
                }
                while let frames = try? data.receive(dontWait: true) { // parameters arrive
                    if resync, resyncedAssignment != assignments.load(ordering: .relaxed),
                       case let .shard(p)? = try? frames[0].withUnsafeBytes({ try Message.decode($0) }),
                       let notice = try? Notice(kind: NoticeKind.resync, json: TrainingNotice.Release(job: Int64(p.job), reason: "shard \(p.shard) does not decode")) {
                        try? control.send(Message.notice(notice).encode())
                        resyncedAssignment = assignments.load(ordering: .relaxed)
                    }
                    if let partial, frames.count == 2, case let .shard(p)? = try? frames[0].withUnsafeBytes({ try Message.decode($0) }) {
                        landed[p.step, default: []].append(p)
                        guard landed[p.step]!.count == Int(p.shardCount) else { continue }
                        if p.step == partial.lastStep,
                           let m = try? Notice(kind: NoticeKind.metrics, json: TrainingNotice.Metrics(job: Int64(p.job), step: Int(p.step), lossSum: 0, correct: 0, count: 1)) {
                            try? control.send(Message.notice(m).encode())
                            continue
                        }
                        for q in landed.removeValue(forKey: p.step)!.sorted(by: { $0.shard < $1.shard }) {
                            let h = ShardHeader(job: q.job, step: q.step, kind: .gradient, encoding: .fp32, shard: q.shard, shardCount: q.shardCount,
                                                elementOffset: q.elementOffset, elementCount: q.elementCount, sampleCount: 16)
                            if q.step < partial.fromStep || Int(q.shard) < partial.now { sendZeros(h) } else {
                                pending.append((Date().addingTimeInterval(partial.later), h))
                            }
                        }
                        continue
                    }
                    guard hostile, frames.count == 2,
                          case let .shard(p)? = try? frames[0].withUnsafeBytes({ try Message.decode($0) }) else { continue }
                    let n = Int(p.elementCount)
                    func payload(_ values: [Float]) -> [UInt8] {
                        guard encoding == .bf16 else { return values.withUnsafeBytes { Array($0) } }
                        return values.flatMap { v in let b = BFloat16.encode(v); return [UInt8(b & 0xFF), UInt8(b >> 8)] }
                    }
                    var header = ShardHeader(job: p.job, step: p.step, kind: .gradient, encoding: encoding, shard: p.shard,
                                             shardCount: p.shardCount, elementOffset: p.elementOffset, elementCount: p.elementCount, sampleCount: 16)
                    // Finite, but weighted by 16 samples and summed it would overflow fp32 to ∞
                    // (every other step: the coordinator records one rejection per member and step).
                    if p.step % 2 == 0 {
                        let overflowing = payload([Float](repeating: 3e38, count: n))
                        try? data.send([.bytes(Message.shard(header).encode()), .bytes(overflowing)])
                    }
                    let nan = payload([Float](repeating: .nan, count: n))
                    try? data.send([.bytes(Message.shard(header).encode()), .bytes(nan)])
                    let short = payload([Float](repeating: 1, count: max(n - 1, 0)))
                    try? data.send([.bytes(Message.shard(header).encode()), .bytes(short)])
                    let huge = payload([Float](repeating: 1e6, count: n))
                    header.step = p.step &- 1
                    try? data.send([.bytes(Message.shard(header).encode()), .bytes(huge)])
                    header.step = p.step
                    header.job = p.job + 100
                    try? data.send([.bytes(Message.shard(header).encode()), .bytes(huge)])
                    header.job = 1 << 63 // no Int64 job id is this large
                    try? data.send([.bytes(Message.shard(header).encode()), .bytes(huge)])
                    // Metrics whose counts would overflow the coordinator's sums.
                    var absurd = TrainingNotice.Metrics(job: Int64(p.job), step: Int(p.step), lossSum: 0, correct: 0, count: .max)
                    absurd.bytesSent = .max
                    if let m = try? Notice(kind: NoticeKind.metrics, json: absurd) { try? control.send(Message.notice(m).encode()) }
                }
                while let first = pending.first, first.at <= Date() { sendZeros(first.header); pending.removeFirst() }
                Thread.sleep(forTimeInterval: partial == nil ? 0.1 : 0.01)
            }
        }.start()
    }

    deinit {
        stop.store(true, ordering: .relaxed)
        done.wait()
    }
}

@Suite(.tags(.integration), .serialized, .timeLimit(.minutes(3)))
struct StallingWorkerTests {
    /// Enrols a fake member of `institution` and starts it on an MLP 64-hidden-10 over digits.
    func fake(_ c: CoordinatorProcess, _ name: String, _ institution: String, hidden: Int,
              hostile: Bool = false, partial: StallingWorker.Partial? = nil, encoding: ShardEncoding = .fp32,
              resync: Bool = false) async throws -> StallingWorker {
        let token = try await c.cli(["admin", "token", "--institution", institution, "--role", "worker"])
        let key = c.dataDir + "/\(name)/key"
        let enrolled = try await runProcess(try cohortBinary(), ["enroll", "--join", token.stdout, "--key", key, "--name", name],
                                           environment: [:], timeout: 30)
        #expect(enrolled.status == 0, "\(enrolled.stderr)")
        // What a real worker reports for `shared` digits: its files' hash and how it reads them.
        let hash = try ContentHash.identity(try DatasetManifest.load(dataset: "digits", dataRoot: DataRoot.resolve()))
        return try StallingWorker(keyPath: key, address: try CoordinatorAddress(parsing: c.address),
                                  serverKey: try CurveKeyPair.loadPublicKey(from: c.dataDir + "/coordinator.key.pub"),
                                  model: .mlp(.init(inputs: 64, hidden: [hidden], classes: 10)), contentHash: hash,
                                  hostile: hostile, partial: partial, encoding: encoding, resync: resync)
    }

    /// Submits `spec`, waits for it to end (it must complete), and returns its id and events.
    func complete(_ c: CoordinatorProcess, _ spec: String, timeout: Double) async throws -> (Int64, [EventView]) {
        let d = DistributedTrainingTests()
        let id = try await d.submit(c, spec)
        let job = try await d.waitForJob(c, id, until: ["completed", "failed"], timeout: timeout)
        #expect(job.state == "completed", "\(job.reason ?? "")")
        return (id, try await d.events(c, id))
    }

    /// The coordinator builds the job's model from what its workers report, but takes from that
    /// report only the sizes that come from data: a sole member that reports another hidden
    /// width than the spec's (or a model too large to hold) fails the job with why.
    @Test func aModelTheSpecDoesNotDescribeFailsTheJob() async throws {
        let c = try CoordinatorProcess()
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let liar = try await fake(c, "liar", "mit", hidden: 1 << 28)
        try await Task.sleep(for: .seconds(1))
        let d = DistributedTrainingTests()
        let id = try await d.submit(c, """
            name: misreported
            model: {kind: mlp, hidden: [64]}
            data: {dataset: digits}
            training: {steps: 5, global-batch-size: 16}
            cluster: {min-workers: 1}
            """)
        let job = try await d.waitForJob(c, id, until: ["completed", "failed"], timeout: 60)
        #expect(job.state == "failed")
        #expect(job.reason?.contains("the job's spec does not describe") == true, "\(job.reason ?? "")")
        withExtendedLifetime(liar) {}
    }

    /// Two real workers and one fake on digits: a small MLP, `steps` steps, all three needed.
    static func threeMemberSpec(_ name: String, steps: Int) -> String {
        """
        name: \(name)
        model: {kind: mlp, hidden: [32]}
        data: {dataset: digits}
        optimizer: {kind: sgd, lr: 0.1, momentum: 0.9}
        training: {steps: \(steps), global-batch-size: 48}
        eval-every: 0
        seed: 5
        cluster: {min-workers: 3}
        """
    }

    /// A member that trains but never reports the final evaluation (its evaluation failed, or it
    /// is hostile) does not keep the job open: after the grace, the job completes with the
    /// reports that arrived and an event names the silent member.
    @Test func aMemberThatNeverReportsTheFinalEvaluationDoesNotKeepTheJobOpen() async throws {
        let c = try CoordinatorProcess(extraArguments: ["--evaluation-grace", "1"])
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let real = try await DistributedTrainingTests().startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let mute = try await fake(c, "mute", "mit", hidden: 32, partial: .init(now: 0, later: 0, fromStep: .max, lastStep: .max))
        try await Task.sleep(for: .seconds(1))
        let (id, events) = try await complete(c, Self.threeMemberSpec("with-a-mute-member", steps: 20), timeout: 90)
        #expect(events.contains { $0.kind == "evaluation.incomplete" && $0.detail.contains("mute") }, "\(events.map(\.kind))")
        let accuracy = try CohortStoreReader(c.dataDir).metric(job: id, "test_accuracy")
        #expect(accuracy != nil, "the two members' reports were recorded")
        withExtendedLifetime((real, mute)) {}
    }

    @Test func aWorkerThatHeartbeatsButNeverSendsItsShardsDoesNotStallTheJob() async throws {
        let c = try CoordinatorProcess(deadlineSlack: 0.3)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let real = try await DistributedTrainingTests().startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let stuck = try await fake(c, "stuck", "mit", hidden: 32)
        try await Task.sleep(for: .seconds(1))
        let (id, events) = try await complete(c, Self.threeMemberSpec("with-a-straggler", steps: 30), timeout: 90)
        #expect(events.contains { $0.kind == "step.dropped" && $0.detail.contains("stuck") })
        // The straggler gets copies of at most 4 parameter sets while it sends nothing: about
        // 2 × 30 sets for the others and 5 for it, where unbounded it would be 3 × 30.
        let perSet = Double(4 * (64 * 32 + 32 + 32 * 10 + 10) + shardEnvelopeBytes)
        let bytesOut = try #require(try CohortStoreReader(c.dataDir).metric(job: id, "bytes_out"))
        #expect(bytesOut <= 70 * perSet, "sent \(bytesOut / perSet) parameter sets")
        withExtendedLifetime((real, stuck)) {}
    }

    /// A member whose copy of θ̃ is lost (under a lossy downlink, a parameter difference did not
    /// decode) says so and drops the job: the coordinator records it and restarts the run,
    /// whose start sends θ̃ whole, instead of training on while that member computes gradients
    /// of parameters nobody holds. A member that keeps saying it (broken, or hostile) gets
    /// `maxResyncs` restarts, then only the step deadlines; the job completes.
    @Test func aMemberThatLostItsCopyOfTheParametersIsGivenThemAgainAFewTimes() async throws {
        let c = try CoordinatorProcess(deadlineSlack: 0.3)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let real = try await DistributedTrainingTests().startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let lost = try await fake(c, "lost", "mit", hidden: 32, resync: true)
        try await Task.sleep(for: .seconds(1))
        let spec = Self.threeMemberSpec("with-a-lost-replica", steps: 20)
            .replacingOccurrences(of: "global-batch-size: 48}", with: "global-batch-size: 48, downlink-encoding: bf16}")
        let (_, events) = try await complete(c, spec, timeout: 120)
        let resyncs = events.filter { $0.kind == "member.resync" && $0.actor == "lost" }
        #expect(resyncs.filter { $0.detail.contains("does not decode") && !$0.detail.contains("not honoured") }.count == 3, "\(resyncs.map(\.detail))")
        #expect(resyncs.filter { $0.detail.contains("not honoured: it asked 3 times already") }.count == 1, "\(resyncs.map(\.detail))")
        // Assigned at the start and after each of the three restarts; the fourth was not one.
        #expect(lost.assignments.load(ordering: .relaxed) == 4)
        withExtendedLifetime((real, lost)) {}
    }

    /// At a deadline, some shards have contributions and one has none (every member is still
    /// sending). The step must wait for that shard and then close all of them together: closing
    /// the others at once left them complete without their optimizer step, and the step never
    /// ended. Two fake members (3 shards of 1,024 elements): one holds back its last shard,
    /// the other everything.
    @Test func aDeadlineWhileAShardHasNoContributionWaitsForItAndThenClosesTheStep() async throws {
        let c = try CoordinatorProcess(deadlineSlack: 0.3)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let fakes = [try await fake(c, "slow-tail", "mit", hidden: 32, partial: .init(now: 2, later: 1.5, fromStep: 3, lastStep: 6)),
                     try await fake(c, "slower", "eth", hidden: 32, partial: .init(now: 0, later: 2.5, fromStep: 3, lastStep: 6))]
        try await Task.sleep(for: .seconds(1))
        let (_, events) = try await complete(c, """
            name: ragged
            model: {kind: mlp, hidden: [32]}
            data: {dataset: digits}
            optimizer: {kind: sgd, lr: 0.1}
            training: {steps: 6, global-batch-size: 32, shard-size-kib: 4}
            eval-every: 0
            seed: 3
            cluster: {min-workers: 2}
            """, timeout: 60)
        #expect(events.contains { $0.kind == "step.dropped" && $0.detail.contains("slower") }, "\(events.map(\.kind))")
        withExtendedLifetime(fakes) {}
    }

    /// In fp32 and in bf16, whose first contribution of a shard is parked unchecked and
    /// refused only when the pass that fuses the next one with it finds the poison.
    @Test(arguments: [ShardEncoding.fp32, .bf16])
    func poisonedShardsInsideAValidSessionAreRejectedAndTheResultIsUnaffected(encoding: ShardEncoding) async throws {
        let c = try CoordinatorProcess(deadlineSlack: 0.3)
        try await onDedicatedThread { _ = try c.waitUntilServing() }
        let real = try await DistributedTrainingTests().startWorkers(c, [("pku-01", "pku"), ("sjtu-01", "sjtu")])
        let mallory = try await fake(c, "mallory", "mit", hidden: 64, hostile: true, encoding: encoding)
        try await Task.sleep(for: .seconds(1))
        let (id, events) = try await complete(c, """
            name: under-attack
            model: {kind: mlp, hidden: [64]}
            data: {dataset: digits}
            optimizer: {kind: sgd, lr: 0.1, momentum: 0.9, nesterov: true}
            training: {steps: 40, global-batch-size: 48, shard-encoding: \(encoding)}
            eval-every: 0
            seed: 9
            cluster: {min-workers: 3}
            """, timeout: 90)
        let rejections = events.filter { $0.kind == "shard.rejected" }.map(\.detail)
        #expect(rejections.contains { $0.contains("NaN or infinity") }, "\(rejections.prefix(5))")
        #expect(rejections.contains { $0.contains("must stay below 2^64") }, "\(rejections.prefix(5))")
        // A frame for no job is recorded without one (not among this job's events).
        let log = try String(contentsOfFile: c.dataDir + "/coordinator.log", encoding: .utf8)
        #expect(log.contains("no job has id 9223372036854775808"))
        #expect(events.contains { $0.kind == "metrics.rejected" }, "mallory's metrics were refused")
        let accuracy = try #require(try CohortStoreReader(c.dataDir).metric(job: id, "test_accuracy"))
        #expect(accuracy > 0.8, "the poison never reached the model: accuracy \(accuracy)")
        let model = try Safetensors.read(from: URL(fileURLWithPath: c.dataDir + "/checkpoints/job-\(id)/step-40.safetensors"))
        #expect(model.tensors.allSatisfy { $0.values.allSatisfy(\.isFinite) })
        withExtendedLifetime((real, mallory)) {}
    }
}
