import CohortCompute
import Foundation
import Testing
import TestSupport
@testable import CohortSpec

struct JobSpecTests {
    static let examples = TestSupport.packageRoot.appendingPathComponent("deploy/datasets/examples")

    @Test func everyFieldIsRead() throws {
        let spec = try JobSpec.load(path: Self.examples.appendingPathComponent("poems-transformer.yaml").path)
        #expect(spec.name == "poems-transformer")
        guard case let .transformer(t) = spec.model else { Issue.record("not a transformer"); return }
        #expect(t.vocabulary == .auto && t.context == 64 && t.width == 64 && t.layers == 2 && t.heads == 4 && t.dropout == 0.2)
        #expect(spec.data == .init(dataset: "poems", sharding: .shared))
        #expect(spec.optimizer.kind == .adamw && spec.optimizer.lr == 0.003)
        #expect(spec.optimizer.betas == (0.9, 0.99) && spec.optimizer.eps == 1e-8)
        #expect(spec.optimizer.weightDecay == 0.1 && spec.optimizer.clipNorm == 1)
        #expect(spec.schedule.kind == .cosine && spec.schedule.warmupSteps == 30 && spec.schedule.minLR == 0.0001)
        #expect(spec.training == .init(steps: 300, globalBatchSize: 32))
        #expect(spec.evalEvery == 50 && spec.checkpointEvery == 100 && spec.seed == 42)
    }

    @Test(arguments: ["digits-mlp.yaml", "fashion-mlp.yaml", "poems-transformer.yaml"])
    func examplesParse(_ file: String) throws {
        _ = try JobSpec.load(path: Self.examples.appendingPathComponent(file).path)
    }

    @Test func defaultsFillEverythingOptional() throws {
        let spec = try JobSpec.parse(yaml: """
        name: tiny
        model: {kind: mlp}
        data: {dataset: digits}
        training: {steps: 10}
        """)
        guard case let .mlp(mlp) = spec.model else { Issue.record("not an mlp"); return }
        #expect(mlp.inputs == .auto && mlp.classes == .auto && mlp.hidden == [128] && mlp.activation == .relu)
        #expect(spec.data.sharding == .shared)
        #expect(spec.optimizer == JobSpec.Optimizer())
        #expect(spec.schedule == JobSpec.Schedule())
        #expect(spec.training.globalBatchSize == 64)
        #expect(spec.evalEvery == 100 && spec.seed == 0 && spec.checkpointEvery == 0)
        let sgd = try JobSpec.parse(yaml: "name: t\nmodel: {kind: mlp}\ndata: {dataset: d}\ntraining: {steps: 1}\noptimizer: {kind: sgd}\n")
        #expect(sgd.optimizer.lr == 0.1 && sgd.optimizer.weightDecay == 0)
        #expect(spec.optimizer.weightDecay == 0.01)
    }

    /// Unset, shards are 1 MiB on the way up: 1024 KiB of fp32 for fp32, int8 and topk, 2048
    /// for the two-byte encodings; a size the spec gives is kept, before or after the encoding.
    @Test func theDefaultShardIsOneMiBOfWhatTheEncodingSends() throws {
        func shard(_ training: String) throws -> Int {
            try JobSpec.parse(yaml: "name: t\nmodel: {kind: mlp}\ndata: {dataset: d}\ntraining: {steps: 1\(training)}\n").training.shardSizeKiB
        }
        #expect(try shard("") == 1024)
        #expect(try shard(", shard-encoding: fp32") == 1024)
        #expect(try shard(", shard-encoding: bf16") == 2048)
        #expect(try shard(", shard-encoding: fp16") == 2048)
        #expect(try shard(", shard-encoding: int8") == 1024)
        #expect(try shard(", shard-encoding: topk") == 1024)
        #expect(try shard(", shard-encoding: bf16, shard-size-kib: 64") == 64)
        #expect(try shard(", shard-size-kib: 1024, shard-encoding: bf16") == 1024)
    }

    @Test func everyProblemIsReportedAtOnceWithPathAndLine() throws {
        let yaml = """
        name: bad job
        model:
          kind: mlp
          hiden: [64]
          activation: sigmoid
        data:
          dataset: digits
          sharding: everywhere
        optimizer:
          kind: adamw
          momentum: 0.9
          lr: -1
        training:
          steps: 0
          global-batch-size: -3
        globalBatchSize: 4
        eval-every: often
        """
        let error = try #require(throws: SpecError.self) { try JobSpec.parse(yaml: yaml, source: "bad.yaml") }
        let text = error.description
        #expect(error.problems.count == 10, "\(text)")
        #expect(text.contains("line 15, column 22: training.global-batch-size: must be a positive integer, got -3"), "\(text)")
        #expect(text.contains("model.hiden: unknown key (did you mean `hidden`?)"))
        #expect(text.contains("globalBatchSize: unknown key"))
        #expect(text.contains("model.activation: must be one of relu, gelu, tanh, got sigmoid"))
        #expect(text.contains("data.sharding: must be one of shared, per-site"))
        #expect(text.contains("optimizer.momentum: applies to optimizer kind sgd only"))
        #expect(text.contains("optimizer.lr: must be a positive number, got -1"))
        #expect(text.contains("training.steps: must be a positive integer, got 0"))
        #expect(text.contains("eval-every: must be a non-negative integer"))
        #expect(text.contains("name: must be letters, digits"))
        #expect(text.hasPrefix("bad.yaml has 10 problems:"))
    }

