import ArgumentParser
import CohortTransport

/// `cohort keygen --out PATH`: a CURVE key pair, the secret at PATH (0600), the public at PATH.pub.
struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a new CURVE key pair: the secret key to PATH (mode 0600), the public key to PATH.pub.")

    @Option(name: .long, help: "Where to write the secret key file.")
    var out: String

    @Flag(name: .long, help: "Replace an existing key file (its holder loses its identity).")
    var force = false

    func run() throws {
        if !force, access(out, F_OK) == 0 {
            throw ValidationError("\(out) already exists; pass --force to replace it (the old key stops working)")
        }
        let pair = try CurveKeyPair.generate()
        try pair.save(to: out)
        print("secret key: \(out) (mode 0600)")
        print("public key: \(out).pub  \(pair.publicKey.z85)")
    }
}

#if canImport(Glibc)
import Glibc
#endif
