/// The result of one `forwardBackward`.
public struct StepResult: Sendable, Hashable {
    /// Mean loss over the batch's predictions (examples for a classifier, tokens for a LM).
    public var loss: Float
    /// Top-1 correct predictions.
    public var correct: Int
    /// Predictions made: examples for a classifier, predicted tokens (examples × length) for a LM.
    public var count: Int
    /// Examples in the batch (the weight n_i a coordinator gives this contribution).
    public var examples: Int
}

/// The result of `evaluate`: sums, so that several batches or workers can be combined.
public struct Evaluation: Sendable, Hashable {
    /// Sum of per-prediction cross-entropy losses (nats).
    public var lossSum: Double
    public var correct: Int
    public var count: Int
    public var meanLoss: Double { count == 0 ? 0 : lossSum / Double(count) }
    public var accuracy: Double { count == 0 ? 0 : Double(correct) / Double(count) }

    public init(lossSum: Double = 0, correct: Int = 0, count: Int = 0) {
        self.lossSum = lossSum
        self.correct = correct
        self.count = count
    }

    public static func + (a: Evaluation, b: Evaluation) -> Evaluation {
        Evaluation(lossSum: a.lossSum + b.lossSum, correct: a.correct + b.correct, count: a.count + b.count)
    }
}

/// A trainable model built from a `ModelDescription`: every parameter is a view into ONE flat
/// Float buffer (`parameters`), and so is every gradient (`gradients`, same layout). Activations
/// live in an arena that is sized for the largest batch seen and reused every step.
///
/// Not thread-safe; one owner drives it. `ComputeThreads.set` decides how many cores it uses.
public final class Model {
    public let modelDescription: ModelDescription
    /// Every parameter, packed back to back in `parameterTable` order.
    public let parameters: FlatBuffer
    /// The gradient of every parameter, same layout as `parameters`. `forwardBackward` adds to it.
    public let gradients: FlatBuffer
    /// (name, shape, offset) of each parameter tensor, in flat-buffer order.
    public let parameterTable: [ParameterInfo]

    private let network: Network

    public var parameterCount: Int { parameters.count }

    /// Builds the model and initialises its parameters deterministically from `seed`.
    /// Throws `ComputeError.invalidDescription` for a description that cannot be built.
    public init(_ description: ModelDescription, seed: UInt64) throws {
        modelDescription = description
        var layout = ParameterLayout()
        var inits: [Initialiser] = []
        switch description {
        case let .mlp(d):
            let net = try MLPNetwork(d, layout: &layout, inits: &inits)
            network = .mlp(net)
        case let .transformer(d):
            let net = try TransformerNetwork(d, layout: &layout, inits: &inits)
            network = .transformer(net)
        }
        parameterTable = layout.table
        parameters = FlatBuffer(count: layout.count)
        gradients = FlatBuffer(count: layout.count)
        // One generator per tensor, seeded from (seed, tensor index): adding a tensor later does
        // not change how the others start.
        for (i, info) in layout.table.enumerated() {
            var rng = Xoshiro256(seed: seed ^ splitMix64(UInt64(i) &+ 0x5EED))
            inits[i].fill(parameters.baseAddress + info.offset, count: info.count, rng: &rng)
        }
    }

    /// The parameter layout a description gives, without building the model.
    public static func parameterTable(for description: ModelDescription) throws -> [ParameterInfo] {
        var layout = ParameterLayout()
        var inits: [Initialiser] = []
        switch description {
        case let .mlp(d): _ = try MLPNetwork(d, layout: &layout, inits: &inits)
        case let .transformer(d): _ = try TransformerNetwork(d, layout: &layout, inits: &inits)
        }
        return layout.table
    }

    /// A parameter tensor as a view into `parameters` (nil for an unknown name).
    public func parameter(named name: String) -> Tensor? {
        parameterTable.first { $0.name == name }.map { Tensor(view: parameters, offset: $0.offset, shape: $0.shape) }
    }

    /// A gradient tensor as a view into `gradients` (nil for an unknown name).
    public func gradient(named name: String) -> Tensor? {
        parameterTable.first { $0.name == name }.map { Tensor(view: gradients, offset: $0.offset, shape: $0.shape) }
    }

    public func zeroGradients() { gradients.zero() }

    /// Forward and backward over `batch`: ADDS the gradient of the batch's mean loss to
    /// `gradients` (call `zeroGradients` first for a fresh step). `dropoutSeed` draws the dropout
    /// masks (ignored without dropout); use a different one per step and rank.
    public func forwardBackward(_ batch: Batch, dropoutSeed: UInt64 = 0) throws -> StepResult {
        guard batch.count > 0 else { throw ComputeError.invalidBatch("the batch is empty; forwardBackward needs at least one example") }
        let r: RunResult
        switch network {
        case let .mlp(n): r = try n.run(batch, parameters: parameters, gradients: gradients, train: true)
        case let .transformer(n): r = try n.run(batch, parameters: parameters, gradients: gradients, train: true, dropoutSeed: dropoutSeed)
        }
        return StepResult(loss: Float(r.lossSum / Double(r.count)), correct: r.correct, count: r.count, examples: batch.count)
    }

    /// Loss sum, correct count and prediction count over `batch`, without dropout or gradients.
    public func evaluate(_ batch: Batch) throws -> Evaluation {
        if batch.count == 0 { return Evaluation() }
        let r: RunResult
        switch network {
        case let .mlp(n): r = try n.run(batch, parameters: parameters, gradients: gradients, train: false)
        case let .transformer(n): r = try n.run(batch, parameters: parameters, gradients: gradients, train: false, dropoutSeed: 0)
        }
        return Evaluation(lossSum: r.lossSum, correct: r.correct, count: r.count)
    }
}

enum Network {
    case mlp(MLPNetwork)
    case transformer(TransformerNetwork)
}

/// What a network's pass returns: sums over its predictions.
struct RunResult {
    var lossSum: Double
    var correct: Int
    var count: Int

    init(lossSum: Double, correct: Int, count: Int) {
        self.lossSum = lossSum; self.correct = correct; self.count = count
    }

    /// Sums per-row losses and hits in row order (fixed order: reproducible).
    init(rowLoss: UnsafePointer<Float>, rowHit: UnsafePointer<Float>, rows: Int) {
        var l = 0.0, h = 0
        for r in 0..<rows { l += Double(rowLoss[r]); h += rowHit[r] > 0 ? 1 : 0 }
        lossSum = l; correct = h; count = rows
    }
}
