import CohortCompute
import Yams

extension JobSpec {
    typealias Required = ([String: Node], String, String, Node, String) -> Node?
    typealias Optional_ = ([String: Node], String) -> Node?

    static func readModel(_ top: [String: Node], _ root: Node, _ f: YAMLFields, required: Required, optional: Optional_) -> Model? {
        guard let node = required(top, "model", "", root, "a mapping with `kind: mlp` or `kind: transformer`") else { return nil }
        guard case let .mapping(raw) = node else {
            f.report("model", node, "must be a mapping with `kind: mlp` or `kind: transformer`, got \(YAMLFields.describe(node))")
            return nil
        }
        let kindNode = raw["kind"]
        guard let kindNode, !YAMLFields.isNull(kindNode) else {
            f.report("model.kind", node, "is required (mlp or transformer)")
            return nil
        }
        guard let kind = f.choice(kindNode, "model.kind", Model.Kind.self) else { return nil }

        func size(_ map: [String: Node], _ key: String) -> Size? {
            guard let node = optional(map, key) else { return nil }
            if case let .scalar(scalar) = node, scalar.string == "auto" { return .auto }
            return f.integer(node, "model.\(key)", minimum: 1, expected: "a positive integer or `auto`").map(Size.fixed)
        }
        func positive(_ map: [String: Node], _ key: String) -> Int? {
            guard let node = optional(map, key) else { return nil }
            return f.integer(node, "model.\(key)", minimum: 1, expected: "a positive integer")
        }

        switch kind {
        case .mlp:
            guard let map = f.mapping(node, path: "model", known: ["kind", "inputs", "hidden", "classes", "activation"]) else { return nil }
            var mlp = Model.MLP()
            if let value = size(map, "inputs") { mlp.inputs = value }
            if let value = size(map, "classes") { mlp.classes = value }
            if let hiddenNode = optional(map, "hidden"),
               let items = f.sequence(hiddenNode, "model.hidden", expected: "a list of positive layer widths, e.g. [128, 64]")
            {
                mlp.hidden = items.enumerated().compactMap { i, item in
                    f.integer(item, "model.hidden[\(i)]", minimum: 1, expected: "a positive integer")
                }
            }
            if let node = optional(map, "activation"), let value = f.choice(node, "model.activation", ModelDescription.Activation.self) {
                mlp.activation = value
            }
            // `auto` sizes count as their smallest: the model the data gives can only be larger.
            var smallest = mlp
            if smallest.inputs == .auto { smallest.inputs = .fixed(1) }
            if smallest.classes == .auto { smallest.classes = .fixed(2) }
            checkSize(.mlp(smallest), node, f)
            return .mlp(mlp)
        case .transformer:
            guard let map = f.mapping(node, path: "model", known: ["kind", "vocabulary", "context", "width", "layers", "heads", "dropout"]) else { return nil }
            var t = Model.Transformer()
            if let value = size(map, "vocabulary") { t.vocabulary = value }
            if let value = positive(map, "context") { t.context = value }
            if let value = positive(map, "width") { t.width = value }
            if let value = positive(map, "layers") { t.layers = value }
            if let value = positive(map, "heads") { t.heads = value }
            if let node = optional(map, "dropout"),
               let value = f.number(node, "model.dropout", expected: "a number in [0, 1)", where: { $0 >= 0 && $0 < 1 })
            {
                t.dropout = Float(value)
            }
            if t.width % t.heads != 0 {
                f.report("model.heads", map["heads"] ?? map["width"] ?? node, "must divide model.width (\(t.width)) evenly, got \(t.heads)")
            } else {
                var smallest = t
                if smallest.vocabulary == .auto { smallest.vocabulary = .fixed(2) }
                checkSize(.transformer(smallest), node, f)
            }
            return .transformer(t)
        }
    }

    /// A model too large to hold (`CohortCompute.Model.maxParameters`, `maxDimension`) is a
    /// problem of the spec, reported at submission rather than when the job starts.
    private static func checkSize(_ model: Model, _ node: Node, _ f: YAMLFields) {
        guard let description = model.description else { return }
        do { _ = try CohortCompute.Model.parameterTable(for: description) } catch let ComputeError.invalidDescription(why) {
            f.report("model", node, why)
        } catch {
            f.report("model", node, "\(error)")
        }
    }

