import CohortCompute
import Foundation

/// The job spec: one YAML file (kebab-case keys) that `cohort train` reads and, later,
/// `cohort submit` (docs/job-spec.md lists every field, its type, default and meaning).
public struct JobSpec: Sendable, Hashable {
    /// The largest spec a coordinator takes (bytes of YAML).
    public static let maxBytes = 256 << 10

    /// A size that may be left for the dataset to decide.
    public enum Size: Sendable, Hashable, CustomStringConvertible {
        /// From the dataset: feature width, class count or vocabulary size.
        case auto
        case fixed(Int)
        public var description: String {
            switch self {
            case .auto: return "auto"
            case let .fixed(value): return String(value)
            }
        }
    }

    public enum Model: Sendable, Hashable {
        case mlp(MLP)
        case transformer(Transformer)

        public enum Kind: String, Sendable, Hashable, CaseIterable { case mlp, transformer }

        public var kind: Kind {
            switch self {
            case .mlp: return .mlp
            case .transformer: return .transformer
            }
        }

        public struct MLP: Sendable, Hashable {
            public var inputs: Size = .auto
            public var hidden: [Int] = [128]
            public var classes: Size = .auto
            public var activation: ModelDescription.Activation = .relu
            public init() {}
        }

        public struct Transformer: Sendable, Hashable {
            public var vocabulary: Size = .auto
            public var context: Int = 64
            public var width: Int = 128
            public var layers: Int = 2
            public var heads: Int = 4
            public var dropout: Float = 0
            public init() {}
        }

        /// The model description when no size is `auto`.
        public var description: ModelDescription? {
            switch self {
            case let .mlp(mlp):
                guard case let .fixed(inputs) = mlp.inputs, case let .fixed(classes) = mlp.classes else { return nil }
                return .mlp(.init(inputs: inputs, hidden: mlp.hidden, classes: classes, activation: mlp.activation))
            case let .transformer(t):
                guard case let .fixed(vocabulary) = t.vocabulary else { return nil }
                return .transformer(.init(vocabulary: vocabulary, context: t.context, width: t.width,
                                          layers: t.layers, heads: t.heads, dropout: t.dropout))
            }
        }
    }

    public enum Sharding: String, Sendable, Hashable, CaseIterable {
        /// Every site holds the same dataset (content hash checked); one permutation per epoch.
        case shared
        /// Each site trains on its own files under the dataset's name.
        case perSite = "per-site"
    }

    public struct DataSection: Sendable, Hashable {
        public var dataset: String
        public var sharding: Sharding = .shared
        public init(dataset: String, sharding: Sharding = .shared) {
            self.dataset = dataset
            self.sharding = sharding
        }
    }

    public struct Optimizer: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable, CaseIterable { case sgd, adamw }
        public var kind: Kind = .adamw
        /// Peak learning rate. Default 0.1 for sgd, 0.001 for adamw.
        public var lr: Float = 0.001
        /// sgd only.
        public var momentum: Float = 0
        /// sgd only; needs momentum > 0.
        public var nesterov: Bool = false
        /// sgd: L2 added to the gradient; adamw: decoupled decay. Default 0 for sgd, 0.01 for
        /// adamw (PyTorch's defaults).
        public var weightDecay: Float = 0.01
        /// adamw only.
        public var betas: (Float, Float) = (0.9, 0.999)
        /// adamw only.
        public var eps: Float = 1e-8
        /// Global gradient-norm clipping; nil: none.
        public var clipNorm: Float?
        public init() {}

