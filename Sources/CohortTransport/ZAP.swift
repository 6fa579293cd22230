internal import CZeroMQ
import Foundation
import Synchronization

/// What a ZAP handler is asked about one connecting client (ZeroMQ RFC 27).
public struct ZAPRequest: Sendable, Hashable {
    public var domain: String
    /// The client's IP address as libzmq saw it.
    public var address: String
    /// "CURVE", "NULL" or "PLAIN".
    public var mechanism: String
    /// The client's long-term public key, for CURVE.
    public var publicKey: CurveKey?
}

/// The answer for one client.
public enum ZAPDecision: Sendable, Hashable {
    /// Admit it; every message it sends carries `userId` ("User-Id") and `metadata` as
    /// properties readable with `InboundFrame.property(_:)`.
    case accept(userId: String, metadata: [String: String] = [:])
    /// Refuse it; it never delivers a message.
    case reject(reason: String)
}

/// Decides which clients a CURVE server admits. Runs on the ZAP handler's thread.
public protocol Authenticator: Sendable {
    func authenticate(_ request: ZAPRequest) -> ZAPDecision
}

/// The ZAP handler of one context: a thread that answers libzmq's authentication requests by
/// asking an `Authenticator`. It binds before `init` returns, so no CURVE handshake can slip past.
public final class ZAPHandler: Sendable {
    public let context: Context
    private let stopFlag = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private let accepted = Atomic<Int>(0)
    private let rejected = Atomic<Int>(0)

    public var acceptedCount: Int { accepted.load(ordering: .relaxed) }
    public var rejectedCount: Int { rejected.load(ordering: .relaxed) }

    public init(context: Context, authenticator: some Authenticator) throws(TransportError) {
        self.context = context
        let ready = DispatchSemaphore(value: 0)
        let bindError = Mutex<TransportError?>(nil)
        let thread = Thread { [self] in
            let socket: Socket
            do throws(TransportError) {
                socket = try Socket(context, .rep)
                try socket.setLinger(milliseconds: 0)
                try socket.bind("inproc://zeromq.zap.01")
            } catch {
                bindError.withLock { $0 = error }
                ready.signal()
                finished.signal()
                return
            }
            ready.signal()
            serve(socket, authenticator)
            finished.signal()
        }
        thread.name = "cohort-zap"
        thread.start()
        ready.wait()
        if let error = bindError.withLock({ $0 }) {
            finished.wait()
            throw error
        }
    }

    /// Stops the handler thread and waits for it. Call it after closing the server sockets.
    public func stop() {
        if stopFlag.exchange(true, ordering: .acquiringAndReleasing) { return }
        finished.wait()
    }

    deinit {
        stop()
    }

    private func serve(_ socket: Socket, _ authenticator: some Authenticator) {
        let poller = Poller()
        poller.add(socket)
        while !stopFlag.load(ordering: .acquiring) {
            guard let ready = try? poller.poll(timeoutMilliseconds: 100), !ready.isEmpty else { continue }
            guard let frames = try? socket.receive(maxFrames: 8) else { continue }
            let reply = answer(frames.map(\.bytes), authenticator)
            try? socket.send(reply.map { OutboundFrame.bytes($0) })
        }
    }

    /// RFC 27: request = version, request id, domain, address, identity, mechanism, credentials…;
    /// reply = version, request id, status code, status text, user id, metadata.
    private func answer(_ f: [[UInt8]], _ authenticator: some Authenticator) -> [[UInt8]] {
        func text(_ i: Int) -> String { i < f.count ? String(decoding: f[i], as: UTF8.self) : "" }
        let requestId = f.count > 1 ? f[1] : []
        guard f.count >= 6, text(0) == "1.0" else {
            rejected.add(1, ordering: .relaxed)
            return [Array("1.0".utf8), requestId, Array("500".utf8), Array("malformed ZAP request".utf8), [], []]
        }
        let mechanism = text(5)
        var key: CurveKey?
        if mechanism == "CURVE", f.count >= 7 { key = try? CurveKey(bytes: f[6]) }
        let request = ZAPRequest(domain: text(2), address: text(3), mechanism: mechanism, publicKey: key)
        switch authenticator.authenticate(request) {
        case let .accept(userId, metadata):
            accepted.add(1, ordering: .relaxed)
            return [Array("1.0".utf8), requestId, Array("200".utf8), Array("OK".utf8), Array(userId.utf8),
                    Self.encodeMetadata(metadata)]
        case let .reject(reason):
            rejected.add(1, ordering: .relaxed)
            return [Array("1.0".utf8), requestId, Array("400".utf8), Array(reason.utf8), [], []]
        }
    }

    /// ZMTP 3.0 metadata: name length (u8), name, value length (u32 big-endian), value.
    static func encodeMetadata(_ metadata: [String: String]) -> [UInt8] {
        var out: [UInt8] = []
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) {
            let n = Array(name.utf8.prefix(255))
            let v = Array(value.utf8)
            out.append(UInt8(n.count))
            out.append(contentsOf: n)
            withUnsafeBytes(of: UInt32(v.count).bigEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: v)
        }
        return out
    }
}
