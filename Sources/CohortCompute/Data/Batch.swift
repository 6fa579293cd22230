/// One rank's slice of a global batch, as the data readers produce it and the models consume it.
public enum Batch: Sendable, Hashable {
    /// `features` (count, width) row-major, Float32; `labels` (count), class ids in 0..<classes.
    case classification(features: [Float], width: Int, labels: [Int32])
    /// `tokens` (count, length + 1) row-major: inputs are columns 0..<length, targets 1...length.
    case sequences(tokens: [Int32], length: Int)

    /// Number of examples in the batch.
    public var count: Int {
        switch self {
        case let .classification(_, _, labels): return labels.count
        case let .sequences(tokens, length): return length < 0 ? 0 : tokens.count / (length + 1)
        }
    }
}
