#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ApiMethod {
    /// Enrollees only: redeem a join token, registering the caller's public key.
    public static let enroll = "enroll"
    /// Admins: mint a join token.
    public static let token = "token"
    /// Admins: disable a principal's key.
    public static let revoke = "revoke"
    /// Admins: list principals.
    public static let principals = "principals"
}

/// A single-use, expiring invitation: the coordinator's address and public key, the institution
/// and role it grants, and the secret the coordinator checks (it keeps only the secret's hash).
/// Text form: `cohort-join-1.` followed by the base64url of this JSON.
public struct JoinToken: Sendable, Hashable, Codable {
    public var address: String
    public var publicKey: String
    public var institution: String
    public var role: String
    public var expiresAt: Double
    /// 32 random bytes, hex.
    public var secret: String

    public init(address: String, publicKey: String, institution: String, role: String, expiresAt: Double, secret: String) {
        self.address = address
        self.publicKey = publicKey
        self.institution = institution
        self.role = role
        self.expiresAt = expiresAt
        self.secret = secret
    }

    static let prefix = "cohort-join-1."

    public var text: String {
        let json = (try? JSONEncoder().encode(self)) ?? Data()
        let b64 = json.base64EncodedString()
        return Self.prefix + String(b64.compactMap { c -> Character? in c == "+" ? "-" : c == "/" ? "_" : c == "=" ? nil : c })
    }

    /// Parses the text form; a clear error for anything else (a truncated paste, another format).
    public init(text: String) throws(AddressError) {
        let trimmed = String(text.filter { !$0.isWhitespace })
        guard trimmed.hasPrefix(Self.prefix) else {
            throw AddressError(text: String(trimmed.prefix(20)), reason: "is not a Cohort join token (they start with \(Self.prefix))", subject: "--join")
        }
        var b64 = String(trimmed.dropFirst(Self.prefix.count).map { c -> Character in c == "-" ? "+" : c == "_" ? "/" : c })
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64), let token = try? JSONDecoder().decode(JoinToken.self, from: data) else {
            throw AddressError(text: String(trimmed.prefix(20)) + "…", reason: "is a damaged join token (was it cut short when copied?)", subject: "--join")
        }
        self = token
    }
}

public struct EnrollRequest: Sendable, Hashable, Codable {
    public var secret: String
    public var name: String?
    public init(secret: String, name: String?) {
        self.secret = secret
        self.name = name
    }
}

public struct PrincipalView: Sendable, Hashable, Codable {
    public var name: String
    public var institution: String
    public var role: String
    public var publicKey: String
    public var createdAt: Double
    public var revokedAt: Double?
    public init(name: String, institution: String, role: String, publicKey: String, createdAt: Double, revokedAt: Double?) {
        self.name = name
        self.institution = institution
        self.role = role
        self.publicKey = publicKey
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

public struct PrincipalsReply: Sendable, Hashable, Codable {
    public var principals: [PrincipalView]
    public init(principals: [PrincipalView]) { self.principals = principals }
}

public struct TokenRequest: Sendable, Hashable, Codable {
    public var institution: String
    public var role: String
    public var ttlSeconds: Double
    public init(institution: String, role: String, ttlSeconds: Double) {
        self.institution = institution
        self.role = role
        self.ttlSeconds = ttlSeconds
    }
}

public struct TokenReply: Sendable, Hashable, Codable {
    public var token: String
    public var expiresAt: Double
    public init(token: String, expiresAt: Double) {
        self.token = token
        self.expiresAt = expiresAt
    }
}

public struct RevokeRequest: Sendable, Hashable, Codable {
    public var principal: String
    public init(principal: String) { self.principal = principal }
}
