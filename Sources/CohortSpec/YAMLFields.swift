import Yams

/// Reading typed fields out of a composed YAML document while collecting every problem (with the
/// line where it is) instead of stopping at the first.
final class YAMLFields {
    private var reported: [SpecError.Problem] = []

    /// Every problem so far, in the order of the document (those without a line last).
    var problems: [SpecError.Problem] {
        reported.enumerated().sorted { a, b in
            (a.element.line ?? Int.max, a.element.column ?? 0, a.offset) < (b.element.line ?? Int.max, b.element.column ?? 0, b.offset)
        }.map(\.element)
    }

    func report(_ path: String, _ node: Node?, _ message: String) {
        reported.append(SpecError.Problem(path: path, line: node?.mark?.line, column: node?.mark?.column, message: message))
    }

    /// Composes `yaml`; a syntax error becomes a problem with its line and column.
    static func compose(_ yaml: String, source: String) throws -> Node? {
        do {
            return try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw SpecError(source: source, problems: [problem(from: error)])
        }
    }

    static func problem(from error: YamlError) -> SpecError.Problem {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            let detail = context.map { "\(problem) (\($0.text))" } ?? problem
            return SpecError.Problem(path: "", line: mark.line, column: mark.column, message: "YAML syntax error: \(detail)")
        case let .reader(problem, offset, _, _):
            return SpecError.Problem(path: "", message: "the file is not readable text (\(problem)\(offset.map { " at byte \($0)" } ?? ""))")
        case let .duplicatedKeysInMapping(duplicates, context):
            return SpecError.Problem(path: "", line: context.mark.line, column: context.mark.column,
                                     message: "key(s) \(duplicates.joined(separator: ", ")) appear more than once; keep one of each")
        default:
            return SpecError.Problem(path: "", message: "YAML error: \(error)")
        }
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The mapping at `node` as key → value, reporting keys outside `known` (with a suggestion)
    /// and non-string keys. Nil, with a problem, when `node` is not a mapping.
    func mapping(_ node: Node, path: String, known: [String]) -> [String: Node]? {
        guard case let .mapping(mapping) = node else {
            report(path, node, "must be a mapping of keys to values, got \(Self.describe(node))")
            return nil
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard case let .scalar(keyScalar) = keyNode else {
                report(path, keyNode, "keys must be plain names, got \(Self.describe(keyNode))")
                continue
            }
            let key = keyScalar.string
            if result[key] != nil {
                report(Self.join(path, key), keyNode, "appears twice; keep one")
                continue
            }
            if !known.contains(key) {
                report(Self.join(path, key), keyNode, "unknown key\(Self.suggestion(for: key, among: known)); allowed here: \(known.joined(separator: ", "))")
                continue
            }
            result[key] = value
        }
        return result
    }

    static func isNull(_ node: Node) -> Bool {
        guard case let .scalar(scalar) = node, scalar.style == .plain || scalar.style == .any else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    /// A plain scalar's text, or nil (with a problem naming `expected`).
    private func plain(_ node: Node, _ path: String, expected: String) -> String? {
        guard case let .scalar(scalar) = node else {
            report(path, node, "must be \(expected), got \(Self.describe(node))")
            return nil
        }
        guard scalar.style == .plain || scalar.style == .any else {
            report(path, node, "must be \(expected), got the quoted string \(scalar.string.debugDescription)")
            return nil
        }
        return scalar.string
    }

    func string(_ node: Node, _ path: String) -> String? {
        guard case let .scalar(scalar) = node, !Self.isNull(node) else {
            report(path, node, "must be a string, got \(Self.describe(node))")
            return nil
        }
        return scalar.string
    }

    func integer(_ node: Node, _ path: String, minimum: Int, maximum: Int = .max, expected: String) -> Int? {
        guard let text = plain(node, path, expected: expected) else { return nil }
        guard let value = Int(text.replacingUnderscores()) else {
            report(path, node, "must be \(expected), got \(text)")
            return nil
        }
        guard value >= minimum && value <= maximum else {
            report(path, node, "must be \(expected), got \(value)")
            return nil
        }
        return value
    }

    func unsigned(_ node: Node, _ path: String) -> UInt64? {
        guard let text = plain(node, path, expected: "a non-negative integer") else { return nil }
        guard let value = UInt64(text.replacingUnderscores()) else {
            report(path, node, "must be a non-negative integer below 2^64, got \(text)")
            return nil
        }
        return value
    }

    func number(_ node: Node, _ path: String, expected: String, where valid: (Double) -> Bool) -> Double? {
        guard let text = plain(node, path, expected: expected) else { return nil }
        guard let value = Double(text.replacingUnderscores()), value.isFinite else {
            report(path, node, "must be \(expected), got \(text)")
            return nil
        }
        guard valid(value) else {
            report(path, node, "must be \(expected), got \(text)")
            return nil
        }
        return value
    }

    func bool(_ node: Node, _ path: String) -> Bool? {
        guard let text = plain(node, path, expected: "true or false") else { return nil }
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            report(path, node, "must be true or false, got \(text)")
            return nil
        }
    }

    func choice<T: RawRepresentable & CaseIterable>(_ node: Node, _ path: String, _ type: T.Type) -> T? where T.RawValue == String {
        let allowed = T.allCases.map(\.rawValue)
        guard case let .scalar(scalar) = node, !Self.isNull(node) else {
            report(path, node, "must be one of \(allowed.joined(separator: ", ")), got \(Self.describe(node))")
            return nil
        }
        guard let value = T(rawValue: scalar.string) else {
            report(path, node, "must be one of \(allowed.joined(separator: ", ")), got \(scalar.string)\(Self.suggestion(for: scalar.string, among: allowed))")
            return nil
        }
        return value
    }

    func sequence(_ node: Node, _ path: String, expected: String) -> [Node]? {
        guard case let .sequence(sequence) = node else {
            report(path, node, "must be \(expected), got \(Self.describe(node))")
            return nil
        }
        return Array(sequence)
    }

    /// What a node is, for messages: `-3`, `a mapping`, `a list`.
    static func describe(_ node: Node) -> String {
        switch node {
        case let .scalar(scalar):
            if isNull(node) { return "nothing (null)" }
            return scalar.style == .plain || scalar.style == .any ? scalar.string : scalar.string.debugDescription
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    /// ` (did you mean `x`?)` when `key` is close to one of `candidates`, else empty.
    static func suggestion(for key: String, among candidates: [String]) -> String {
        let normalized = kebab(key)
        if normalized != key, candidates.contains(normalized) {
            return " (did you mean `\(normalized)`? keys are kebab-case)"
        }
        var best: (String, Int)?
        for candidate in candidates {
            let distance = editDistance(normalized, candidate)
            if distance <= max(1, min(3, candidate.count / 3)), best == nil || distance < best!.1 {
                best = (candidate, distance)
            }
        }
        return best.map { " (did you mean `\($0.0)`?)" } ?? ""
    }

    /// `globalBatchSize` and `global_batch_size` → `global-batch-size`.
    static func kebab(_ key: String) -> String {
        var out = ""
        for character in key {
            if character == "_" {
                out.append("-")
            } else if character.isUppercase {
                if !out.isEmpty && out.last != "-" { out.append("-") }
                out += character.lowercased()
            } else {
                out.append(character)
            }
        }
        return out
    }

    /// Optimal-string-alignment distance: insertions, deletions, substitutions, transpositions.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var beforePrevious = Array(0...b.count)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], beforePrevious[j - 2] + 1)  // a transposition
                }
            }
            (beforePrevious, previous, current) = (previous, current, beforePrevious)
        }
        return previous[b.count]
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
