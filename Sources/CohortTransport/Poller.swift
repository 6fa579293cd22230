internal import CZeroMQ

/// Waits on several sockets of the same owner thread at once.
public final class Poller {
    private var sockets: [Socket] = []
    private var items: [zmq_pollitem_t] = []

    public init() {}

    /// Adds a socket to wait on for incoming messages; returns its index in `poll`'s result.
    @discardableResult
    public func add(_ socket: Socket) -> Int {
        sockets.append(socket)
        items.append(zmq_pollitem_t(socket: socket.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0))
        return sockets.count - 1
    }

    /// Waits until at least one socket has a message or `timeoutMilliseconds` pass (-1: forever,
    /// 0: just look). Returns the indices of the readable sockets; empty on timeout. An EINTR
    /// (a signal) ends the wait early with no sockets ready, so a signal handler's flag is seen.
    public func poll(timeoutMilliseconds: Int) throws(TransportError) -> [Int] {
        guard !items.isEmpty else { return [] }
        let rc = items.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, Int32($0.count), timeoutMilliseconds) }
        if rc < 0 {
            let code = cohort_errno()
            if code == EINTR { return [] }
            throw TransportError(errno: code, operation: "zmq_poll")
        }
        var ready: [Int] = []
        for i in items.indices where items[i].revents & Int16(ZMQ_POLLIN) != 0 { ready.append(i) }
        return ready
    }
}