    /// A model too large to hold is refused when the spec is read (submission), with the
    /// limit named; `auto` sizes count as their smallest, so the data can only add to it.
    @Test func aModelTooLargeToHoldIsAProblemOfTheSpec() throws {
        func problems(_ model: String) -> String {
            let yaml = "name: big\nmodel: \(model)\ndata: {dataset: digits}\ntraining: {steps: 10, global-batch-size: 8}\n"
            do {
                _ = try JobSpec.parse(yaml: yaml, source: "big.yaml")
                return ""
            } catch {
                return "\(error)"
            }
        }
        #expect(problems("{kind: mlp, hidden: [100000, 100000]}").contains("model: the model would have more than 2147483648 parameters"))
        #expect(problems("{kind: mlp, hidden: [4611686018427387904]}").contains("mlp.hidden[0] is 4611686018427387904, more than the 1073741824"))
        #expect(problems("{kind: transformer, width: 4096, layers: 20000, heads: 8}").contains("more than 2147483648 parameters"))
        #expect(problems("{kind: mlp, hidden: [4096, 4096]}") == "")
    }

    /// Every worker takes a slice of each global batch, so a job may not take more workers than
    /// a global batch has examples.
    @Test func moreWorkersThanExamplesPerBatchIsAProblem() throws {
        let yaml = "name: wide\nmodel: {kind: mlp}\ndata: {dataset: digits}\ntraining: {steps: 10, global-batch-size: 4}\ncluster: {min-workers: 2, max-workers: 8}\n"
        let error = try #require(throws: SpecError.self) { try JobSpec.parse(yaml: yaml) }
        #expect(error.description.contains("cluster.max-workers: is 8, more than training.global-batch-size (4)"), "\(error)")
        #expect((try? JobSpec.parse(yaml: yaml.replacingOccurrences(of: "max-workers: 8", with: "max-workers: 4"))) != nil)
    }

    @Test func camelAndSnakeCaseKeysSuggestKebabCase() throws {
        let error = try #require(throws: SpecError.self) {
            try JobSpec.parse(yaml: "name: a\nmodel: {kind: mlp}\ndata: {dataset: d}\ntraining: {steps: 1, global_batch_size: 8}\nevalEvery: 3\n")
        }
        #expect(error.description.contains("training.global_batch_size: unknown key (did you mean `global-batch-size`? keys are kebab-case)"))
        #expect(error.description.contains("evalEvery: unknown key (did you mean `eval-every`? keys are kebab-case)"))
    }

    @Test func missingRequiredFieldsAreEachNamed() throws {
        let error = try #require(throws: SpecError.self) { try JobSpec.parse(yaml: "seed: 3\n") }
        let paths = Set(error.problems.map(\.path))
        #expect(paths == ["name", "model", "data", "training"])
        #expect(error.description.contains("is required"))
    }

    @Test func yamlSyntaxErrorsGiveLineAndColumn() throws {
        let error = try #require(throws: SpecError.self) {
            try JobSpec.parse(yaml: "name: a\nmodel:\n  kind: [mlp\ntraining: {steps: 1}\n", source: "job.yaml")
        }
        let problem = try #require(error.problems.first)
        #expect(problem.line != nil && problem.column != nil)
        #expect(error.description.hasPrefix("job.yaml: line "))
        #expect(error.description.contains("YAML syntax error"))
    }

    @Test func transformerHeadsMustDivideWidthAndSizesMayBeAuto() throws {
        let error = try #require(throws: SpecError.self) {
            try JobSpec.parse(yaml: "name: a\nmodel: {kind: transformer, width: 100, heads: 3, vocabulary: lots}\ndata: {dataset: poems}\ntraining: {steps: 1}\n")
        }
        #expect(error.description.contains("model.heads: must divide model.width (100) evenly, got 3"))
        #expect(error.description.contains("model.vocabulary: must be a positive integer or `auto`, got lots"))
    }

    @Test func scheduleAndOptimizerCrossChecks() throws {
        let error = try #require(throws: SpecError.self) {
            try JobSpec.parse(yaml: """
            name: a
            model: {kind: mlp}
            data: {dataset: d}
            optimizer: {kind: sgd, nesterov: true, betas: [0.9, 0.99]}
            schedule: {kind: constant, min-lr: 0.01, warmup-steps: 20}
            training: {steps: 10}
            """)
        }
        let text = error.description
        #expect(text.contains("optimizer.nesterov: needs optimizer.momentum > 0"))
        #expect(text.contains("optimizer.betas: applies to optimizer kind adamw only"))
        #expect(text.contains("schedule.min-lr: applies to schedule kind cosine only"))
        #expect(text.contains("schedule.warmup-steps: must be fewer than training.steps (10), got 20"))
    }

    @Test func scheduleWarmsUpThenDecaysToMinimum() {
        var schedule = JobSpec.Schedule()
        schedule.kind = .cosine
        schedule.warmupSteps = 10
        schedule.minLR = 0.1
        #expect(schedule.learningRate(step: 0, totalSteps: 110, lr: 1) == 0.1)
        #expect(schedule.learningRate(step: 9, totalSteps: 110, lr: 1) == 1)
        #expect(schedule.learningRate(step: 10, totalSteps: 110, lr: 1) == 1)
        #expect(schedule.learningRate(step: 60, totalSteps: 110, lr: 1) == 0.55)
        #expect(abs(schedule.learningRate(step: 110, totalSteps: 110, lr: 1) - 0.1) < 1e-6)
    }
}
