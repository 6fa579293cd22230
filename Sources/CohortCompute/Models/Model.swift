import CBLAS
import Dispatch

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

    public init(loss: Float, correct: Int, count: Int, examples: Int) {
        self.loss = loss
        self.correct = correct
        self.count = count
        self.examples = examples
    }
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
    /// Extra networks (each with its own activation arena) and gradient buffers for the other
    /// threads of a data-parallel step; made on first use.
    private var replicas: [Network] = []
    private var replicaGradients: [FlatBuffer] = []

    public var parameterCount: Int { parameters.count }

    /// Builds the model and initialises its parameters deterministically from `seed`.
    /// Throws `ComputeError.invalidDescription` for a description that cannot be built.
    /// The most parameters a model may have (8 GiB of fp32; the coordinator holds them with
    /// their optimizer state). A description beyond it, or whose sizes overflow, is refused
    /// with an error instead of trapping or failing to allocate.
    public static let maxParameters = 1 << 31
    /// The largest size a description may give any one dimension (so that the layer shapes,
    /// e.g. 4·width, cannot overflow).
    public static let maxDimension = 1 << 30

    public init(_ description: ModelDescription, seed: UInt64) throws {
        modelDescription = description
        var layout = ParameterLayout()
        var inits: [Initialiser] = []
        try Self.checkDimensions(description)
        switch description {
        case let .mlp(d):
            let net = try MLPNetwork(d, layout: &layout, inits: &inits)
            network = .mlp(net)
        case let .transformer(d):
            let net = try TransformerNetwork(d, layout: &layout, inits: &inits)
            network = .transformer(net)
        }
        try Self.checkCount(layout)
        parameterTable = layout.table
        parameters = FlatBuffer(count: layout.count)
        gradients = FlatBuffer(count: layout.count)
        // One generator per tensor, seeded from (seed, tensor index): a tensor's initial values
        // depend only on the seed and its place in the table, not on the tensors' sizes.
        for (i, info) in layout.table.enumerated() {
            var rng = Xoshiro256(seed: seed ^ splitMix64(UInt64(i) &+ 0x5EED))
            inits[i].fill(parameters.baseAddress + info.offset, count: info.count, rng: &rng)
        }
    }

    /// The parameter layout a description gives, without building the model.
    public static func parameterTable(for description: ModelDescription) throws -> [ParameterInfo] {
        var layout = ParameterLayout()
        var inits: [Initialiser] = []
        try checkDimensions(description)
        switch description {
        case let .mlp(d): _ = try MLPNetwork(d, layout: &layout, inits: &inits)
        case let .transformer(d): _ = try TransformerNetwork(d, layout: &layout, inits: &inits)
        }
        try checkCount(layout)
        return layout.table
    }

    private static func checkDimensions(_ description: ModelDescription) throws {
        let sizes: [(String, Int)]
        switch description {
        case let .mlp(d):
            sizes = [("mlp.inputs", d.inputs), ("mlp.classes", d.classes)] + d.hidden.enumerated().map { ("mlp.hidden[\($0.offset)]", $0.element) }
        case let .transformer(d):
            sizes = [("transformer.vocabulary", d.vocabulary), ("transformer.context", d.context), ("transformer.width", d.width),
                     ("transformer.layers", d.layers), ("transformer.heads", d.heads)]
        }
        for (name, size) in sizes where size > maxDimension {
            throw ComputeError.invalidDescription("\(name) is \(size), more than the \(maxDimension) a model may have")
        }
    }

    private static func checkCount(_ layout: ParameterLayout) throws {
        guard !layout.tooLarge else {
            throw ComputeError.invalidDescription("the model would have more than \(maxParameters) parameters (8 GiB of fp32), the most a job may have")
        }
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
    ///
    /// With `ComputeThreads.count` = n > 1 the batch is cut into n contiguous parts, each run by
    /// its own thread with single-threaded BLAS (data parallelism inside the step: no spinning
    /// BLAS threads between small kernels), and the parts' gradients are summed in part order.
    public func forwardBackward(_ batch: Batch, dropoutSeed: UInt64 = 0) throws -> StepResult {
        guard batch.count > 0 else { throw ComputeError.invalidBatch("the batch is empty; forwardBackward needs at least one example") }
        try network.validate(batch)
        let B = batch.count
        let predictions = B * network.predictionsPerExample(batch)
        let scale = 1 / Float(predictions)
        let parts = min(ComputeThreads.count, B / network.minimumExamplesPerThread)
        let r: RunResult = try batch.withView { view in
            if parts <= 1 {
                return network.pass(view, examples: 0..<B, parameters: parameters.baseAddress, gradients: gradients.baseAddress,
                                    train: true, gradientScale: scale, seed: dropoutSeed)
            }
            return try dataParallel(view, batch: B, parts: parts, scale: scale, seed: dropoutSeed)
        }
        return StepResult(loss: Float(r.lossSum / Double(r.count)), correct: r.correct, count: r.count, examples: B)
    }

    private func dataParallel(_ view: BatchView, batch B: Int, parts: Int, scale: Float, seed: UInt64) throws -> RunResult {
        while replicas.count < parts - 1 {
            replicas.append(try network.replica())
            replicaGradients.append(FlatBuffer(count: parameterCount))
        }
        for g in replicaGradients.prefix(parts - 1) { g.zero() }
        let results = UnsafeMutablePointer<RunResult>.allocate(capacity: parts)
        results.initialize(repeating: RunResult(lossSum: 0, correct: 0, count: 0), count: parts)
        defer { results.deallocate() }
        let work = ReplicaWork(networks: [network] + replicas.prefix(parts - 1),
                               gradients: [gradients] + replicaGradients.prefix(parts - 1),
                               parameters: parameters, view: view, results: results)
        let threads = ComputeThreads.count
        openblas_set_num_threads(1)
        DispatchQueue.concurrentPerform(iterations: parts) { i in
            let lo = i * B / parts, hi = (i + 1) * B / parts
            work.results[i] = Parallel.serially {
                work.networks[i].pass(work.view, examples: lo..<hi, parameters: work.parameters.baseAddress,
                                      gradients: work.gradients[i].baseAddress, train: true, gradientScale: scale, seed: seed)
            }
        }
        openblas_set_num_threads(Int32(threads))
        var total = RunResult(lossSum: 0, correct: 0, count: 0)
        for i in 0..<parts {
            total.lossSum += results[i].lossSum; total.correct += results[i].correct; total.count += results[i].count
            if i > 0 { Elementwise.add(work.gradients[i].baseAddress, into: gradients.baseAddress, count: parameterCount) }
        }
        return total
    }

    /// Loss sum, correct count and prediction count over `batch`, without dropout or gradients.
    /// Large batches are evaluated in chunks, so they do not grow the activation arena.
    public func evaluate(_ batch: Batch) throws -> Evaluation {
        if batch.count == 0 { return Evaluation() }
        try network.validate(batch)
        let B = batch.count, chunk = network.evaluationChunk
        return batch.withView { view in
            var e = Evaluation()
            var lo = 0
            while lo < B {
                let hi = min(lo + chunk, B)
                let r = network.pass(view, examples: lo..<hi, parameters: parameters.baseAddress,
                                     gradients: gradients.baseAddress, train: false, gradientScale: 0, seed: 0)
                e = e + Evaluation(lossSum: r.lossSum, correct: r.correct, count: r.count)
                lo = hi
            }
            return e
        }
    }
}

