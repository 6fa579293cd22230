internal import CZeroMQ

/// A ZeroMQ socket. libzmq sockets are not thread-safe, so `Socket` is deliberately not
/// `Sendable`: the compiler keeps it on the thread (or isolation domain) that owns it. Create it
/// where it will be used, or hand it over once with `sending`; give other threads messages, not
/// sockets. The socket is closed when its owner drops it.
public final class Socket {
    public enum Kind: Sendable {
        case router, dealer
        /// The reply socket of the ZAP handler (RFC 27). Nothing else uses it.
        case rep
        /// The receiving end of a socket monitor. Nothing else uses it.
        case pair

        var raw: Int32 {
            switch self {
            case .router: return ZMQ_ROUTER
            case .dealer: return ZMQ_DEALER
            case .rep: return ZMQ_REP
            case .pair: return ZMQ_PAIR
            }
        }
    }

    let handle: UnsafeMutableRawPointer
    public let context: Context
    public let kind: Kind
    /// Set when this socket was made a CURVE server; keeps its ZAP handler alive as long as it.
    var zapHandler: ZAPHandler?

    public init(_ context: Context, _ kind: Kind) throws(TransportError) {
        guard let h = zmq_socket(context.handle, kind.raw) else {
            throw TransportError(errno: cohort_errno(), operation: "zmq_socket(\(kind))")
        }
        self.handle = h
        self.context = context
        self.kind = kind
        // A closing socket must never hold up shutdown for long; callers raise it if needed.
        try setOption(ZMQ_LINGER, Int32(1000), "ZMQ_LINGER")
    }

    deinit {
        zmq_close(handle)
    }

    public func bind(_ endpoint: String) throws(TransportError) {
        try zmqCall("zmq_bind(\(endpoint))") { zmq_bind(handle, endpoint) }
    }

    public func connect(_ endpoint: String) throws(TransportError) {
        try zmqCall("zmq_connect(\(endpoint))") { zmq_connect(handle, endpoint) }
    }

    public func unbind(_ endpoint: String) throws(TransportError) {
        try zmqCall("zmq_unbind(\(endpoint))") { zmq_unbind(handle, endpoint) }
    }

    public func disconnect(_ endpoint: String) throws(TransportError) {
        try zmqCall("zmq_disconnect(\(endpoint))") { zmq_disconnect(handle, endpoint) }
    }

    /// The endpoint last bound, with the real port when bound to port 0 (`tcp://127.0.0.1:0`).
    public var lastEndpoint: String {
        get throws(TransportError) { try stringOption(ZMQ_LAST_ENDPOINT, "ZMQ_LAST_ENDPOINT") }
    }
}

// MARK: - Options

