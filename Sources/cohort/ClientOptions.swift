import ArgumentParser
import CohortClient
import CohortTransport
import CohortWire
import Foundation

/// Options every client command shares: where the coordinator is and who we are.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "Coordinator address HOST[:PORT] (default port 7600). Env: COHORT_COORDINATOR.")
    var coordinator: String?

    @Option(name: .long, help: "Your CURVE secret key file; created on first use. Env: COHORT_KEY. Default: ~/.config/cohort/key.")
    var key: String?

    @Option(name: .long, help: "The coordinator's public key: Z85 text or a .pub file. Env: COHORT_SERVER_KEY.")
    var serverKey: String?

    @Flag(name: .long, help: "Talk without CURVE (only to a coordinator started with --plaintext).")
    var plaintext = false

    @Option(name: .long, help: "Seconds to wait for the coordinator before giving up.")
    var timeout: Double = 5

    @Flag(name: .long, help: "Print JSON for scripts instead of a table (docs/cli.md).")
    var json = false

    func validate() throws {
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be more than 0 and at most 86400 seconds, got \(timeout)") }
    }

    var keyPath: String {
        key ?? ProcessInfo.processInfo.environment["COHORT_KEY"] ?? (NSHomeDirectory() + "/.config/cohort/key")
    }

    func address() throws -> CoordinatorAddress {
        let text = coordinator ?? ProcessInfo.processInfo.environment[CoordinatorAddress.environmentVariable]
            ?? Pinned.load(for: keyPath)?.address ?? "127.0.0.1"
        do { return try CoordinatorAddress(parsing: text) } catch { throw ValidationError(error.description) }
    }

    /// The coordinator's public key: --server-key, COHORT_SERVER_KEY, the key pinned beside our
    /// key file at enrolment, or (on the coordinator's host) coordinator.key.pub beside admin.key.
    func serverPublicKey() throws -> CurveKey {
        let env = ProcessInfo.processInfo.environment
        if let text = serverKey ?? env["COHORT_SERVER_KEY"] {
            if let k = try? CurveKey(z85: text) { return k }
            do { return try CurveKeyPair.loadPublicKey(from: text) } catch {
                throw ValidationError("--server-key \(text): neither a Z85 key nor a readable key file (\(error))")
            }
        }
        if let pinned = Pinned.load(for: keyPath), let k = try? CurveKey(z85: pinned.publicKey) { return k }
        let sibling = URL(fileURLWithPath: keyPath).deletingLastPathComponent().appendingPathComponent("coordinator.key.pub").path
        if let k = try? CurveKeyPair.loadPublicKey(from: sibling) { return k }
        throw CommandFailure("the coordinator's public key is unknown: enrol with `cohort enroll --join TOKEN`, or pass --server-key (Z85 text or the coordinator's DATA_DIR/coordinator.key.pub)")
    }

    func makeClient() throws -> Client {
        let credentials: Credentials
        if plaintext {
            credentials = .plaintext
        } else {
            guard FileManager.default.fileExists(atPath: keyPath) else {
                throw CommandFailure("no key at \(keyPath): enrol one with `cohort enroll --join TOKEN --key \(keyPath)` (or, on the coordinator's host, pass --key DATA_DIR/admin.key)")
            }
            credentials = .curve(keys: try CurveKeyPair.load(from: keyPath), serverKey: try serverPublicKey())
        }
        return try Client(address: try address(), credentials: credentials, timeout: timeout)
    }

    /// Runs `body` with a client, turning client errors into a message and a meaningful exit code.
    func withClient(_ body: (Client) throws -> Void) throws {
        let client = try makeClient()
        do { try body(client) } catch let error as ClientError {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            throw ExitCode(error.exitCode)
        }
    }

    func printJSON(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}

/// What `cohort enroll` pins beside a key file (`KEY.coordinator`): where the coordinator is and
/// its public key, so later commands need neither flag.
struct Pinned {
    var address: String
    var publicKey: String

    static func path(for keyPath: String) -> String { keyPath + ".coordinator" }

    static func load(for keyPath: String) -> Pinned? {
        guard let text = try? String(contentsOfFile: path(for: keyPath), encoding: .utf8) else { return nil }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].trimmingCharacters(in: .whitespaces)] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        guard let a = fields["address"], let k = fields["public-key"] else { return nil }
        return Pinned(address: a, publicKey: k)
    }

    func save(for keyPath: String) throws {
        try "address: \(address)\npublic-key: \(publicKey)\n".write(toFile: Self.path(for: keyPath), atomically: true, encoding: .utf8)
    }
}

/// A command that could not do its work for a reason other than how it was called (no key
/// file yet, an expired token, a file that cannot be written): printed as `Error: …` and exit
/// 1, without the usage text that `ValidationError` (exit 64, a wrong argument) adds.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
