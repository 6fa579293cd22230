import CohortCompute
import CohortSpec
import CohortWire
import Foundation
import Testing
@testable import CohortCoordinator

/// Without clip-norm the coordinator updates each parameter shard as soon as every member's
/// contribution to it is in. A run that restarts mid-step (a member lost or joining) redoes the
/// step's exchange with the same training state; the shards updated before the restart must not
/// be updated again (a second SGD or Adam step, counted twice in the moments).
struct RunRestartTests {
    let spec: JobSpec
    let description = ModelDescription.mlp(.init(inputs: 300, hidden: [300], classes: 2))

    init() throws {
        spec = try JobSpec.parse(yaml: """
            name: restart
            model: {kind: mlp, inputs: 300, hidden: [300], classes: 2}
            data: {dataset: digits}
            optimizer: {kind: adamw, lr: 0.01}
            training: {steps: 10, global-batch-size: 8, shard-size-kib: 4}
            """)
    }

    /// A run of the job over `state`, started, every shard's aggregation begun.
    func run(_ state: JobRun.TrainingState?) throws -> JobRun {
        let run = JobRun(job: 1, spec: spec, members: ["a"], state: state)
        let model = String(decoding: try JSONEncoder().encode(description), as: UTF8.self)
        run.ready["a"] = TrainingNotice.Ready(job: 1, model: model, parameterCount: 0, trainExamples: 8, contentHash: "h")
        try run.start()
        return run
    }

    /// Member a's gradient for shard k (all ones), fused: the shard is then complete.
    func contribute(_ run: JobRun, shard k: Int) throws {
        let aggregator = try #require(run.aggregator)
        let r = aggregator.layout.range(k)
        let payload = [Float](repeating: 1, count: r.count).withUnsafeBytes { Array($0) }
        let h = ShardHeader(job: 1, step: 0, kind: .gradient, encoding: .fp32, shard: UInt32(k), shardCount: UInt32(aggregator.layout.shardCount),
                            elementOffset: UInt64(r.lowerBound), elementCount: UInt32(r.count), sampleCount: 8)
        let frame = Frame(payload)
        let outcome = frame.bytes.withUnsafeBytes { aggregator.contribute(from: "a", header: h, payload: $0, owner: frame) }
        #expect(outcome == .success(.complete(shard: k)))
    }

    @Test func shardsUpdatedBeforeARestartAreNotUpdatedAgainWhenTheStepIsRedone() throws {
        let first = try run(nil)
        let state = try #require(first.state)
        let before = Array(state.model.parameters.buffer)
        try contribute(first, shard: 0)
        first.applyShard(0)
        let afterOne = Array(state.model.parameters.buffer)
        let shard0 = try #require(first.aggregator).layout.range(0)
        #expect(afterOne[shard0] != before[shard0], "shard 0 took step 0's update")

        // The run restarts (the loop keeps the state and starts a new run over it): step 0 again.
        let second = try run(state)
        #expect(state.step == 0)
        try contribute(second, shard: 0)
        second.applyShard(0)
        try contribute(second, shard: 1)
        second.applyShard(1)
        let afterRedo = Array(state.model.parameters.buffer)
        #expect(afterRedo[shard0] == afterOne[shard0], "shard 0 must not take step 0's update twice")
        let shard1 = try #require(second.aggregator).layout.range(1)
        #expect(afterRedo[shard1] != before[shard1], "shard 1 takes its update in the redone step")
    }
}

/// A bf16 job without `shard-size-kib` took 2^18-element shards before bf16's default became
/// 2^19. A checkpoint written mid-step lists the shards that step had updated, by index: a run
/// resumed from it keeps the layout those indices were counted in (recorded beside them; 2^18
/// when an older checkpoint does not say), so that no range takes the step twice or never.
struct ResumedLayoutTests {
    let description = ModelDescription.mlp(.init(inputs: 1000, hidden: [600], classes: 2)) // 601,802 parameters

    func spec(_ training: String) throws -> JobSpec {
        try JobSpec.parse(yaml: """
            name: layout
            model: {kind: mlp, inputs: 1000, hidden: [600], classes: 2}
            data: {dataset: digits}
            optimizer: {kind: sgd, lr: 0.01}
            training: {steps: 10, global-batch-size: 8, \(training)}
            """)
    }

    func run(_ spec: JobSpec, _ state: JobRun.TrainingState?) throws -> JobRun {
        let run = JobRun(job: 1, spec: spec, members: ["a"], state: state)
        let model = String(decoding: try JSONEncoder().encode(description), as: UTF8.self)
        run.ready["a"] = TrainingNotice.Ready(job: 1, model: model, parameterCount: 0, trainExamples: 8, contentHash: "h")
        try run.start()
        return run
    }

