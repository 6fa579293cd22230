import ArgumentParser
import CohortClient
import CohortTransport
import CohortWire
import Foundation

/// `cohort enroll --join TOKEN`: redeem a join token once; afterwards the key is simply known.
struct Enroll: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Redeem a join token: create your key pair if needed and register it with the coordinator.")

    @Option(help: "The join token an admin gave you (`cohort admin token`).") var join: String
    @Option(help: "A worker's state directory: the key goes to DIR/key.") var stateDir: String?
    @Option(help: "A person's key file. Env: COHORT_KEY. Default: ~/.config/cohort/key.") var key: String?
    @Option(help: "Your principal name (default: INSTITUTION-ROLE-N).") var name: String?
    @Option(help: "Seconds to wait for the coordinator.") var timeout: Double = 5

    func run() throws {
        let token: JoinToken
        do { token = try JoinToken(text: join) } catch { throw ValidationError(error.description) }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be more than 0 and at most 86400 seconds, got \(timeout)") }
        let path = try Self.enroll(token: token, stateDir: stateDir, key: key, name: name, timeout: timeout)
        print("key: \(path) (coordinator pinned in \(Pinned.path(for: path)))")
    }

    /// Shared with `cohort worker --join`: returns the key file's path.
    static func enroll(token: JoinToken, stateDir: String?, key: String?, name: String?, timeout: Double) throws -> String {
        if stateDir?.isEmpty == true || key?.isEmpty == true { throw ValidationError("--state-dir and --key must not be empty") }
        if Date().timeIntervalSince1970 >= token.expiresAt {
            throw CommandFailure("this join token expired at \(Format.time(token.expiresAt)); ask your admin for a new one")
        }
        let path = stateDir.map { $0 + "/key" } ?? key ?? ProcessInfo.processInfo.environment["COHORT_KEY"]
            ?? (NSHomeDirectory() + "/.config/cohort/key")
        let keys: CurveKeyPair
        if FileManager.default.fileExists(atPath: path) {
            keys = try CurveKeyPair.load(from: path)
        } else {
            keys = try CurveKeyPair.generate()
            try keys.save(to: path)
        }
        let server: CurveKey
        let address: CoordinatorAddress
        do {
            server = try CurveKey(z85: token.publicKey)
            address = try CoordinatorAddress(parsing: token.address)
        } catch {
            throw ValidationError("the join token is damaged: \(error)")
        }
        let client = try Client(address: address, credentials: .curve(keys: keys, serverKey: server), timeout: timeout)
        do {
            let p = try client.call(ApiMethod.enroll, EnrollRequest(secret: token.secret, name: name), as: PrincipalView.self)
            try Pinned(address: token.address, publicKey: token.publicKey).save(for: path)
            print("enrolled as \(p.name): \(p.role) at \(p.institution)")
        } catch let error as ClientError {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            throw ExitCode(error.exitCode)
        }
        return path
    }
}

extension Admin {
    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mint a single-use, expiring join token (admins).")
        @Option(help: "The institution the new key will belong to.") var institution: String
        @Option(help: "worker, researcher or operator.") var role: String
        @Option(help: "How long the token stays valid: 30m, 24h, 7d (at most 30d).") var ttl: String = "24h"
        @OptionGroup var options: ClientOptions

        func run() throws {
            guard let seconds = Self.seconds(ttl) else { throw ValidationError("--ttl \(ttl): expected a number with s, m, h or d, e.g. 24h") }
            guard seconds <= 30 * 86_400 else { throw ValidationError("--ttl \(ttl) is longer than 30 days") }
            try options.withClient { client in
                let reply = try client.call(ApiMethod.token, TokenRequest(institution: institution, role: role, ttlSeconds: seconds), as: TokenReply.self)
                if options.json { return try options.printJSON(reply) }
                print(reply.token)
                FileHandle.standardError.write(Data("single use, \(role) at \(institution), expires \(Format.time(reply.expiresAt))\n".utf8))
            }
        }

        static func seconds(_ text: String) -> Double? {
            guard let unit = text.last, let n = Double(text.dropLast()), n > 0, n <= 1e9 else { return nil }
            switch unit {
            case "s": return n
            case "m": return n * 60
            case "h": return n * 3600
            case "d": return n * 86_400
            default: return nil
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a principal's key; every later message from it is refused (admins).")
        @Argument(help: "The principal's name (`cohort admin principals`).") var principal: String
        @OptionGroup var options: ClientOptions

        func run() throws {
            try options.withClient { client in
                let p = try client.call(ApiMethod.revoke, RevokeRequest(principal: principal), as: PrincipalView.self)
                if options.json { return try options.printJSON(p) }
                print("revoked \(p.name) (\(p.role) at \(p.institution))")
            }
        }
    }

    struct Principals: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List principals: people and workers with their roles (admins).")
        @OptionGroup var options: ClientOptions

        func run() throws {
            try options.withClient { client in
                let list = try client.call(ApiMethod.principals, [String: String](), as: PrincipalsReply.self)
                if options.json { return try options.printJSON(list) }
                var table = Table(header: ["NAME", "INSTITUTION", "ROLE", "ENROLLED", "REVOKED", "PUBLIC KEY"])
                for p in list.principals {
                    table.rows.append([p.name, p.institution, p.role, Format.time(p.createdAt), p.revokedAt.map(Format.time) ?? "-", p.publicKey])
                }
                print(table.render())
            }
        }
    }
}
