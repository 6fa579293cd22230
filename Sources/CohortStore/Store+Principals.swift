import Foundation
import GRDB

/// Someone the coordinator knows by public key: a person or a worker, with a role.
public struct Principal: Sendable, Hashable, Codable {
    public enum Role: String, Sendable, Hashable, Codable, CaseIterable {
        /// Everything.
        case admin
        /// Submit; read, cancel and download their own jobs.
        case researcher
        /// Read everything.
        case `operator`
        /// A worker daemon: the control and data endpoints.
        case worker
    }

    public var id: Int64
    public var name: String
    public var institution: String
    public var role: Role
    /// Z85 text of the CURVE public key.
    public var publicKey: String
    public var createdAt: Date
    public var revokedAt: Date?
}

extension Store {
    public func principal(publicKey: String) throws(StoreError) -> Principal? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM principals WHERE public_key = ?", arguments: [publicKey]).map(Self.principal(from:)) }
    }

    public func principal(named name: String) throws(StoreError) -> Principal? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM principals WHERE name = ?", arguments: [name]).map(Self.principal(from:)) }
    }

    public func principals() throws(StoreError) -> [Principal] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM principals ORDER BY id").map(Self.principal(from:)) }
    }

    /// Adds a principal directly (the first admin at first start).
    @discardableResult
    public func addPrincipal(name: String, institution: String, role: Principal.Role, publicKey: String,
                             actor: String, at now: Date = Date()) throws(StoreError) -> Principal {
        try write { db in
            try Self.insertPrincipal(db, name: name, institution: institution, role: role, publicKey: publicKey, at: now)
            let p = try Self.principal(from: Row.fetchOne(db, sql: "SELECT * FROM principals WHERE public_key = ?", arguments: [publicKey])!)
            try Self.appendEvent(db, at: now, actor: actor, kind: "principal.added", detail: "\(name) (\(role.rawValue) at \(institution))")
            return p
        }
    }

    /// Records a join token by the hash of its secret.
    public func createToken(secretHash: String, institution: String, role: Principal.Role, expiresAt: Date,
                            createdBy: String, at now: Date = Date()) throws(StoreError) {
        try write { db in
            try db.execute(sql: """
                INSERT INTO join_tokens (secret_hash, institution, role, created_by, created_at, expires_at)
                VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [secretHash, institution, role.rawValue, createdBy, now.timeIntervalSince1970, expiresAt.timeIntervalSince1970])
            try Self.appendEvent(db, at: now, actor: createdBy, kind: "token.created",
                                 detail: "\(role.rawValue) at \(institution), expires \(Int(expiresAt.timeIntervalSince1970))")
        }
    }

    /// Redeems a join token once: registers `publicKey` under the token's institution and role.
    /// A used, expired or unknown token is refused, as is a key that is already known.
    public func redeem(secretHash: String, publicKey: String, name: String?, at now: Date = Date()) throws(StoreError) -> Principal {
        try write { db in
            guard let token = try Row.fetchOne(db, sql: "SELECT * FROM join_tokens WHERE secret_hash = ?", arguments: [secretHash]) else {
                throw StoreError.notFound("this join token")
            }
            if let usedAt: Double = token["used_at"] {
                throw StoreError.conflict("this join token was already used at \(Self.stamp(usedAt)); ask your admin for a new one")
            }
            let expires: Double = token["expires_at"]
            guard now.timeIntervalSince1970 < expires else {
                throw StoreError.conflict("this join token expired at \(Self.stamp(expires)); ask your admin for a new one")
            }
            if try Row.fetchOne(db, sql: "SELECT 1 FROM principals WHERE public_key = ?", arguments: [publicKey]) != nil {
                throw StoreError.conflict("this key is already enrolled; it needs no token")
            }
            let institution: String = token["institution"]
            let roleText: String = token["role"]
            let role = Principal.Role(rawValue: roleText) ?? .worker
            let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM principals") ?? 0
            var chosen = name ?? "\(institution)-\(role.rawValue)-\(count + 1)"
            if name == nil {
                while try Row.fetchOne(db, sql: "SELECT 1 FROM principals WHERE name = ?", arguments: [chosen]) != nil { chosen += "x" }
            } else if try Row.fetchOne(db, sql: "SELECT 1 FROM principals WHERE name = ?", arguments: [chosen]) != nil {
                throw StoreError.conflict("the name \(chosen) is taken; choose another with --name")
            }
            try Self.insertPrincipal(db, name: chosen, institution: institution, role: role, publicKey: publicKey, at: now)
            let id = db.lastInsertedRowID
            try db.execute(sql: "UPDATE join_tokens SET used_at = ?, used_by = ? WHERE secret_hash = ?",
                           arguments: [now.timeIntervalSince1970, id, secretHash])
            try Self.appendEvent(db, at: now, actor: chosen, kind: "principal.enrolled", detail: "\(role.rawValue) at \(institution)")
            return try Self.principal(from: Row.fetchOne(db, sql: "SELECT * FROM principals WHERE id = ?", arguments: [id])!)
        }
    }

    /// Disables a principal's key; every later message from it is refused.
    @discardableResult
    public func revoke(_ name: String, actor: String, at now: Date = Date()) throws(StoreError) -> Principal {
        try write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM principals WHERE name = ?", arguments: [name]) else {
                throw StoreError.notFound("principal \(name)")
            }
            if let at: Double = row["revoked_at"] { throw StoreError.conflict("\(name) was already revoked at \(Self.stamp(at))") }
            // Revoking the last admin would leave nobody able to enrol anyone or revoke anything,
            // for good (a restarted coordinator does not make a new admin while one is on record,
            // and join tokens cannot make admins).
            let role: String = row["role"]
            if role == Principal.Role.admin.rawValue,
               try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM principals WHERE role = 'admin' AND revoked_at IS NULL AND name != ?", arguments: [name]) == 0 {
                throw StoreError.conflict("\(name) is the consortium's only admin (join tokens cannot make admins); revoked, it would leave nobody able to enrol or revoke anyone")
            }
            try db.execute(sql: "UPDATE principals SET revoked_at = ? WHERE name = ?", arguments: [now.timeIntervalSince1970, name])
            try Self.appendEvent(db, at: now, actor: actor, kind: "principal.revoked", detail: name)
            return try Self.principal(from: Row.fetchOne(db, sql: "SELECT * FROM principals WHERE name = ?", arguments: [name])!)
        }
    }

    static func insertPrincipal(_ db: Database, name: String, institution: String, role: Principal.Role,
                                publicKey: String, at now: Date) throws {
        try db.execute(sql: """
            INSERT INTO principals (name, institution, role, public_key, created_at) VALUES (?, ?, ?, ?, ?)
            """, arguments: [name, institution, role.rawValue, publicKey, now.timeIntervalSince1970])
    }

    static func principal(from row: Row) throws -> Principal {
        let roleText: String = row["role"]
        guard let role = Principal.Role(rawValue: roleText) else { throw StoreError.database("principal has unknown role \(roleText)") }
        let revoked: Double? = row["revoked_at"]
        return Principal(id: row["id"], name: row["name"], institution: row["institution"], role: role, publicKey: row["public_key"],
                         createdAt: Date(timeIntervalSince1970: row["created_at"]), revokedAt: revoked.map(Date.init(timeIntervalSince1970:)))
    }

    static func stamp(_ t: Double) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: Date(timeIntervalSince1970: t))
    }
}
