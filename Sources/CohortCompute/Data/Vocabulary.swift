import Foundation

/// A character vocabulary: token id ↔ Unicode scalar. The file is a JSON array of strings, one
/// scalar each (JSON escapes round-trip newline, space, quotes and any other character). Entry 0
/// is always U+FFFD REPLACEMENT CHARACTER, the unknown symbol: characters absent from the
/// vocabulary (test characters never seen in training) map to id 0. The rest are the training
/// corpus's distinct scalars in code-point order.
public struct Vocabulary: Sendable, Hashable {
    public static let unknown: Unicode.Scalar = "\u{FFFD}"

    public let symbols: [Unicode.Scalar]
    private let ids: [UInt32: Int32]

    /// `symbols[0]` must be `Vocabulary.unknown`; no symbol may repeat.
    public init(symbols: [Unicode.Scalar]) throws {
        guard symbols.first == Self.unknown else {
            throw DataError("", "a vocabulary must start with the unknown symbol U+FFFD")
        }
        var ids: [UInt32: Int32] = [:]
        for (i, symbol) in symbols.enumerated() {
            if ids[symbol.value] != nil {
                throw DataError("", "the vocabulary lists U+\(String(symbol.value, radix: 16, uppercase: true)) twice")
            }
            ids[symbol.value] = Int32(i)
        }
        self.symbols = symbols
        self.ids = ids
    }

    /// The vocabulary of a training corpus: U+FFFD, then its distinct scalars in code-point order.
    public static func build(from corpus: String) -> Vocabulary {
        var seen = Set<UInt32>()
        for scalar in corpus.unicodeScalars { seen.insert(scalar.value) }
        seen.remove(unknown.value)
        let symbols = [unknown] + seen.sorted().map { Unicode.Scalar($0)! }
        return try! Vocabulary(symbols: symbols)
    }

    public var count: Int { symbols.count }

    public func id(of scalar: Unicode.Scalar) -> Int32 { ids[scalar.value] ?? 0 }

    public func encode(_ text: String) -> [Int32] { text.unicodeScalars.map { ids[$0.value] ?? 0 } }

    public func decode(_ tokens: some Sequence<Int32>) -> String {
        var text = ""
        for token in tokens {
            text.unicodeScalars.append(token >= 0 && Int(token) < symbols.count ? symbols[Int(token)] : Self.unknown)
        }
        return text
    }

    /// The file's bytes: a JSON array, one symbol per line.
    public func fileContents() -> [UInt8] {
        var text = "[\n"
        for (i, symbol) in symbols.enumerated() {
            text += "  " + Self.jsonString(symbol) + (i + 1 < symbols.count ? ",\n" : "\n")
        }
        text += "]\n"
        return Array(text.utf8)
    }

    public func write(to url: URL) throws {
        do {
            try Foundation.Data(fileContents()).write(to: url, options: .atomic)
        } catch {
            throw DataError(url.path, "cannot write the vocabulary (\(error.localizedDescription))")
        }
    }

    public static func load(from url: URL) throws -> Vocabulary {
        let bytes = try FileBytes.read(url)
        let strings: [String]
        do {
            strings = try JSONDecoder().decode([String].self, from: Foundation.Data(bytes))
        } catch {
            throw DataError(url.path, "is not a JSON array of strings (\(error.localizedDescription)); rebuild it with deploy/datasets/install.sh")
        }
        var symbols: [Unicode.Scalar] = []
        symbols.reserveCapacity(strings.count)
        for (i, string) in strings.enumerated() {
            let scalars = Array(string.unicodeScalars)
            guard scalars.count == 1 else {
                throw DataError(url.path, "entry \(i) is \(string.debugDescription), not exactly one Unicode scalar")
            }
            symbols.append(scalars[0])
        }
        do {
            return try Vocabulary(symbols: symbols)
        } catch let error as DataError {
            throw DataError(url.path, error.message)
        }
    }

    private static func jsonString(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\"": return "\"\\\"\""
        case "\\": return "\"\\\\\""
        case "\n": return "\"\\n\""
        case "\r": return "\"\\r\""
        case "\t": return "\"\\t\""
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F || (0x2028...0x2029).contains(scalar.value) {
                let hex = String(scalar.value, radix: 16)
                return "\"\\u" + String(repeating: "0", count: 4 - hex.count) + hex + "\""
            }
            return "\"" + String(scalar) + "\""
        }
    }
}
