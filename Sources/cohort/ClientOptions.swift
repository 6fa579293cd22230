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

    func address() throws -> CoordinatorAddress {
        let text = coordinator ?? ProcessInfo.processInfo.environment[CoordinatorAddress.environmentVariable] ?? "127.0.0.1"
        do { return try CoordinatorAddress(parsing: text) } catch { throw ValidationError(error.description) }
    }

    func makeClient() throws -> Client {
        let env = ProcessInfo.processInfo.environment
        let credentials: Credentials
        if plaintext {
            credentials = .plaintext
        } else {
            guard let serverText = serverKey ?? env["COHORT_SERVER_KEY"] else {
                throw ValidationError("the coordinator's public key is needed: pass --server-key (Z85 text, or the coordinator's DATA_DIR/coordinator.key.pub) or set COHORT_SERVER_KEY")
            }
            let server: CurveKey
            if let k = try? CurveKey(z85: serverText) { server = k } else {
                do { server = try CurveKeyPair.loadPublicKey(from: serverText) } catch {
                    throw ValidationError("--server-key \(serverText): neither a Z85 key nor a readable key file (\(error))")
                }
            }
            let path = key ?? env["COHORT_KEY"] ?? (NSHomeDirectory() + "/.config/cohort/key")
            let keys: CurveKeyPair
            if FileManager.default.fileExists(atPath: path) {
                keys = try CurveKeyPair.load(from: path)
            } else {
                keys = try CurveKeyPair.generate()
                try keys.save(to: path)
                FileHandle.standardError.write(Data("created your key pair at \(path)\n".utf8))
            }
            credentials = .curve(keys: keys, serverKey: server)
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
