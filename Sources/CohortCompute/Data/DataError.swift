/// Everything that can go wrong reading a dataset or a checkpoint file. Each description is one
/// sentence that says where the problem is and what to do about it.
public struct DataError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file (or dataset manifest) the problem is in, as the user would name it.
    public var location: String
    /// What was wrong and, where it helps, what to do.
    public var message: String

    public init(_ location: String, _ message: String) {
        self.location = location
        self.message = message
    }

    public var description: String { location.isEmpty ? message : "\(location): \(message)" }
}
