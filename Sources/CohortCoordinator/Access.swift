import CohortStore
import CohortTransport
import CohortWire

/// Who sent a message, as the coordinator sees it when it arrives.
enum Caller: Sendable, Hashable {
    /// A known, unrevoked key.
    case principal(Principal)
    /// A key nobody enrolled: it may only redeem a join token.
    case enrollee(publicKey: String)
    /// A revoked key (its connection predates the revocation).
    case revoked(Principal)
    /// `--plaintext`: no keys at all; treated as an admin, and logged as such at start.
    case plaintext

    var name: String {
        switch self {
        case let .principal(p), let .revoked(p): return p.name
        case let .enrollee(key): return "unknown key " + key.prefix(8)
        case .plaintext: return "anonymous"
        }
    }

    var role: Principal.Role? {
        switch self {
        case let .principal(p): return p.role
        case .plaintext: return .admin
        case .enrollee, .revoked: return nil
        }
    }
}

/// What each role may do (docs/security.md has the same table). Pure: the loop asks, then acts.
enum Access {
    enum Endpoint: String { case api, control, data }

    /// Roles allowed to call `method` on `endpoint`; `nil` in the set stands for an enrollee.
    static func allowed(_ method: String, on endpoint: Endpoint) -> Set<Principal.Role?> {
        switch (endpoint, method) {
        case (.api, ApiMethod.hello): return [nil, .admin, .researcher, .operator, .worker]
        case (.api, ApiMethod.enroll): return [nil]
        case (.api, ApiMethod.submit), (.api, ApiMethod.cancel), (.api, ApiMethod.resume): return [.admin, .researcher]
        case (.api, ApiMethod.download): return [.admin, .researcher, .operator]
        case (.api, ApiMethod.jobs), (.api, ApiMethod.status), (.api, ApiMethod.events), (.api, ApiMethod.workers):
            return [.admin, .researcher, .operator]
        case (.api, ApiMethod.token), (.api, ApiMethod.revoke), (.api, ApiMethod.principals): return [.admin]
        case (.control, _), (.data, _): return [.worker]
        default: return [.admin]
        }
    }

    /// Nil when allowed; otherwise the sentence the caller gets back.
    static func denial(_ caller: Caller, _ method: String, on endpoint: Endpoint) -> String? {
        if case let .revoked(p) = caller { return "the key of \(p.name) was revoked; ask an admin to enrol a new one" }
        if allowed(method, on: endpoint).contains(caller.role) { return nil }
        switch caller {
        case .enrollee:
            return endpoint == .api
                ? "this key is not enrolled: it may only redeem a join token (`cohort enroll --join TOKEN`)"
                : "this key is not enrolled as a worker: enrol it with a worker join token first"
        default:
            let role = caller.role?.rawValue ?? "enrollee"
            return "\(caller.name) (\(role)) may not call `\(method)` on the \(endpoint.rawValue) endpoint"
        }
    }
}

/// The coordinator's ZAP policy: every CURVE key may connect (an unknown one as an enrollee, so
/// it can redeem a token), except revoked ones; the connection carries the key as User-Id and
/// the principal and role as metadata. Requests are authorised per message by the loop, from
/// the current database, so a revocation applies to connections already open too.
struct StoreAuthenticator: Authenticator {
    let store: Store

    func authenticate(_ request: ZAPRequest) -> ZAPDecision {
        guard request.mechanism == "CURVE", let key = request.publicKey else { return .reject(reason: "CURVE required") }
        guard let principal = try? store.principal(publicKey: key.z85) else {
            return .accept(userId: key.z85, metadata: ["Role": "enrollee"])
        }
        if principal.revokedAt != nil { return .reject(reason: "revoked") }
        return .accept(userId: key.z85, metadata: ["Role": principal.role.rawValue, "Principal": principal.name])
    }
}
