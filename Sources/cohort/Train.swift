import ArgumentParser
import CohortCompute
import CohortSpec
import CohortWorker
import Foundation
import Logging

/// `cohort train SPEC`: the compute core alone, in this process, on this machine's data.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a job spec locally in one process: try the compute core without a cluster.")

    @Argument(help: "The job spec (YAML, docs/job-spec.md).") var spec: String
    @Option(help: "Datasets directory. Env: COHORT_DATA_ROOT. Default: ~/.local/share/cohort/datasets.") var dataRoot: String?
    @Option(help: "Compute threads (BLAS and element-wise). Default: all cores.") var threads: Int?
    @Option(help: "Where checkpoints go. Default: ./checkpoints/NAME.") var out: String?
    @Option(help: "Override training.steps.") var steps: Int?

    func run() throws {
        var job: JobSpec
        do { job = try JobSpec.load(path: spec) } catch let e as SpecError { throw ValidationError(e.description) }
        if let steps {
            // The spec's own rules for training.steps, which parsing checked for its value.
            guard steps > 0 && steps <= 1_000_000_000 else { throw ValidationError("--steps must be from 1 to 10^9, got \(steps)") }
            guard job.schedule.warmupSteps < steps else {
                throw ValidationError("--steps \(steps) is not more than the spec's schedule.warmup-steps (\(job.schedule.warmupSteps))")
            }
            guard steps % job.training.localSteps == 0 else {
                throw ValidationError("--steps \(steps) is not a multiple of the spec's training.local-steps (\(job.training.localSteps))")
            }
            job.training.steps = steps
        }
        let logger = Logger(label: "cohort.train")
        let n = threads ?? ProcessInfo.processInfo.activeProcessorCount
        guard n >= 1 else { throw ValidationError("--threads must be at least 1, got \(n)") }
        ComputeThreads.set(n)
        logger.info("OpenBLAS", metadata: ["core": "\(ComputeThreads.openBLASCoreName)", "config": "\(ComputeThreads.openBLASConfig)",
                                            "OPENBLAS_CORETYPE": "\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)")",
                                            "threads": "\(n)"])
        let root = DataRoot.resolve(explicit: dataRoot)
        let directory = URL(fileURLWithPath: out ?? "checkpoints/\(job.name)")
        let trainer: LocalTrainer
        do {
            trainer = try LocalTrainer(spec: job, dataRoot: root, checkpointDirectory: directory)
        } catch let e as SpecError {
            throw ValidationError(e.description)
        }
        say("training \(job.name): \(trainer.model.modelDescription.summary), \(trainer.model.parameterCount) parameters; "
              + "\(trainer.train.count) training and \(trainer.test.count) test examples of `\(job.data.dataset)`")
        let result = try trainer.run { p in
            var line = "step \(String(repeating: " ", count: max(0, 6 - "\(p.step)".count)))\(p.step)/\(p.steps)"
                + String(format: "  loss %.4f  lr %.2e  %8.0f samples/s", p.loss, p.learningRate, p.samplesPerSecond)
            if let e = p.evaluation { line += String(format: "  test loss %.4f  accuracy %.2f%%", e.meanLoss, 100 * e.accuracy) }
            say(line)
        }
        say(String(format: "done in %.1f s (%.0f samples/s): test loss %.4f, accuracy %.2f%% on %d test %@",
                     result.seconds, result.samplesPerSecond, result.evaluation.meanLoss, 100 * result.evaluation.accuracy,
                     result.evaluation.count, trainer.train.vocabulary == nil ? "examples" : "characters"))
        say("checkpoint: \(result.checkpoint.path)")
    }
}

extension ModelDescription {
    var summary: String {
        switch self {
        case let .mlp(m): return "MLP \(([m.inputs] + m.hidden + [m.classes]).map(String.init).joined(separator: "-")) \(m.activation.rawValue)"
        case let .transformer(t):
            return "transformer vocab \(t.vocabulary), context \(t.context), width \(t.width), \(t.layers) layers, \(t.heads) heads"
        }
    }
}
