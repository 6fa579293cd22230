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
