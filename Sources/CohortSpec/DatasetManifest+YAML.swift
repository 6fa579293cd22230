import CohortCompute
import Foundation
import Yams

extension DatasetManifest {
    static let keys = ["format", "description", "source", "license", "train", "test", "split", "shape", "classes", "scale",
                       "label-column", "header", "vocabulary", "content-hash"]

    /// Loads `NAME/dataset.yaml` under `dataRoot` (see `DataRoot.resolve`).
    public static func load(dataset name: String, dataRoot: URL) throws -> DatasetManifest {
        let url = DataRoot.manifestURL(dataset: name, root: dataRoot)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw SpecError(source: url.path, problems: [.init(path: "", message:
                "dataset `\(name)` has no manifest here; install it (deploy/datasets/install.sh \(dataRoot.path)) or pass the right --data-root / COHORT_DATA_ROOT")])
        }
        return try load(url: url)
    }

    /// Loads a manifest file; relative file names in it are relative to its directory, and the
    /// dataset's name is the directory's name. All problems at once; missing files included.
    public static func load(url: URL) throws -> DatasetManifest {
        let source = url.deletingLastPathComponent().lastPathComponent + "/" + url.lastPathComponent
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw SpecError(source: url.path, problems: [.init(path: "", message: "cannot read the manifest (\(error.localizedDescription))")])
        }
        return try parse(yaml: text, name: url.deletingLastPathComponent().lastPathComponent,
                         directory: url.deletingLastPathComponent(), source: source)
    }

    /// Parses a manifest's YAML; `directory` anchors relative file names.
    public static func parse(yaml: String, name: String, directory: URL, source: String) throws -> DatasetManifest {
        guard let root = try YAMLFields.compose(yaml, source: source) else {
            throw SpecError(source: source, problems: [.init(path: "", message: "the manifest is empty; see docs/datasets.md")])
        }
        let f = YAMLFields()
        guard let top = f.mapping(root, path: "", known: keys) else { throw SpecError(source: source, problems: f.problems) }
        func optional(_ key: String) -> Node? {
            guard let node = top[key], !YAMLFields.isNull(node) else { return nil }
            return node
        }
        func url(_ text: String) -> URL {
            let expanded = text.hasPrefix("~/") ? NSHomeDirectory() + text.dropFirst(1) : text
            return expanded.hasPrefix("/") ? URL(fileURLWithPath: expanded) : directory.appendingPathComponent(expanded)
        }
        func files(_ key: String) -> Files? {
            guard let node = optional(key), let map = f.mapping(node, path: key, known: ["features", "labels", "file"]) else { return nil }
            var files = Files()
            if let n = map["features"], let s = f.string(n, "\(key).features") { files.features = url(s) }
            if let n = map["labels"], let s = f.string(n, "\(key).labels") { files.labels = url(s) }
            if let n = map["file"], let s = f.string(n, "\(key).file") { files.file = url(s) }
            return files
        }

        var format = Format.idx
        if let node = optional("format") {
            if let value = f.choice(node, "format", Format.self) { format = value }
        } else {
            f.report("format", root, "is required (one of \(Format.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let train = files("train")
        if optional("train") == nil { f.report("train", root, "is required (the training files)") }
        let test = files("test")
        var split: Split?
        if let node = optional("split"), let map = f.mapping(node, path: "split", known: ["test-fraction", "seed"]) {
            var carve = Split(testFraction: 0.2, seed: 0)
            if let n = map["test-fraction"],
               let v = f.number(n, "split.test-fraction", expected: "a number strictly between 0 and 1", where: { $0 > 0 && $0 < 1 })
            {
                carve.testFraction = v
            } else if map["test-fraction"] == nil {
                f.report("split.test-fraction", node, "is required (a number strictly between 0 and 1, e.g. 0.2)")
            }
            if let n = map["seed"], let v = f.unsigned(n, "split.seed") { carve.seed = v }
            split = carve
        }
        var shape: [Int] = []
        if let node = optional("shape"), let items = f.sequence(node, "shape", expected: "a list of positive sizes, e.g. [28, 28]") {
            shape = items.enumerated().compactMap { i, item in f.integer(item, "shape[\(i)]", minimum: 1, expected: "a positive integer") }
        }
        var classes = 0
        if let node = optional("classes"), let v = f.integer(node, "classes", minimum: 1, expected: "a positive integer") { classes = v }
        var scale: Float = 1
        if let node = optional("scale") {
            // A fraction like 1/255 is clearer than 0.00392156862745098.
            if case let .scalar(s) = node, let slash = s.string.firstIndex(of: "/"),
               let numerator = Double(s.string[..<slash].trimmingCharacters(in: .whitespaces)),
               let denominator = Double(s.string[s.string.index(after: slash)...].trimmingCharacters(in: .whitespaces)), denominator != 0
            {
                scale = Float(numerator / denominator)
            } else if let v = f.number(node, "scale", expected: "a non-zero number or a fraction like 1/255", where: { $0 != 0 }) {
                scale = Float(v)
            }
        }
        var labelColumn = LabelColumn.first
        if let node = optional("label-column"), let v = f.choice(node, "label-column", LabelColumn.self) { labelColumn = v }
        var header = Header.auto
        if let node = optional("header"), let v = f.choice(node, "header", Header.self) { header = v }
        var vocabulary: URL?
        if let node = optional("vocabulary"), let s = f.string(node, "vocabulary") { vocabulary = url(s) }
        var contentHash: String?
        if let node = optional("content-hash"), let s = f.string(node, "content-hash") {
            let hex = s.hasPrefix("sha256:") ? String(s.dropFirst(7)) : ""
            if hex.count != 64 || !hex.allSatisfy({ $0.isHexDigit }) {
                f.report("content-hash", node, "must be `sha256:` followed by 64 hex digits, got \(s.debugDescription)")
            } else {
                contentHash = s.lowercased()
            }
        }
        let manifest = DatasetManifest(name: name, source: source, format: format, train: train ?? Files(), test: test, split: split,
                                       shape: shape, classes: classes, scale: scale, labelColumn: labelColumn, header: header,
                                       vocabulary: vocabulary, contentHash: contentHash)
        var problems = f.problems
        if problems.isEmpty {
            problems += manifest.problems().map { SpecError.Problem(path: "", message: $0) }
        }
        if !problems.isEmpty { throw SpecError(source: source, problems: problems) }
        return manifest
    }
}

extension JobSpec {
    /// The description this spec gives with its `auto` sizes taken from `reported` (what a
    /// worker built from its dataset); nil when `reported` is another kind of model. A worker's
    /// report is trusted for the sizes that come from data, never for the ones the spec fixes.
    public func modelDescription(filling reported: ModelDescription) -> ModelDescription? {
        switch (model, reported) {
        case (var .mlp(mlp), let .mlp(r)):
            if mlp.inputs == .auto { mlp.inputs = .fixed(r.inputs) }
            if mlp.classes == .auto { mlp.classes = .fixed(r.classes) }
            return Model.mlp(mlp).description
        case (var .transformer(t), let .transformer(r)):
            if t.vocabulary == .auto { t.vocabulary = .fixed(r.vocabulary) }
            return Model.transformer(t).description
        default:
            return nil
        }
    }

    /// The model description with every `auto` size taken from the dataset (feature width,
    /// class count, vocabulary size), checked against it.
    public func modelDescription(dataset manifest: DatasetManifest) throws -> ModelDescription {
        var problems: [SpecError.Problem] = []
        switch model {
        case var .mlp(mlp):
            guard manifest.format != .text else {
                throw SpecError(source: "job \(name)", problems: [.init(path: "model.kind", message: "is mlp but dataset `\(manifest.name)` is text; use kind transformer")])
            }
            if case let .fixed(inputs) = mlp.inputs, inputs != manifest.featureWidth {
                problems.append(.init(path: "model.inputs", message: "is \(inputs) but dataset `\(manifest.name)` has \(manifest.featureWidth) features per example; use auto"))
            }
            if case let .fixed(classes) = mlp.classes, classes < manifest.classes {
                problems.append(.init(path: "model.classes", message: "is \(classes) but dataset `\(manifest.name)` has \(manifest.classes) classes; use auto"))
            }
            if mlp.inputs == .auto { mlp.inputs = .fixed(manifest.featureWidth) }
            if mlp.classes == .auto { mlp.classes = .fixed(manifest.classes) }
            if !problems.isEmpty { throw SpecError(source: "job \(name)", problems: problems) }
            return Model.mlp(mlp).description!
        case var .transformer(t):
            guard manifest.format == .text, let vocabularyURL = manifest.vocabulary else {
                throw SpecError(source: "job \(name)", problems: [.init(path: "model.kind", message: "is transformer but dataset `\(manifest.name)` is \(manifest.format.rawValue), not text; use kind mlp")])
            }
            let size: Int
            do {
                size = try Vocabulary.load(from: vocabularyURL).count
            } catch {
                throw SpecError(source: "job \(name)", problems: [.init(path: "model.vocabulary", message: "cannot be resolved: \(error)")])
            }
            if case let .fixed(vocabulary) = t.vocabulary, vocabulary < size {
                throw SpecError(source: "job \(name)", problems: [.init(path: "model.vocabulary", message: "is \(vocabulary) but dataset `\(manifest.name)`'s vocabulary has \(size) symbols; use auto")])
            }
            if t.vocabulary == .auto { t.vocabulary = .fixed(size) }
            return Model.transformer(t).description!
        }
    }
}
