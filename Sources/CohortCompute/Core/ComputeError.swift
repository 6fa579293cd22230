/// Everything that can go wrong in the compute core because of its input: a model description
/// that cannot be built, or a batch that does not fit the model. The description is one sentence
/// saying what was wrong and where. Programmer mistakes (mismatched buffer sizes) are
/// preconditions instead.
public enum ComputeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The model description cannot be built, e.g. heads that do not divide the width.
    case invalidDescription(String)
    /// The batch does not fit the model: wrong kind, width, length or element count.
    case invalidBatch(String)
    /// A class label at `index` in the batch lies outside `0..<classes`.
    case labelOutOfRange(index: Int, label: Int32, classes: Int)
    /// A token at `index` (row-major in the batch's token array) lies outside `0..<vocabulary`.
    case tokenOutOfRange(index: Int, token: Int32, vocabulary: Int)
    /// An optimizer or schedule setting is out of range.
    case invalidSetting(String)

    public var description: String {
        switch self {
        case let .invalidDescription(why):
            return "model description: \(why)"
        case let .invalidBatch(why):
            return "batch: \(why)"
        case let .labelOutOfRange(index, label, classes):
            return "batch: label \(label) at example \(index) is outside 0..<\(classes); check the dataset's class count against the model's `classes`"
        case let .tokenOutOfRange(index, token, vocabulary):
            return "batch: token \(token) at position \(index) is outside the vocabulary 0..<\(vocabulary); check the job's vocabulary file against the model's `vocabulary`"
        case let .invalidSetting(why):
            return "optimizer: \(why)"
        }
    }
}
