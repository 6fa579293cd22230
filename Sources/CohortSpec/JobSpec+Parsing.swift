import CohortCompute
import Foundation
import Yams

extension JobSpec {
    static let topLevelKeys = ["name", "model", "data", "optimizer", "schedule", "training", "eval-every", "seed", "checkpoint-every", "cluster"]

    /// Reads and validates the spec at `path`; every problem in one `SpecError`.
    public static func load(path: String) throws -> JobSpec {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SpecError(source: path, problems: [.init(path: "", message: "cannot read the job spec (\(error.localizedDescription)); check the path")])
        }
        return try parse(yaml: text, source: path)
    }

    /// Parses and validates a spec; every problem in one `SpecError` whose source is `source`.
    public static func parse(yaml: String, source: String = "job spec") throws -> JobSpec {
        guard let root = try YAMLFields.compose(yaml, source: source) else {
            throw SpecError(source: source, problems: [.init(path: "", message: "the job spec is empty; see docs/job-spec.md for an example")])
        }
        let fields = YAMLFields()
        let spec = read(root, fields)
        if !fields.problems.isEmpty || spec == nil {
            throw SpecError(source: source, problems: fields.problems)
        }
        return spec!
    }

    private static func read(_ root: Node, _ f: YAMLFields) -> JobSpec? {
        guard let top = f.mapping(root, path: "", known: topLevelKeys) else { return nil }
        func required(_ map: [String: Node], _ key: String, _ path: String, _ parent: Node, _ expected: String) -> Node? {
            if let node = map[key], !YAMLFields.isNull(node) { return node }
            f.report(YAMLFields.join(path, key), map[key] ?? parent, "is required (\(expected))")
            return nil
        }
        func optional(_ map: [String: Node], _ key: String) -> Node? {
            guard let node = map[key], !YAMLFields.isNull(node) else { return nil }
            return node
        }

        // name
        var name = ""
        if let node = required(top, "name", "", root, "a job name of letters, digits, `.`, `_` or `-`") {
            if let value = f.string(node, "name") {
                let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "._-"))
                if value.isEmpty || value.unicodeScalars.contains(where: { !allowed.contains($0) || !$0.isASCII }) {
                    f.report("name", node, "must be letters, digits, `.`, `_` or `-`, got \(value.debugDescription)")
                }
                name = value
            }
        }

        let model = readModel(top, root, f, required: required, optional: optional)

        // data
        var data = DataSection(dataset: "")
        if let node = required(top, "data", "", root, "a mapping with `dataset`"),
           let map = f.mapping(node, path: "data", known: ["dataset", "sharding"])
        {
            if let datasetNode = required(map, "dataset", "data", node, "the name of a dataset under the data root"),
               let value = f.string(datasetNode, "data.dataset")
            {
                if value.isEmpty || value.contains("/") || value.hasPrefix(".") {
                    f.report("data.dataset", datasetNode, "must be a dataset name (a directory under the data root), got \(value.debugDescription)")
                }
                data.dataset = value
            }
            if let node = optional(map, "sharding"), let value = f.choice(node, "data.sharding", Sharding.self) { data.sharding = value }
        }

        let optimizer = readOptimizer(top, f, optional: optional)

        // training
        var training = Training(steps: 1)
        if let node = required(top, "training", "", root, "a mapping with `steps`"),
           let map = f.mapping(node, path: "training", known: ["steps", "global-batch-size", "shard-size-kib", "shard-encoding", "downlink-encoding",
                                                            "topk-fraction", "overlap", "reduction", "mode", "local-steps", "outer-optimizer"])
        {
            if let stepsNode = required(map, "steps", "training", node, "a positive integer"),
               let value = f.integer(stepsNode, "training.steps", minimum: 1, expected: "a positive integer")
            {
                training.steps = value
            }
            if let node = optional(map, "global-batch-size"),
               let value = f.integer(node, "training.global-batch-size", minimum: 1, expected: "a positive integer")
            {
                training.globalBatchSize = value
            }
            if let node = optional(map, "shard-size-kib"),
               let value = f.integer(node, "training.shard-size-kib", minimum: 4, expected: "an integer from 4 to 65536 (KiB)")
            {
                if value > 65536 { f.report("training.shard-size-kib", node, "must be an integer from 4 to 65536 (KiB), got \(value)") }
                training.shardSizeKiB = value
                training.shardSizeKiBIsSet = true
            }
            if let node = optional(map, "shard-encoding"), let value = f.choice(node, "training.shard-encoding", ShardEncoding.self) {
                training.shardEncoding = value
                // Unset, a shard is 1 MiB on the way up whatever the encoding carries per element.
                if optional(map, "shard-size-kib") == nil { training.shardSizeKiB = Training.defaultShardSizeKiB(for: value) }
            }
            if let node = optional(map, "downlink-encoding"), let value = f.choice(node, "training.downlink-encoding", ShardEncoding.self) {
                training.downlinkEncoding = value
            }
            if let node = optional(map, "topk-fraction"),
               let value = f.number(node, "training.topk-fraction", expected: "a number in (0, 1]", where: { $0 > 0 && $0 <= 1 }) {
                training.topKFraction = value
            }
            if let node = optional(map, "reduction"), let value = f.choice(node, "training.reduction", Reduction.self) { training.reduction = value }
            if let node = optional(map, "mode"), let value = f.choice(node, "training.mode", Mode.self) { training.mode = value }
            if let node = optional(map, "overlap"), let value = f.bool(node, "training.overlap") {
                training.overlap = value
                if value && training.mode != .local { f.report("training.overlap", node, "applies to `training.mode: local` only") }
            }
            if let node = optional(map, "local-steps"),
               let value = f.integer(node, "training.local-steps", minimum: 1, expected: "a positive integer (inner steps per round)")
            {
                training.localSteps = value
                if training.mode != .local && value != 1 {
                    f.report("training.local-steps", node, "applies to `training.mode: local` only")
                } else if training.steps % value != 0 {
                    f.report("training.local-steps", node, "must divide training.steps (\(training.steps)), got \(value)")
                }
            }
            if let node = optional(map, "outer-optimizer"),
               let outer = f.mapping(node, path: "training.outer-optimizer", known: ["kind", "lr", "momentum"])
            {
                if let n = optional(outer, "kind"), let v = f.choice(n, "training.outer-optimizer.kind", OuterOptimizer.Kind.self) { training.outer.kind = v }
                if let n = optional(outer, "lr"), let v = f.number(n, "training.outer-optimizer.lr", expected: "a positive number", where: { $0 > 0 }) {
                    training.outer.lr = Float(v)
                }
                if let n = optional(outer, "momentum"),
                   let v = f.number(n, "training.outer-optimizer.momentum", expected: "a number in [0, 1)", where: { $0 >= 0 && $0 < 1 }) {
                    training.outer.momentum = Float(v)
                }
            }
        }

        // schedule
        var schedule = Schedule()
        if let node = optional(top, "schedule"), let map = f.mapping(node, path: "schedule", known: ["kind", "warmup-steps", "min-lr"]) {
            if let node = optional(map, "kind"), let value = f.choice(node, "schedule.kind", Schedule.Kind.self) { schedule.kind = value }
            if let node = optional(map, "warmup-steps"),
               let value = f.integer(node, "schedule.warmup-steps", minimum: 0, expected: "a non-negative integer")
            {
                schedule.warmupSteps = value
                if value >= training.steps && top["training"] != nil {
                    f.report("schedule.warmup-steps", node, "must be fewer than training.steps (\(training.steps)), got \(value)")
                }
            }
            if let node = optional(map, "min-lr") {
                if let value = f.number(node, "schedule.min-lr", expected: "a non-negative number", where: { $0 >= 0 }) {
                    schedule.minLR = Float(value)
                    if schedule.kind != .cosine {
                        f.report("schedule.min-lr", node, "applies to schedule kind cosine only; remove it or set `schedule.kind: cosine`")
                    } else if schedule.minLR > optimizer.lr {
                        f.report("schedule.min-lr", node, "must not exceed optimizer.lr (\(optimizer.lr)), got \(value)")
                    }
                }
            }
        }

        var evalEvery = 100, seed: UInt64 = 0, checkpointEvery = 0
        if let node = optional(top, "eval-every"),
           let value = f.integer(node, "eval-every", minimum: 0, expected: "a non-negative integer (0: only after the last step)")
        {
            evalEvery = value
            if training.localSteps > 1 && value % training.localSteps != 0 {
                f.report("eval-every", node, "must be a multiple of training.local-steps (\(training.localSteps)), got \(value)")
            }
        }
        if let node = optional(top, "seed"), let value = f.unsigned(node, "seed") { seed = value }
        if let node = optional(top, "checkpoint-every"),
           let value = f.integer(node, "checkpoint-every", minimum: 0, expected: "a non-negative integer (0: only after the last step)")
        {
            checkpointEvery = value
            if training.localSteps > 1 && value % training.localSteps != 0 {
                f.report("checkpoint-every", node, "must be a multiple of training.local-steps (\(training.localSteps)), got \(value)")
            }
        }

        let cluster = optional(top, "cluster").map { readCluster($0, f) } ?? Cluster()
        if cluster.maxWorkers > training.globalBatchSize, let node = optional(top, "cluster") {
            // Every worker takes a slice of each global batch: one with none could never contribute.
            f.report("cluster.max-workers", node, "is \(cluster.maxWorkers), more than training.global-batch-size (\(training.globalBatchSize)): every worker needs at least one example of each global batch")
        }

        guard let model else { return nil }
        var spec = JobSpec(name: name, model: model, data: data, optimizer: optimizer, schedule: schedule, training: training,
                           evalEvery: evalEvery, seed: seed, checkpointEvery: checkpointEvery)
        spec.cluster = cluster
        return spec
    }
}