extension Socket {
    func setOption(_ option: Int32, _ value: Int32, _ name: String) throws(TransportError) {
        var v = value
        try zmqCall("zmq_setsockopt(\(name))") { zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) }
    }

    func setOption(_ option: Int32, _ value: Int64, _ name: String) throws(TransportError) {
        var v = value
        try zmqCall("zmq_setsockopt(\(name))") { zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) }
    }

    func setOption(_ option: Int32, bytes: [UInt8], _ name: String) throws(TransportError) {
        try zmqCall("zmq_setsockopt(\(name))") {
            bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        }
    }

    func intOption(_ option: Int32, _ name: String) throws(TransportError) -> Int32 {
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        try zmqCall("zmq_getsockopt(\(name))") { zmq_getsockopt(handle, option, &v, &size) }
        return v
    }

    func stringOption(_ option: Int32, _ name: String) throws(TransportError) -> String {
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        try zmqCall("zmq_getsockopt(\(name))") { zmq_getsockopt(handle, option, &buffer, &size) }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// How long a closed socket keeps trying to deliver queued messages (default here: 1 s).
    public func setLinger(milliseconds: Int) throws(TransportError) {
        try setOption(ZMQ_LINGER, Int32(milliseconds), "ZMQ_LINGER")
    }

    /// Messages queued per peer before sends block or drop; 0 means unlimited, which the data
    /// plane uses so that every shard of a step is in flight at once.
    public func setHighWaterMarks(send: Int, receive: Int) throws(TransportError) {
        try setOption(ZMQ_SNDHWM, Int32(send), "ZMQ_SNDHWM")
        try setOption(ZMQ_RCVHWM, Int32(receive), "ZMQ_RCVHWM")
    }

    /// The context's I/O threads (numbered from 0) that this socket's new connections may be
    /// given to, set before it binds or connects; libzmq gives each connection to the one with
    /// the fewest. By default any of them.
    public func setIOThreadAffinity(_ threads: Range<Int>) throws(TransportError) {
        guard !threads.isEmpty, threads.lowerBound >= 0, threads.upperBound <= 64 else {
            throw .misconfigured("I/O threads are numbered 0–63; \(threads) is not a set of them")
        }
        let mask = threads.reduce(UInt64(0)) { $0 | (UInt64(1) << UInt64($1)) }
        try setOption(ZMQ_AFFINITY, Int64(bitPattern: mask), "ZMQ_AFFINITY")
    }

    /// Frames larger than this make libzmq drop the connection before allocating them.
    public func setMaxMessageSize(_ bytes: Int) throws(TransportError) {
        try setOption(ZMQ_MAXMSGSIZE, Int64(bytes), "ZMQ_MAXMSGSIZE")
    }

    /// Reconnection back-off for connecting sockets: starts at `initial`, doubles up to `maximum`.
    public func setReconnectInterval(initialMilliseconds: Int, maximumMilliseconds: Int) throws(TransportError) {
        try setOption(ZMQ_RECONNECT_IVL, Int32(initialMilliseconds), "ZMQ_RECONNECT_IVL")
        try setOption(ZMQ_RECONNECT_IVL_MAX, Int32(maximumMilliseconds), "ZMQ_RECONNECT_IVL_MAX")
    }

    /// The identity this socket presents to a ROUTER peer (set before connecting).
    public func setRoutingId(_ id: [UInt8]) throws(TransportError) {
        precondition(!id.isEmpty && id.count <= 255 && id[0] != 0, "a routing id is 1–255 bytes and must not start with 0")
        try setOption(ZMQ_ROUTING_ID, bytes: id, "ZMQ_ROUTING_ID")
    }

    /// A ROUTER normally drops messages for unknown peers silently; with this on, sending to
    /// one throws `.hostUnreachable` instead.
    public func setRouterMandatory(_ on: Bool) throws(TransportError) {
        try setOption(ZMQ_ROUTER_MANDATORY, Int32(on ? 1 : 0), "ZMQ_ROUTER_MANDATORY")
    }

    /// A ROUTER normally refuses a connection whose routing id is already connected; with this
    /// on, the newest connection takes the id over and the older one is dropped.
    public func setRouterHandover(_ on: Bool) throws(TransportError) {
        try setOption(ZMQ_ROUTER_HANDOVER, Int32(on ? 1 : 0), "ZMQ_ROUTER_HANDOVER")
    }

    /// Queue messages only to completed connections (so requests to a dead peer block instead
    /// of piling up).
    public func setImmediate(_ on: Bool) throws(TransportError) {
        try setOption(ZMQ_IMMEDIATE, Int32(on ? 1 : 0), "ZMQ_IMMEDIATE")
    }

    /// ZMTP heartbeats: a peer silent for `timeout` is disconnected.
    public func setHeartbeat(intervalMilliseconds: Int, timeoutMilliseconds: Int) throws(TransportError) {
        try setOption(ZMQ_HEARTBEAT_IVL, Int32(intervalMilliseconds), "ZMQ_HEARTBEAT_IVL")
        try setOption(ZMQ_HEARTBEAT_TIMEOUT, Int32(timeoutMilliseconds), "ZMQ_HEARTBEAT_TIMEOUT")
    }

    /// Blocking receives and sends give up after this long (-1: wait forever).
    public func setTimeouts(receiveMilliseconds: Int, sendMilliseconds: Int) throws(TransportError) {
        try setOption(ZMQ_RCVTIMEO, Int32(receiveMilliseconds), "ZMQ_RCVTIMEO")
        try setOption(ZMQ_SNDTIMEO, Int32(sendMilliseconds), "ZMQ_SNDTIMEO")
    }
}
