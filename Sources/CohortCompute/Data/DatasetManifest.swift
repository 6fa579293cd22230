import Foundation

/// A dataset's manifest (`NAME/dataset.yaml`, docs/datasets.md) as plain values. CohortSpec
/// parses the YAML into this; everything that reads files from it lives here in CohortCompute.
public struct DatasetManifest: Sendable, Hashable {
    public enum Format: String, Sendable, Hashable, CaseIterable {
        case idx, csv, npy, text
    }

    /// Which column of a CSV row holds the class label.
    public enum LabelColumn: String, Sendable, Hashable, CaseIterable {
        case first, last
    }

    /// Whether a CSV file starts with a header row.
    public enum Header: String, Sendable, Hashable, CaseIterable {
        /// A first row whose label field is not an integer is a header.
        case auto
        case present
        case absent
    }

    /// The files of one split. idx and npy: `features` and `labels`; csv and text: `file`.
    public struct Files: Sendable, Hashable {
        public var features: URL?
        public var labels: URL?
        public var file: URL?
        public init(features: URL? = nil, labels: URL? = nil, file: URL? = nil) {
            self.features = features
            self.labels = labels
            self.file = file
        }
    }

    /// A test split carved out of the train files: a seeded permutation (SplitMix64 +
    /// Fisher–Yates, the sampler's) of the rows; its first `round(count × testFraction)` rows
    /// are the test split, the rest train, each kept in file order.
    public struct Split: Sendable, Hashable {
        public var testFraction: Double
        public var seed: UInt64
        public init(testFraction: Double, seed: UInt64) {
            self.testFraction = testFraction
            self.seed = seed
        }
    }

    /// The dataset's name (its directory under the data root).
    public var name: String
    /// The manifest file, for messages (`digits/dataset.yaml`).
    public var source: String
    public var format: Format
    public var train: Files
    /// Nil when `split` carves the test split out of `train`.
    public var test: Files?
    public var split: Split?
    /// Shape of one example's features, e.g. [28, 28]; the feature width is their product.
    /// Classification formats only.
    public var shape: [Int]
    /// Number of classes; labels must lie in 0..<classes. Classification formats only.
    public var classes: Int
    /// Every raw feature value is multiplied by this (1/255 for bytes, 1/16 for digits).
    public var scale: Float
    public var labelColumn: LabelColumn
    public var header: Header
    /// The vocabulary file (text only).
    public var vocabulary: URL?
    /// `sha256:` + hex, over the data files (ContentHash); nil when the manifest has none.
    public var contentHash: String?

    public init(
        name: String, source: String, format: Format, train: Files, test: Files? = nil,
        split: Split? = nil, shape: [Int] = [], classes: Int = 0, scale: Float = 1,
        labelColumn: LabelColumn = .first, header: Header = .auto, vocabulary: URL? = nil,
        contentHash: String? = nil
    ) {
        self.name = name
        self.source = source
        self.format = format
        self.train = train
        self.test = test
        self.split = split
        self.shape = shape
        self.classes = classes
        self.scale = scale
        self.labelColumn = labelColumn
        self.header = header
        self.vocabulary = vocabulary
        self.contentHash = contentHash
    }

    /// Features per example (the product of `shape`).
    public var featureWidth: Int { shape.reduce(1, *) }

    /// Every data file the manifest names, each with its role, in the canonical order that the
    /// content hash uses.
    public var files: [(role: String, url: URL)] {
        var result: [(role: String, url: URL)] = []
        for (prefix, files) in [("train", Optional(train)), ("test", test)] {
            guard let files else { continue }
            if let url = files.features { result.append(("\(prefix).features", url)) }
            if let url = files.labels { result.append(("\(prefix).labels", url)) }
            if let url = files.file { result.append(("\(prefix).file", url)) }
        }
        if let vocabulary { result.append(("vocabulary", vocabulary)) }
        return result
    }

    /// Checks what a reader needs, before any file is read: every problem at once.
    public func problems() -> [String] {
        var problems: [String] = []
        func check(_ files: Files?, _ prefix: String) {
            guard let files else { return }
            switch format {
            case .idx, .npy:
                if files.features == nil { problems.append("`\(prefix).features` is required for format \(format.rawValue)") }
                if files.labels == nil { problems.append("`\(prefix).labels` is required for format \(format.rawValue)") }
                if files.file != nil { problems.append("`\(prefix).file` is for csv and text; format \(format.rawValue) takes `features` and `labels`") }
            case .csv, .text:
                if files.file == nil { problems.append("`\(prefix).file` is required for format \(format.rawValue)") }
                if files.features != nil || files.labels != nil {
                    problems.append("`\(prefix).features`/`labels` are for idx and npy; format \(format.rawValue) takes `file`")
                }
            }
            for (role, url) in [("features", files.features), ("labels", files.labels), ("file", files.file)] {
                if let url, !FileManager.default.fileExists(atPath: url.path) {
                    problems.append("`\(prefix).\(role)` names a file that does not exist: \(url.path)")
                }
            }
        }
        check(train, "train")
        check(test, "test")
        if test == nil && split == nil { problems.append("give either a `test` section or a `split` to carve one out of train") }
        if test != nil && split != nil { problems.append("give a `test` section or a `split`, not both") }
        if let split, !(split.testFraction > 0 && split.testFraction < 1) {
            problems.append("`split.test-fraction` must lie strictly between 0 and 1, got \(split.testFraction)")
        }
        if format == .text {
            if split != nil { problems.append("`split` is not supported for format text; give a `test` section") }
            if let vocabulary {
                if !FileManager.default.fileExists(atPath: vocabulary.path) {
                    problems.append("`vocabulary` names a file that does not exist: \(vocabulary.path)")
                }
            } else {
                problems.append("`vocabulary` is required for format text")
            }
        } else {
            if shape.isEmpty || shape.contains(where: { $0 <= 0 }) {
                problems.append("`shape` must be a non-empty list of positive integers, got \(shape)")
            } else if shape.reduce(into: 1, { width, d in width = width.multipliedReportingOverflow(by: d).overflow ? Int.max : min(width * d, Int.max) }) > 1 << 30 {
                problems.append("`shape` \(shape) gives more than 2^30 features per example")
            }
            if classes < 1 || classes > 1 << 24 { problems.append("`classes` must be an integer from 1 to 16777216, got \(classes)") }
            if !scale.isFinite || scale == 0 { problems.append("`scale` must be a finite non-zero number, got \(scale)") }
        }
        return problems
    }

    /// Throws the first of `problems()`, all of them in one message.
    public func validate() throws {
        let problems = problems()
        if !problems.isEmpty { throw DataError(source, problems.joined(separator: "; ")) }
    }
}