/// What the replica threads share; each writes only its own network, gradient buffer and result.
private struct ReplicaWork: @unchecked Sendable {
    let networks: [Network]
    let gradients: [FlatBuffer]
    let parameters: FlatBuffer
    let view: BatchView
    let results: UnsafeMutablePointer<RunResult>
}

/// Raw pointers into a `Batch`'s arrays, valid inside `Batch.withView`.
struct BatchView: @unchecked Sendable {
    var features: UnsafePointer<Float>?
    var labels: UnsafePointer<Int32>?
    var tokens: UnsafePointer<Int32>?
    var width = 0
    var length = 0
}

extension Batch {
    func withView<R>(_ body: (BatchView) throws -> R) rethrows -> R {
        switch self {
        case let .classification(features, width, labels):
            return try features.withUnsafeBufferPointer { f in
                try labels.withUnsafeBufferPointer { l in
                    try body(BatchView(features: f.baseAddress, labels: l.baseAddress, width: width))
                }
            }
        case let .sequences(tokens, length):
            return try tokens.withUnsafeBufferPointer { t in try body(BatchView(tokens: t.baseAddress, length: length)) }
        }
    }
}

enum Network {
    case mlp(MLPNetwork)
    case transformer(TransformerNetwork)

    func validate(_ batch: Batch) throws {
        switch self {
        case let .mlp(n): try n.validate(batch)
        case let .transformer(n): try n.validate(batch)
        }
    }

    func predictionsPerExample(_ batch: Batch) -> Int {
        if case let .sequences(_, length) = batch { return length }
        return 1
    }

    /// Below this many examples per thread a step is not split (the GEMMs get too thin).
    var minimumExamplesPerThread: Int {
        switch self {
        case .mlp: return 32
        case .transformer: return 1
        }
    }

    /// Examples per evaluation chunk.
    var evaluationChunk: Int {
        switch self {
        case .mlp: return 1024
        case .transformer: return 32
        }
    }

    /// A network with the same layout and its own workspace. The description was validated
    /// when `self` was built, so building it again cannot throw.
    func replica() throws -> Network {
        var layout = ParameterLayout()
        var inits: [Initialiser] = []
        switch self {
        case let .mlp(n): return .mlp(try MLPNetwork(n.d, layout: &layout, inits: &inits))
        case let .transformer(n): return .transformer(try TransformerNetwork(n.d, layout: &layout, inits: &inits))
        }
    }

    func pass(_ view: BatchView, examples: Range<Int>, parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
              train: Bool, gradientScale: Float, seed: UInt64) -> RunResult {
        switch self {
        case let .mlp(n):
            return n.pass(view, examples: examples, parameters: parameters, gradients: gradients, train: train,
                          gradientScale: gradientScale)
        case let .transformer(n):
            return n.pass(view, examples: examples, parameters: parameters, gradients: gradients, train: train,
                          gradientScale: gradientScale, seed: seed)
        }
    }
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
