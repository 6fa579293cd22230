/// Everything wrong with a job spec or a dataset manifest, all at once: each problem names the
/// field path, the line where it is, what was expected and what was found.
public struct SpecError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        /// Dotted field path, e.g. `training.global-batch-size`; empty for the whole document.
        public var path: String
        /// 1-based line and column in the YAML, where known.
        public var line: Int?
        public var column: Int?
        public var message: String

        public init(path: String, line: Int? = nil, column: Int? = nil, message: String) {
            self.path = path
            self.line = line
            self.column = column
            self.message = message
        }

        public var description: String {
            var text = ""
            if let line {
                text += "line \(line)"
                if let column { text += ", column \(column)" }
                text += ": "
            }
            if !path.isEmpty { text += "\(path): " }
            return text + message
        }
    }

    /// The file the problems are in (its path), or a label such as `job spec`.
    public var source: String
    public var problems: [Problem]

    public init(source: String, problems: [Problem]) {
        self.source = source
        self.problems = problems
    }

    public var description: String {
        if problems.count == 1 { return "\(source): \(problems[0])" }
        return "\(source) has \(problems.count) problems:\n" + problems.map { "  \($0)" }.joined(separator: "\n")
    }
}
