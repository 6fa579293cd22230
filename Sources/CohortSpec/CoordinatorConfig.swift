import Foundation
import Yams

/// The coordinator's config file (docs/configuration.md): every setting a flag also sets.
/// Flags win over the file.
public struct CoordinatorConfig: Sendable, Hashable {
    public var dataDir: String?
    public var listen: String?
    public var advertise: String?
    public var plaintext: Bool?
    public var heartbeatInterval: Double?
    public var missedHeartbeats: Int?
    public var ipc: Bool?
    public var keepCheckpoints: Int?
    public var deadlineSlack: Double?
    public var evaluationGrace: Double?
    public var ioThreads: Int?

    public static let keys = ["data-dir", "listen", "advertise", "plaintext", "heartbeat-interval", "missed-heartbeats", "ipc", "keep-checkpoints",
                              "deadline-slack", "evaluation-grace", "io-threads"]

    public init() {}

    /// Reads the file at `path`; every problem in one `SpecError`.
    public static func load(path: String) throws -> CoordinatorConfig {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw SpecError(source: path, problems: [.init(path: "", message: "cannot read the config file (\(error.localizedDescription))")])
        }
        guard let root = try YAMLFields.compose(text, source: path) else { return CoordinatorConfig() }
        let f = YAMLFields()
        var c = CoordinatorConfig()
        if let map = f.mapping(root, path: "", known: keys) {
            func node(_ k: String) -> Node? { map[k].flatMap { YAMLFields.isNull($0) ? nil : $0 } }
            if let n = node("data-dir") { c.dataDir = f.string(n, "data-dir") }
            if let n = node("listen") { c.listen = f.string(n, "listen") }
            if let n = node("advertise") { c.advertise = f.string(n, "advertise") }
            if let n = node("plaintext") { c.plaintext = f.bool(n, "plaintext") }
            if let n = node("heartbeat-interval") {
                c.heartbeatInterval = f.number(n, "heartbeat-interval", expected: "seconds, a number from 0.05 to 60", where: { $0 >= 0.05 && $0 <= 60 })
            }
            if let n = node("ipc") { c.ipc = f.bool(n, "ipc") }
            if let n = node("deadline-slack") {
                c.deadlineSlack = f.number(n, "deadline-slack", expected: "seconds from 0 to 3600", where: { $0 >= 0 && $0 <= 3600 })
            }
            if let n = node("evaluation-grace") {
                c.evaluationGrace = f.number(n, "evaluation-grace", expected: "seconds from 0 to 86400", where: { $0 >= 0 && $0 <= 86_400 })
            }
            if let n = node("keep-checkpoints") {
                c.keepCheckpoints = f.integer(n, "keep-checkpoints", minimum: 1, expected: "a positive integer")
            }
            if let n = node("io-threads") {
                c.ioThreads = f.integer(n, "io-threads", minimum: 1, maximum: 63, expected: "an integer from 1 to 63")
            }
            if let n = node("missed-heartbeats") {
                c.missedHeartbeats = f.integer(n, "missed-heartbeats", minimum: 1, expected: "a positive integer")
            }
        }
        if !f.problems.isEmpty { throw SpecError(source: path, problems: f.problems) }
        return c
    }
}