    static func readOptimizer(_ top: [String: Node], _ f: YAMLFields, optional: Optional_) -> Optimizer {
        var optimizer = Optimizer()
        guard let node = optional(top, "optimizer"),
              let map = f.mapping(node, path: "optimizer", known: ["kind", "lr", "momentum", "nesterov", "weight-decay", "betas", "eps", "clip-norm"])
        else { return optimizer }
        if let node = optional(map, "kind"), let value = f.choice(node, "optimizer.kind", Optimizer.Kind.self) { optimizer.kind = value }
        let kind = optimizer.kind
        optimizer.lr = kind == .sgd ? 0.1 : 0.001
        optimizer.weightDecay = kind == .sgd ? 0 : 0.01
        func only(_ key: String, for allowed: Optimizer.Kind) -> Node? {
            guard let node = optional(map, key) else { return nil }
            if kind != allowed {
                f.report("optimizer.\(key)", node, "applies to optimizer kind \(allowed.rawValue) only; remove it or set `optimizer.kind: \(allowed.rawValue)`")
                return nil
            }
            return node
        }
        if let node = optional(map, "lr"), let value = f.number(node, "optimizer.lr", expected: "a positive number", where: { $0 > 0 }) {
            optimizer.lr = Float(value)
        }
        if let node = only("momentum", for: .sgd),
           let value = f.number(node, "optimizer.momentum", expected: "a number in [0, 1)", where: { $0 >= 0 && $0 < 1 })
        {
            optimizer.momentum = Float(value)
        }
        if let node = only("nesterov", for: .sgd), let value = f.bool(node, "optimizer.nesterov") {
            optimizer.nesterov = value
            if value && optimizer.momentum == 0 {
                f.report("optimizer.nesterov", node, "needs optimizer.momentum > 0; set a momentum such as 0.9")
            }
        }
        if let node = optional(map, "weight-decay"),
           let value = f.number(node, "optimizer.weight-decay", expected: "a non-negative number", where: { $0 >= 0 })
        {
            optimizer.weightDecay = Float(value)
        }
        if let node = only("betas", for: .adamw),
           let items = f.sequence(node, "optimizer.betas", expected: "a list of two numbers in [0, 1), e.g. [0.9, 0.999]")
        {
            if items.count != 2 {
                f.report("optimizer.betas", node, "must be a list of two numbers in [0, 1), got \(items.count) item(s)")
            } else {
                let values = items.enumerated().map { i, item in
                    f.number(item, "optimizer.betas[\(i)]", expected: "a number in [0, 1)", where: { $0 >= 0 && $0 < 1 })
                }
                if let b1 = values[0], let b2 = values[1] { optimizer.betas = (Float(b1), Float(b2)) }
            }
        }
        if let node = only("eps", for: .adamw), let value = f.number(node, "optimizer.eps", expected: "a positive number", where: { $0 > 0 }) {
            optimizer.eps = Float(value)
        }
        if let node = optional(map, "clip-norm"),
           let value = f.number(node, "optimizer.clip-norm", expected: "a positive number (or omit it for no clipping)", where: { $0 > 0 })
        {
            optimizer.clipNorm = Float(value)
        }
        return optimizer
    }
}

extension JobSpec {
    /// The optimizer the coordinator applies: the spec's optimizer in `sync` mode; in `local`
    /// mode the outer optimizer over the averaged delta (workers run the spec's optimizer inside).
    public var coordinatorOptimizer: CohortCompute.Optimizer {
        guard training.mode == .local else { return optimizer.computeOptimizer }
        switch training.outer.kind {
        case .nesterov: return .sgd(.init(momentum: training.outer.momentum, nesterov: true, weightDecay: 0))
        case .average: return .sgd(.init(momentum: 0, nesterov: false, weightDecay: 0))
        }
    }

    /// The coordinator's learning rate for the update after `step` (inner steps done).
    public func coordinatorLearningRate(step: Int) -> Float {
        guard training.mode == .local else { return schedule.learningRate(step: step, totalSteps: training.steps, lr: optimizer.lr) }
        return training.outer.kind == .average ? 1 : training.outer.lr
    }

    /// Steps one round advances: 1 in `sync`, `local-steps` in `local`.
    public var stepsPerRound: Int { training.mode == .local ? training.localSteps : 1 }
}

extension JobSpec.Optimizer {
    /// The compute core's optimizer for these settings.
    public var computeOptimizer: CohortCompute.Optimizer {
        switch kind {
        case .sgd: return .sgd(.init(momentum: momentum, nesterov: nesterov, weightDecay: weightDecay))
        case .adamw: return .adamW(.init(beta1: betas.0, beta2: betas.1, epsilon: eps, weightDecay: weightDecay))
        }
    }
}
