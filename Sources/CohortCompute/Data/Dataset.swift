import Foundation

/// One split of a dataset, in memory: `count` examples that `gather` copies into a `Batch`.
/// Classification: example i is row i. Text: example i is the window of `context + 1` tokens
/// starting at token i, so `count` is `tokens.count - context` and a sampler's indices are
/// window starts.
public struct Dataset: Sendable {
    public enum Split: String, Sendable, Hashable, CaseIterable {
        case train, test
    }

    public enum Content: Sendable {
        /// `features` (count, width) row-major, already scaled; `labels` (count).
        case classification(features: [Float], width: Int, labels: [Int32])
        /// The split's text as token ids, and the window length minus one.
        case text(tokens: [Int32], context: Int)
    }

    public let name: String
    public let split: Split
    public let content: Content
    /// Text datasets only.
    public let vocabulary: Vocabulary?
    /// Classification datasets only (0 for text).
    public let classes: Int

    public init(name: String, split: Split, content: Content, vocabulary: Vocabulary? = nil, classes: Int = 0) {
        self.name = name
        self.split = split
        self.content = content
        self.vocabulary = vocabulary
        self.classes = classes
    }

    /// Number of examples (text: of window starts).
    public var count: Int {
        switch content {
        case let .classification(_, _, labels): return labels.count
        case let .text(tokens, context): return max(0, tokens.count - context)
        }
    }

    /// The examples an evaluation pass scores, and rank `rank`'s contiguous share of them (shares
    /// differ by at most one, as the sampler's slices do). Classification: every example. Text:
    /// non-overlapping windows (starts 0, context, 2·context, …), so each test token is predicted
    /// at most once (the last (tokens − 1) mod context are not). Gather them in chunks of any size.
    public func evaluationIndices(rank: Int = 0, worldSize: Int = 1) -> [Int] {
        let all: [Int]
        switch content {
        case .classification: all = Array(0..<count)
        case let .text(_, context): all = Array(stride(from: 0, to: count, by: context))
        }
        let share = Sampler.slice(rank: rank, worldSize: worldSize, globalBatchSize: all.count)
        return Array(all[share])
    }

    /// Copies the examples at `indices` (each in 0..<count) into a batch, in that order.
    public func gather(_ indices: some Collection<Int>) -> Batch {
        switch content {
        case let .classification(features, width, labels):
            var outLabels: [Int32] = []
            outLabels.reserveCapacity(indices.count)
            let outFeatures = [Float](unsafeUninitializedCapacity: indices.count * width) { out, initialized in
                features.withUnsafeBufferPointer { src in
                    var row = 0
                    for i in indices {
                        precondition(i >= 0 && i < labels.count, "example \(i) outside 0..<\(labels.count)")
                        (out.baseAddress! + row * width).initialize(from: src.baseAddress! + i * width, count: width)
                        outLabels.append(labels[i])
                        row += 1
                    }
                }
                initialized = indices.count * width
            }
            return .classification(features: outFeatures, width: width, labels: outLabels)
        case let .text(tokens, context):
            let length = context + 1
            let windows = count
            let out = [Int32](unsafeUninitializedCapacity: indices.count * length) { out, initialized in
                tokens.withUnsafeBufferPointer { src in
                    var row = 0
                    for i in indices {
                        precondition(i >= 0 && i < windows, "window \(i) outside 0..<\(windows)")
                        (out.baseAddress! + row * length).initialize(from: src.baseAddress! + i, count: length)
                        row += 1
                    }
                }
                initialized = indices.count * length
            }
            return .sequences(tokens: out, length: context)
        }
    }

