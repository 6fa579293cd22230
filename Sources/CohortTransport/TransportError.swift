internal import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// The one error type of CohortTransport. Each case says which operation failed and why.
public enum TransportError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The operation would block (EAGAIN): nothing to receive yet, or the send queue is full.
    case wouldBlock(operation: String)
    /// A ROUTER with mandatory routing was asked to send to a peer that is not connected.
    case hostUnreachable(operation: String)
    /// The context is shutting down; the socket must be closed.
    case terminated(operation: String)
    /// Any other libzmq failure, with its errno and libzmq's text.
    case zmq(operation: String, errno: Int32, message: String)
    /// A multipart message with more frames than the receiver allows (the rest were discarded).
    case tooManyFrames(limit: Int)
    /// A CURVE key (text or file) that cannot be used.
    case invalidKey(String)
    /// A key file that cannot be read or written.
    case keyFile(path: String, reason: String)
    /// The sockets were set up in a way that would be insecure or cannot work.
    case misconfigured(String)

    public var description: String {
        switch self {
        case let .wouldBlock(op): return "\(op): would block (no message ready, or the peer's queue is full)"
        case let .hostUnreachable(op): return "\(op): the peer is not connected (it left or never arrived)"
        case let .terminated(op): return "\(op): the ZeroMQ context is shutting down"
        case let .zmq(op, errno, message): return "\(op) failed: \(message) (errno \(errno))"
        case let .tooManyFrames(limit): return "received a multipart message of more than \(limit) frames; it was discarded"
        case let .invalidKey(reason): return "invalid CURVE key: \(reason)"
        case let .keyFile(path, reason): return "key file \(path): \(reason)"
        case let .misconfigured(reason): return reason
        }
    }
}

/// The funnel every libzmq call goes through: EINTR is retried, EAGAIN surfaces as
/// `.wouldBlock`, and every other failure is thrown with the operation's name and zmq_strerror.
@discardableResult
func zmqCall(_ operation: @autoclosure () -> String, _ body: () -> Int32) throws(TransportError) -> Int32 {
    while true {
        let rc = body()
        if rc >= 0 { return rc }
        let code = cohort_errno()
        if code == EINTR { continue }
        throw TransportError(errno: code, operation: operation())
    }
}

extension TransportError {
    init(errno code: Int32, operation: String) {
        switch code {
        case EAGAIN: self = .wouldBlock(operation: operation)
        case EHOSTUNREACH: self = .hostUnreachable(operation: operation)
        case ETERM: self = .terminated(operation: operation)
        default: self = .zmq(operation: operation, errno: code, message: String(cString: zmq_strerror(code)))
        }
    }
}
