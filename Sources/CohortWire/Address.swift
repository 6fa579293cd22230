/// The address convention (DESIGN.md, Processes), in the one place every command uses:
/// everyone is given ONE coordinator address `HOST[:PORT]`; the api endpoint is PORT
/// (default 7600), control PORT+1 and data PORT+2, unless the coordinator says otherwise
/// (its `hello` reply carries all three).
public struct CoordinatorAddress: Sendable, Hashable, CustomStringConvertible {
    public static let defaultPort = 7600
    /// Environment variable every command reads when `--coordinator` is absent.
    public static let environmentVariable = "COHORT_COORDINATOR"

    public var host: String
    public var port: Int

    public init(host: String, port: Int = CoordinatorAddress.defaultPort) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST`, `HOST:PORT`, `[IPv6]`, `[IPv6]:PORT`, optionally prefixed by `tcp://`.
    public init(parsing text: String) throws(AddressError) {
        var s = Substring(text.trimmingSpaces())
        if s.hasPrefix("tcp://") { s = s.dropFirst(6) }
        guard !s.isEmpty else { throw AddressError(text: text, reason: "is empty; expected HOST[:PORT], e.g. coord.example.org:7600") }
        var host: Substring
        var portText: Substring?
        if s.first == "[" {
            guard let close = s.firstIndex(of: "]") else { throw AddressError(text: text, reason: "has `[` without a closing `]`") }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            if !rest.isEmpty {
                guard rest.first == ":" else { throw AddressError(text: text, reason: "has unexpected text after `]`") }
                portText = rest.dropFirst()
            }
        } else if s.filter({ $0 == ":" }).count > 1 {
            throw AddressError(text: text, reason: "looks like a bare IPv6 address; write it as [ADDRESS]:PORT")
        } else if let colon = s.firstIndex(of: ":") {
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
        } else {
            host = s
        }
        guard !host.isEmpty else { throw AddressError(text: text, reason: "has no host") }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || "-._:*".contains($0) }) else {
            throw AddressError(text: text, reason: "has characters that cannot be in a host name")
        }
        var port = CoordinatorAddress.defaultPort
        if let portText {
            guard let p = Int(portText), (1...65533).contains(p) else {
                throw AddressError(text: text, reason: "has port `\(portText)`; expected a number from 1 to 65533 (PORT+2 must be a port too)")
            }
            port = p
        }
        self.init(host: String(host), port: port)
    }

    /// The host as it goes into a ZeroMQ endpoint (IPv6 literals in brackets).
    var endpointHost: String { host.contains(":") ? "[\(host)]" : host }

    /// tcp endpoints by the convention: api PORT, control PORT+1, data PORT+2.
    public var endpoints: Endpoints {
        Endpoints(api: "tcp://\(endpointHost):\(port)",
                  control: "tcp://\(endpointHost):\(port + 1)",
                  data: "tcp://\(endpointHost):\(port + 2)")
    }

    public var description: String { "\(endpointHost):\(port)" }
}

/// The three endpoints of a coordinator, as ZeroMQ endpoint strings.
public struct Endpoints: Sendable, Hashable, Codable {
    public var api: String
    public var control: String
    public var data: String

    public init(api: String, control: String, data: String) {
        self.api = api
        self.control = control
        self.data = data
    }
}

/// A coordinator address that cannot be used, and why.
public struct AddressError: Error, Sendable, Hashable, CustomStringConvertible {
    public var text: String
    public var reason: String
    /// What `text` was given as: a coordinator address, or a join token.
    public var subject: String = "coordinator address"
    public var description: String { "\(subject) `\(text)` \(reason)" }
}

extension String {
    fileprivate func trimmingSpaces() -> Substring {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return s
    }
}