        public static func == (a: Optimizer, b: Optimizer) -> Bool {
            a.kind == b.kind && a.lr == b.lr && a.momentum == b.momentum && a.nesterov == b.nesterov
                && a.weightDecay == b.weightDecay && a.betas.0 == b.betas.0 && a.betas.1 == b.betas.1
                && a.eps == b.eps && a.clipNorm == b.clipNorm
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(kind); hasher.combine(lr); hasher.combine(momentum); hasher.combine(nesterov)
            hasher.combine(weightDecay); hasher.combine(betas.0); hasher.combine(betas.1)
            hasher.combine(eps); hasher.combine(clipNorm)
        }
    }

    public struct Schedule: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable, CaseIterable { case constant, cosine }
        public var kind: Kind = .constant
        /// Linear warm-up from 0 to `lr` over this many steps.
        public var warmupSteps: Int = 0
        /// cosine only: the learning rate at the last step.
        public var minLR: Float = 0
        public init() {}

        /// The learning rate at `step` (0-based) of `totalSteps`, for peak `lr`: warm-up
        /// lr·(step+1)/warmupSteps over steps 0..<warmupSteps, then `lr` (constant) or a cosine
        /// from `lr` at step warmupSteps to `minLR` at step totalSteps (the formula of
        /// CohortCompute's `LearningRateSchedule.warmupCosine`).
        public func learningRate(step: Int, totalSteps: Int, lr: Float) -> Float {
            if step < warmupSteps { return lr * Float(step + 1) / Float(warmupSteps) }
            switch kind {
            case .constant:
                return lr
            case .cosine:
                let span = totalSteps - warmupSteps
                if span <= 0 { return minLR }
                let progress = min(1, Double(step - warmupSteps) / Double(span))
                return minLR + Float(0.5 * (1 + cos(Double.pi * progress))) * (lr - minLR)
            }
        }
    }

    /// How shards travel (the coordinator accumulates in fp32 either way). The lossy ones
    /// (everything but fp32) carry error feedback: what rounding lost is added to the next send.
    public enum ShardEncoding: String, Sendable, Hashable, CaseIterable {
        case fp32, bf16, fp16, int8, topk
    }

    /// How workers of one institution combine their contributions: `flat` sends each to the
    /// coordinator; `institution` sums them inside the site first (one delegate per site), so
    /// one contribution per institution crosses the WAN.
    public enum Reduction: String, Sendable, Hashable, CaseIterable { case flat, institution }

    /// `sync`: one global batch per step, gradients aggregated every step. `local`: each worker
    /// runs `local-steps` inner steps with its own optimizer, then sends its parameter delta; the
    /// coordinator averages the deltas and applies the outer optimizer (DiLoCo, FedAvg).
    public enum Mode: String, Sendable, Hashable, CaseIterable { case sync, local }

    /// The outer optimizer of `mode: local`, applied to the averaged delta θ_start − θ_end.
    public struct OuterOptimizer: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable, CaseIterable {
            /// SGD with Nesterov momentum (DiLoCo).
            case nesterov
            /// Plain averaging of the workers' parameters (FedAvg): lr 1, no momentum.
            case average
        }
        public var kind: Kind = .nesterov
        public var lr: Float = 0.7
        public var momentum: Float = 0.9
        public init() {}
    }

    public struct Training: Sendable, Hashable {
        public var steps: Int
        public var mode: Mode = .sync
        /// Inner steps per round in `mode: local` (H).
        public var localSteps: Int = 1
        public var outer = OuterOptimizer()
        public var globalBatchSize: Int = 64
        /// Shard size of the flat gradient and parameter buffers on the wire, in KiB of fp32
        /// (256 elements a KiB).
        public var shardSizeKiB: Int = 1024
        /// The spec sets `shard-size-kib` (rather than taking the encoding's default).
        public var shardSizeKiBIsSet = false
        /// The default `shardSizeKiB`: shards of 1 MiB on the way up. fp32 takes 2^18 elements;
        /// the two-byte encodings (bf16, fp16) take 2^19, which is 2048 KiB of fp32. A message
        /// of half a MiB costs more per byte (the libzmq I/O thread and the receiver wake twice
        /// as often for the same data): bf16 rounds at 16M with 2 workers over tcp took 39–40
        /// ms with shards of 2^18 elements and 35 ms with 2^19 on the benchmark host. int8 and
        /// topk are for slow links, where small shards pipeline better; they keep 1024.
        public static func defaultShardSizeKiB(for encoding: ShardEncoding) -> Int {
            encoding == .bf16 || encoding == .fp16 ? 2048 : 1024
        }
        /// Worker → coordinator (gradients, deltas).
        public var shardEncoding: ShardEncoding = .fp32
        /// Coordinator → worker: fp32 sends the parameters; any other encoding sends the
        /// difference between the parameters and the workers' replica θ̃, which both sides keep.
        public var downlinkEncoding: ShardEncoding = .fp32
        /// `topk` only: the fraction of each shard's elements sent (the largest in magnitude).
        public var topKFraction: Double = 0.01
        /// `local` only: the next round's inner steps start while the last delta is on the wire;
        /// the outer update is applied one round late.
        public var overlap = false
        public var reduction: Reduction = .flat
        public init(steps: Int, globalBatchSize: Int = 64) {
            self.steps = steps
            self.globalBatchSize = globalBatchSize
        }
    }

    public var name: String
    public var model: Model
    public var data: DataSection
    public var optimizer: Optimizer
    public var schedule: Schedule
    public var training: Training
    /// Evaluate on the test split every this many steps (and after the last); 0: only after the last.
    public var evalEvery: Int
    public var seed: UInt64
    /// Write a checkpoint every this many steps (and after the last); 0: only after the last.
    public var checkpointEvery: Int
    /// Placement across the consortium (`cohort submit`).
    public var cluster = Cluster()

    public init(
        name: String, model: Model, data: DataSection, optimizer: Optimizer = Optimizer(),
        schedule: Schedule = Schedule(), training: Training, evalEvery: Int = 100, seed: UInt64 = 0,
        checkpointEvery: Int = 0
    ) {
        self.name = name
        self.model = model
        self.data = data
        self.optimizer = optimizer
        self.schedule = schedule
        self.training = training
        self.evalEvery = evalEvery
        self.seed = seed
        self.checkpointEvery = checkpointEvery
    }
}
