internal import CZeroMQ
import Foundation

/// A 32-byte CURVE key (public or secret), written as 40 characters of Z85 (ZeroMQ RFC 32).
public struct CurveKey: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) throws(TransportError) {
        guard bytes.count == 32 else { throw .invalidKey("a CURVE key is 32 bytes, got \(bytes.count)") }
        self.bytes = bytes
    }

    /// Parses the 40-character Z85 text form.
    public init(z85 text: String) throws(TransportError) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.utf8.count == 40 else {
            throw .invalidKey("a Z85 key is 40 characters, got \(trimmed.utf8.count)")
        }
        guard trimmed.utf8.allSatisfy({ Self.z85Alphabet.contains($0) }) else {
            throw .invalidKey("`\(trimmed)` has characters outside the Z85 alphabet")
        }
        var out = [UInt8](repeating: 0, count: 32)
        let ok = out.withUnsafeMutableBufferPointer { zmq_z85_decode($0.baseAddress, trimmed) != nil }
        guard ok else { throw .invalidKey("`\(trimmed)` is not valid Z85") }
        self.bytes = out
    }

    /// The 40-character Z85 text form.
    public var z85: String {
        var out = [CChar](repeating: 0, count: 41)
        bytes.withUnsafeBufferPointer { src in _ = zmq_z85_encode(&out, src.baseAddress, 32) }
        return String(decoding: out.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String { z85 }

    private static let z85Alphabet = Set(
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
}

/// A CURVE key pair. Its secret key is written only to a file of mode 0600.
public struct CurveKeyPair: Sendable, Hashable {
    public let publicKey: CurveKey
    public let secretKey: CurveKey

    public init(publicKey: CurveKey, secretKey: CurveKey) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh key pair from libsodium's random source.
    public static func generate() throws(TransportError) -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        try zmqCall("zmq_curve_keypair") { zmq_curve_keypair(&pub, &sec) }
        func text(_ c: [CChar]) -> String { String(decoding: c.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CurveKeyPair(publicKey: try CurveKey(z85: text(pub)), secretKey: try CurveKey(z85: text(sec)))
    }

    /// Writes the secret key file at `path` (mode 0600, both keys inside) and the public key
    /// alone to `path.pub`. The secret file is created with mode 0600 before any byte is
    /// written, through a temporary name, so it is never briefly readable by others.
    public func save(to path: String) throws(TransportError) {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw .keyFile(path: path, reason: "cannot create its directory: \(error.localizedDescription)")
        }
        let secretText = """
            # Cohort CURVE secret key. Keep it private: anyone holding this file acts as its owner.
            public-key: \(publicKey.z85)
            secret-key: \(secretKey.z85)

            """
        try Self.writeAtomically(Array(secretText.utf8), to: path, mode: 0o600)
        try Self.writeAtomically(Array("\(publicKey.z85)\n".utf8), to: path + ".pub", mode: 0o644)
    }

    /// Reads a secret key file written by `save`. Refuses a file that others can read.
    public static func load(from path: String) throws(TransportError) -> CurveKeyPair {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw .keyFile(path: path, reason: "cannot be read (\(String(cString: strerror(errno)))); create one with `cohort keygen --out \(path)`")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw .keyFile(path: path, reason: "is not a file (a directory?); give the key file's path")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw .keyFile(path: path, reason: "is readable by other users (mode \(String(st.st_mode & 0o777, radix: 8))); run `chmod 600 \(path)`")
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .keyFile(path: path, reason: "cannot be read: \(error.localizedDescription)")
        }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].trimmingCharacters(in: .whitespaces)] =
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        guard let pub = fields["public-key"], let sec = fields["secret-key"] else {
            throw .keyFile(path: path, reason: "lacks a `public-key:` or `secret-key:` line; it is not a Cohort key file")
        }
        let pair: CurveKeyPair
        do {
            pair = CurveKeyPair(publicKey: try CurveKey(z85: pub), secretKey: try CurveKey(z85: sec))
        } catch {
            throw .keyFile(path: path, reason: error.description)
        }
        // The public key must belong to the secret key, or peers would pin the wrong key.
        var derived = [CChar](repeating: 0, count: 41)
        var secretZ85 = Array(pair.secretKey.z85.utf8CString)
        try zmqCall("zmq_curve_public") { zmq_curve_public(&derived, &secretZ85) }
        guard String(decoding: derived.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self) == pair.publicKey.z85 else {
            throw .keyFile(path: path, reason: "its public key does not match its secret key")
        }
        return pair
    }

    /// Reads a public key file (`PATH.pub`: one Z85 line).
    public static func loadPublicKey(from path: String) throws(TransportError) -> CurveKey {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .keyFile(path: path, reason: "cannot be read: \(error.localizedDescription)")
        }
        do { return try CurveKey(z85: text) } catch { throw .keyFile(path: path, reason: error.description) }
    }

    private static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t) throws(TransportError) {
        let temp = path + ".tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .keyFile(path: path, reason: "cannot be created: \(String(cString: strerror(errno)))") }
        fchmod(fd, mode) // the umask must not widen or narrow what we asked for
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temp, path) == 0 else {
            unlink(temp)
            throw .keyFile(path: path, reason: "cannot be written: \(String(cString: strerror(errno)))")
        }
    }
}

extension Socket {
    /// Makes this socket a CURVE server. Every connecting client is put to `zap` (the handler
    /// must run on this socket's context); without one libzmq would admit any client that knows
    /// the server's public key, so there is no way to call this without it.
    public func makeCurveServer(keys: CurveKeyPair, zap: ZAPHandler, domain: String = "cohort") throws(TransportError) {
        guard zap.context === context else {
            throw .misconfigured("the ZAP handler runs on another ZeroMQ context; it would never see this socket's clients")
        }
        try setOption(ZMQ_CURVE_SERVER, Int32(1), "ZMQ_CURVE_SERVER")
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: keys.secretKey.bytes, "ZMQ_CURVE_SECRETKEY")
        try setOption(ZMQ_ZAP_DOMAIN, bytes: Array(domain.utf8), "ZMQ_ZAP_DOMAIN")
        zapHandler = zap
    }

    /// Makes this socket a CURVE client of the server whose public key is `serverKey`.
    public func makeCurveClient(keys: CurveKeyPair, serverKey: CurveKey) throws(TransportError) {
        try setOption(ZMQ_CURVE_SERVERKEY, bytes: serverKey.bytes, "ZMQ_CURVE_SERVERKEY")
        try setOption(ZMQ_CURVE_PUBLICKEY, bytes: keys.publicKey.bytes, "ZMQ_CURVE_PUBLICKEY")
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: keys.secretKey.bytes, "ZMQ_CURVE_SECRETKEY")
    }
}
