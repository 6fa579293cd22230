internal import CZeroMQ
import Foundation

/// A libzmq context: its I/O threads and the sockets made from it. libzmq contexts are
/// thread-safe, so this one is `Sendable`; the sockets made from it are not.
public final class Context: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// - Parameter ioThreads: libzmq I/O threads; one moves about 1 GB/s per core of payload.
    /// - Parameter maxSockets: sockets this context may open (libzmq's default is 1,023).
    public init(ioThreads: Int = 1, maxSockets: Int? = nil) throws(TransportError) {
        guard let h = zmq_ctx_new() else {
            throw TransportError.zmq(operation: "zmq_ctx_new", errno: cohort_errno(), message: "could not create a ZeroMQ context")
        }
        handle = h
        try zmqCall("zmq_ctx_set(ZMQ_IO_THREADS)") { zmq_ctx_set(h, ZMQ_IO_THREADS, Int32(ioThreads)) }
        if let maxSockets {
            try zmqCall("zmq_ctx_set(ZMQ_MAX_SOCKETS)") { zmq_ctx_set(h, ZMQ_MAX_SOCKETS, Int32(maxSockets)) }
        }
    }

    /// I/O threads for a hub's data connections (the coordinator's data endpoints, a site
    /// delegate's site endpoint): as many as cores, up to 4. A busy connection keeps one busy.
    public static var defaultDataIOThreads: Int { min(max(ProcessInfo.processInfo.activeProcessorCount, 1), 4) }

    deinit {
        // Every socket holds its context, so by now all sockets are closed and this cannot hang
        // for longer than their linger.
        while zmq_ctx_term(handle) != 0 && cohort_errno() == EINTR {}
    }
}

/// Facts about the linked libzmq.
public enum Transport {
    public static var libzmqVersion: String {
        var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
        zmq_version(&a, &b, &c)
        return "\(a).\(b).\(c)"
    }

    /// Whether libzmq was built with CURVE (libsodium). Debian's is.
    public static var hasCurve: Bool { zmq_has("curve") != 0 }
}
