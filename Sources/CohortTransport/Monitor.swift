internal import CZeroMQ
import Synchronization

/// What happened to a connection of a monitored socket.
public enum ConnectionEvent: Sendable, Hashable {
    /// `fd` identifies the connection until it is closed.
    case accepted(peer: String, fd: Int)
    case handshakeSucceeded(peer: String)
    /// The peer spoke something that is not ZMTP, or broke its rules: garbage, a port scanner,
    /// an HTTP client. libzmq dropped the connection before any message reached us.
    case handshakeFailedProtocol(peer: String, code: Int)
    /// CURVE or ZAP refused the peer.
    case handshakeFailedAuth(peer: String, code: Int)
    case handshakeFailed(peer: String, code: Int)
    case disconnected(peer: String, fd: Int)
    case other(event: Int, peer: String)
}

/// Watches a socket's connections (zmq_socket_monitor) through a PAIR socket that belongs to the
/// same owner thread as the watched socket; poll it beside that socket.
public final class SocketMonitor {
    public let socket: Socket
    private static let counter = Atomic<Int>(0)

    /// Starts monitoring `watched`. Only handshake, accept and disconnect events are reported.
    public init(_ watched: Socket) throws(TransportError) {
        let endpoint = "inproc://cohort-monitor-\(SocketMonitor.counter.add(1, ordering: .relaxed).newValue)"
        let events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
            | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
        try zmqCall("zmq_socket_monitor") { zmq_socket_monitor(watched.handle, endpoint, events) }
        socket = try Socket(watched.context, .pair)
        try socket.setLinger(milliseconds: 0)
        try socket.connect(endpoint)
    }

    /// The next event, or nil when none is waiting.
    public func next() -> ConnectionEvent? {
        guard let frames = try? socket.receive(dontWait: true, maxFrames: 2), frames.count == 2, frames[0].count >= 6 else { return nil }
        let (event, value) = frames[0].withUnsafeBytes { b in
            (Int(b.loadUnaligned(as: UInt16.self)), Int(b.loadUnaligned(fromByteOffset: 2, as: UInt32.self)))
        }
        let peer = String(decoding: frames[1].bytes, as: UTF8.self)
        switch Int32(event) {
        case ZMQ_EVENT_ACCEPTED: return .accepted(peer: peer, fd: value)
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: return .handshakeSucceeded(peer: peer)
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: return .handshakeFailedProtocol(peer: peer, code: value)
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: return .handshakeFailedAuth(peer: peer, code: value)
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: return .handshakeFailed(peer: peer, code: value)
        case ZMQ_EVENT_DISCONNECTED: return .disconnected(peer: peer, fd: value)
        default: return .other(event: event, peer: peer)
        }
    }

    /// Reads the waiting events up to the first handshake in which the peer refused this
    /// socket's key for good (ZAP status 400, RFC 27's authentication failure: a Cohort
    /// coordinator's "revoked"), and returns that status; nil when none came. A 300 or 500
    /// (the peer's temporary or internal failure) may pass on a retry, so it is not one.
    public func keyRefusal() -> Int? {
        while let event = next() {
            if case let .handshakeFailedAuth(_, code) = event, code == 400 { return code }
        }
        return nil
    }
}

/// Counts connections dropped before their handshake completed. libzmq reports garbage on a
/// port only as accepted → disconnected (no handshake event), and reports a handshake success
/// without naming its connection, so successes are matched to the oldest connection still in
/// its handshake; totals are exact once connections close.
public struct ConnectionTally: Sendable, Hashable {
    public private(set) var dropped = 0
    public private(set) var established = 0
    private var inHandshake: [Int] = []
    private var open: Set<Int> = []
    private var failuresNotYetClosed = 0

    public init() {}

    public mutating func record(_ event: ConnectionEvent) {
        switch event {
        case let .accepted(_, fd):
            inHandshake.append(fd)
        case .handshakeSucceeded:
            if !inHandshake.isEmpty { open.insert(inHandshake.removeFirst()) }
            established += 1
        case .handshakeFailedProtocol, .handshakeFailedAuth, .handshakeFailed:
            dropped += 1
            failuresNotYetClosed += 1
        case let .disconnected(_, fd):
            if open.remove(fd) != nil { return }
            if let i = inHandshake.firstIndex(of: fd) {
                inHandshake.remove(at: i)
                if failuresNotYetClosed > 0 { failuresNotYetClosed -= 1 } else { dropped += 1 }
            }
        case .other:
            break
        }
    }
}
