import CohortCompute
import CohortSpec
import Foundation

/// Trains a job spec in this process, on this machine's data (`cohort train`): the compute core
/// without a cluster. The distributed trainer (workers issue) runs the same steps with the
/// gradient going to the coordinator instead of to the local optimizer.
public final class LocalTrainer {
    public struct Progress: Sendable {
        public var step: Int
        public var steps: Int
        public var loss: Float
        public var learningRate: Float
        public var samplesPerSecond: Double
        /// Present on evaluation steps.
        public var evaluation: Evaluation?
    }

    public struct Result: Sendable {
        public var steps: Int
        public var evaluation: Evaluation
        public var checkpoint: URL
        public var samplesPerSecond: Double
        public var seconds: Double
    }

    public let spec: JobSpec
    public let model: Model
    public let train: Dataset
    public let test: Dataset
    public let manifest: DatasetManifest
    let optimizer: Optimizer
    let optimizerState: FlatBuffer
    let sampler: Sampler
    let checkpointDirectory: URL

    /// Loads the dataset named by the spec from `dataRoot`, builds the model, and checks that
    /// they fit each other (every problem in one error).
    public init(spec: JobSpec, dataRoot: URL, checkpointDirectory: URL) throws {
        self.spec = spec
        manifest = try DatasetManifest.load(dataset: spec.data.dataset, dataRoot: dataRoot)
        let description = try spec.modelDescription(dataset: manifest)
        var context: Int?
        if case let .transformer(t) = description { context = t.context }
        train = try Dataset.load(manifest, split: .train, context: context)
        test = try Dataset.load(manifest, split: .test, context: context)
        model = try Model(description, seed: spec.seed)
        optimizer = spec.optimizer.computeOptimizer
        try optimizer.validate()
        optimizerState = optimizer.makeState(parameterCount: model.parameterCount)
        sampler = try Sampler(seed: spec.seed, datasetSize: train.count, globalBatchSize: spec.training.globalBatchSize)
        self.checkpointDirectory = checkpointDirectory
    }

    /// Runs every step, evaluating every `eval-every` steps and after the last, and writes a
    /// checkpoint every `checkpoint-every` steps and after the last.
    public func run(progress: (Progress) -> Void) throws -> Result {
        let steps = spec.training.steps
        let start = Date()
        var samples = 0
        var windowStart = Date(), windowSamples = 0
        var last = Evaluation()
        var checkpoint = checkpointDirectory
        for step in 0..<steps {
            let batch = train.gather(sampler.indices(step: step, rank: 0, worldSize: 1))
            model.zeroGradients()
            let r = try model.forwardBackward(batch, dropoutSeed: spec.seed &+ UInt64(step) &* 0x9E37_79B9)
            var scale: Float = 1
            if let maxNorm = spec.optimizer.clipNorm {
                let norm = GradientClipping.norm(UnsafeBufferPointer(model.gradients.buffer))
                scale = GradientClipping.scale(norm: norm, maxNorm: maxNorm)
            }
            let lr = spec.schedule.learningRate(step: step, totalSteps: steps, lr: spec.optimizer.lr)
            optimizer.step(parameters: model.parameters, gradients: model.gradients, state: optimizerState,
                           learningRate: lr, t: step + 1, gradientScale: scale)
            guard r.loss.isFinite else {
                throw TrainingError("the loss became \(r.loss) at step \(step + 1); lower optimizer.lr or set optimizer.clip-norm")
            }
            samples += batch.count
            windowSamples += batch.count
            let done = step + 1
            let evaluate = done == steps || (spec.evalEvery > 0 && done % spec.evalEvery == 0)
            if evaluate { last = try evaluateTestSplit() }
            if done == steps || (spec.checkpointEvery > 0 && done % spec.checkpointEvery == 0) {
                checkpoint = try writeCheckpoint(step: done)
            }
            let elapsed = Date().timeIntervalSince(windowStart)
            if evaluate || elapsed >= 1 || done == 1 {
                progress(Progress(step: done, steps: steps, loss: r.loss, learningRate: lr,
                                  samplesPerSecond: Double(windowSamples) / max(elapsed, 1e-9), evaluation: evaluate ? last : nil))
                windowStart = Date()
                windowSamples = 0
            }
        }
        let seconds = Date().timeIntervalSince(start)
        return Result(steps: steps, evaluation: last, checkpoint: checkpoint, samplesPerSecond: Double(samples) / seconds, seconds: seconds)
    }

    /// Loss and accuracy over the whole test split.
    public func evaluateTestSplit(batchSize: Int = 512) throws -> Evaluation {
        let indices = test.evaluationIndices()
        var total = Evaluation()
        var i = 0
        while i < indices.count {
            let slice = indices[i..<min(i + batchSize, indices.count)]
            total = total + (try model.evaluate(test.gather(slice)))
            i += batchSize
        }
        return total
    }

    /// Parameters and optimizer state in one safetensors file, written atomically.
    func writeCheckpoint(step: Int) throws -> URL {
        try FileManager.default.createDirectory(at: checkpointDirectory, withIntermediateDirectories: true)
        let url = checkpointDirectory.appendingPathComponent("\(spec.name)-step\(step).safetensors")
        var extra = ["job": spec.name, "dataset": spec.data.dataset]
        if let vocabulary = manifest.vocabulary { extra["vocabulary"] = vocabulary.lastPathComponent }
        try ModelCheckpoint.write(to: url, model: model, optimizer: optimizer, state: optimizerState, step: step, extra: extra)
        return url
    }
}

/// Training could not go on; the description says why and what to change.
public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