    /// Loads one split of the dataset the manifest describes. `context` (the model's context
    /// length) is required for text and ignored otherwise. Does not check the content hash
    /// (`ContentHash.verify` does).
    public static func load(_ manifest: DatasetManifest, split: Split, context: Int? = nil) throws -> Dataset {
        try manifest.validate()
        switch manifest.format {
        case .text:
            guard let context, context > 0 else {
                throw DataError(manifest.source, "is a text dataset, so loading it needs the model's context length (a positive integer)")
            }
            let vocabulary = try Vocabulary.load(from: manifest.vocabulary!)
            let files = split == .train ? manifest.train : manifest.test!
            let url = files.file!
            let bytes = try FileBytes.read(url)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                let offset = firstInvalidUTF8(bytes)
                throw DataError(url.path, "is not valid UTF-8 (first bad byte at offset \(offset)); convert it with iconv -t UTF-8")
            }
            let tokens = vocabulary.encode(text)
            guard tokens.count > context else {
                throw DataError(url.path, "holds \(tokens.count) characters, fewer than one window of \(context + 1) (the model's context + 1); use a shorter context or more text")
            }
            return Dataset(name: manifest.name, split: split, content: .text(tokens: tokens, context: context), vocabulary: vocabulary)
        case .idx, .npy, .csv:
            let files: DatasetManifest.Files
            if let test = manifest.test {
                files = split == .train ? manifest.train : test
            } else {
                files = manifest.train
            }
            var (features, labels) = try loadClassification(manifest, files)
            if manifest.test == nil, let carve = manifest.split {
                let rows = splitRows(count: labels.count, carve, split: split)
                let width = manifest.featureWidth
                let whole = Dataset(name: manifest.name, split: split, content: .classification(features: features, width: width, labels: labels))
                guard case let .classification(f, _, l) = whole.gather(rows) else { preconditionFailure() }
                features = f
                labels = l
            }
            return Dataset(name: manifest.name, split: split,
                           content: .classification(features: features, width: manifest.featureWidth, labels: labels),
                           classes: manifest.classes)
        }
    }

    /// The rows of `split` when `carve` splits `count` rows: see `DatasetManifest.Split`.
    public static func splitRows(count: Int, _ carve: DatasetManifest.Split, split: Split) -> [Int] {
        var generator = SplitMix64(seed: carve.seed)
        let order = generator.permutation(count: count)
        let testCount = Int((Double(count) * carve.testFraction).rounded())
        let rows = split == .test ? order[..<testCount] : order[testCount...]
        return rows.sorted()
    }

    private static func loadClassification(_ manifest: DatasetManifest, _ files: DatasetManifest.Files) throws -> ([Float], [Int32]) {
        let width = manifest.featureWidth
        switch manifest.format {
        case .csv:
            let url = files.file!
            return try CSVReader.parse(try FileBytes.read(url), name: url.path, width: width, classes: manifest.classes,
                                       scale: manifest.scale, labelColumn: manifest.labelColumn, header: manifest.header)
        case .idx, .npy:
            let featuresURL = files.features!, labelsURL = files.labels!
            let parse = manifest.format == .idx ? IDXReader.parse : NPYReader.parse
            let featuresArray = try parse(try FileBytes.read(featuresURL), featuresURL.path)
            let labelsArray = try parse(try FileBytes.read(labelsURL), labelsURL.path)
            let shape = featuresArray.shape
            guard shape.count >= 1, Array(shape.dropFirst()).reduce(1, *) == width else {
                throw DataError(featuresURL.path, "holds features of shape \(shape), but the manifest's `shape` \(manifest.shape) needs (N, \(manifest.shape.map(String.init).joined(separator: ", "))); fix `shape` in \(manifest.source)")
            }
            let labelShape = labelsArray.shape
            guard labelShape.count == 1 || (labelShape.count == 2 && labelShape[1] == 1) else {
                throw DataError(labelsURL.path, "holds labels of shape \(labelShape); expected one label per example, shape (N,)")
            }
            guard labelShape[0] == shape[0] else {
                throw DataError(labelsURL.path, "holds \(labelShape[0]) labels but \(featuresURL.lastPathComponent) holds \(shape[0]) examples; the files do not belong together")
            }
            let labels = try labelsArray.labels(classes: manifest.classes, name: labelsURL.path)
            return (featuresArray.floats(scale: manifest.scale), labels)
        case .text:
            preconditionFailure("text is not a classification format")
        }
    }

    /// Offset of the first byte that does not belong to a well-formed UTF-8 sequence.
    static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int {
        var i = 0
        while i < bytes.count {
            let lead = bytes[i]
            let length: Int
            switch lead {
            case 0x00...0x7F: length = 1
            case 0xC2...0xDF: length = 2
            case 0xE0...0xEF: length = 3
            case 0xF0...0xF4: length = 4
            default: return i
            }
            guard i + length <= bytes.count,
                  String(validating: bytes[i..<(i + length)], as: UTF8.self) != nil
            else { return i }
            i += length
        }
        return i
    }
}