    /// A fresh state restored from `metadata`, as a restarted coordinator builds it from a checkpoint.
    func restored(_ spec: JobSpec, _ metadata: [String: String]) throws -> JobRun.TrainingState {
        let model = try Model(description, seed: 1)
        let state = JobRun.TrainingState(model: model, optimizer: spec.coordinatorOptimizer,
                                         optimizerState: spec.coordinatorOptimizer.makeState(parameterCount: model.parameterCount), step: 0)
        state.restore(from: metadata)
        return state
    }

    @Test func aRunResumedMidStepKeepsTheLayoutItsUpdatedShardsWereCountedIn() throws {
        let bf16 = try spec("shard-encoding: bf16")
        let first = try run(bf16, nil)
        let aggregator = try #require(first.aggregator)
        #expect(aggregator.layout.shardElements == 1 << 19, "bf16's default")
        // Shard 1 complete and updated (ones in bf16), then the coordinator checkpoints mid-step.
        let r = aggregator.layout.range(1)
        let frame = Frame((0..<r.count).flatMap { _ in [UInt8(0x80), UInt8(0x3F)] })
        let h = ShardHeader(job: 1, step: 0, kind: .gradient, encoding: .bf16, shard: 1, shardCount: UInt32(aggregator.layout.shardCount),
                            elementOffset: UInt64(r.lowerBound), elementCount: UInt32(r.count), sampleCount: 8)
        #expect(frame.bytes.withUnsafeBytes { aggregator.contribute(from: "a", header: h, payload: $0, owner: frame) } == .success(.complete(shard: 1)))
        first.applyShard(1)
        let metadata = try #require(first.state).checkpointMetadata
        #expect(metadata["cohort.applied-shards"] == "1")
        #expect(metadata["cohort.applied-shard-elements"] == "\(1 << 19)")

        // Resumed by a version whose default differs: the recorded layout holds for that step.
        let recordedElsewhere = try restored(bf16, ["cohort.applied-shards": "1", "cohort.applied-shard-elements": "\(1 << 17)"])
        #expect(try run(bf16, recordedElsewhere).aggregator?.layout.shardElements == 1 << 17)
        #expect(try run(bf16, try restored(bf16, metadata)).aggregator?.layout.shardElements == 1 << 19)
        // A checkpoint from before the size was recorded: that version's default, 2^18, unless the spec set one.
        let older = ["cohort.applied-shards": "0,1,2"]
        #expect(try run(bf16, try restored(bf16, older)).aggregator?.layout.shardElements == 1 << 18)
        let explicit = try spec("shard-encoding: bf16, shard-size-kib: 2048")
        #expect(try run(explicit, try restored(explicit, older)).aggregator?.layout.shardElements == 1 << 19)
        // At a step boundary (nothing updated yet), the spec's layout.
        #expect(try run(bf16, try restored(bf16, [:])).aggregator?.layout.shardElements == 1 << 19)
    }
}

/// A `per-site` job compares only what must be shared: the vocabulary of a text dataset (its
/// members' data differ by design).
struct PerSiteReadyTests {
    @Test func perSiteMembersMustShareTheirVocabulary() throws {
        let spec = try JobSpec.parse(yaml: """
            name: poems-everywhere
            model: {kind: mlp, inputs: 4, hidden: [3], classes: 2}
            data: {dataset: digits, sharding: per-site}
            training: {steps: 2, global-batch-size: 4}
            """)
        let model = String(decoding: try JSONEncoder().encode(ModelDescription.mlp(.init(inputs: 4, hidden: [3], classes: 2))), as: UTF8.self)
        func run(_ hashes: [String?]) -> JobRun {
            let names = hashes.indices.map { "m\($0)" }
            let run = JobRun(job: 1, spec: spec, members: names, state: nil)
            for (name, hash) in zip(names, hashes) {
                run.ready[name] = TrainingNotice.Ready(job: 1, model: model, parameterCount: 0, trainExamples: 8, contentHash: hash)
            }
            return run
        }
        #expect(throws: Never.self) { try run([nil, nil]).start() }
        #expect(throws: Never.self) { try run(["vocabulary:sha256:aa", "vocabulary:sha256:aa"]).start() }
        let error = #expect(throws: TrainingError.self) { try run(["vocabulary:sha256:aa", "vocabulary:sha256:bb"]).start() }
        #expect(error?.description.contains("vocabularies for dataset `digits` differ") == true)
    }
}
