internal import CZeroMQ

/// One frame to send.
public enum OutboundFrame {
    /// Copied into libzmq's message: right for small frames (envelopes, JSON bodies).
    case bytes([UInt8])
    /// Sent without copying: libzmq reads `buffer` in place until it is done with it, then
    /// releases `owner` from its free callback (possibly on an I/O thread). The caller must not
    /// change the bytes until `owner` is released.
    case zeroCopy(UnsafeRawBufferPointer, owner: any AnyObject & Sendable)
}

/// A received frame. It owns libzmq's message (so receiving copies nothing) and frees it when
/// dropped; release each shard as soon as it has been consumed. Immutable once received, so it
/// may be handed to another thread.
public final class InboundFrame: @unchecked Sendable {
    let message: UnsafeMutablePointer<zmq_msg_t>
    /// Whether more frames of the same multipart message follow.
    public let more: Bool

    init(message: UnsafeMutablePointer<zmq_msg_t>, more: Bool) {
        self.message = message
        self.more = more
    }

    deinit {
        zmq_msg_close(message)
        message.deallocate()
    }

    public var count: Int { zmq_msg_size(message) }

    /// The frame's bytes, valid only inside `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: zmq_msg_data(message), count: zmq_msg_size(message)))
    }

    /// The frame's bytes in place. They stay valid as long as this frame is alive: keep the
    /// frame (`withExtendedLifetime`) while using them.
    public var unsafeBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: zmq_msg_data(message), count: zmq_msg_size(message))
    }

    /// A copy of the bytes (for small frames: identities, envelopes).
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// A connection property of the frame's sender: "User-Id" and the metadata the ZAP handler
    /// attached, "Peer-Address", "Socket-Type", "Routing-Id".
    public func property(_ name: String) -> String? {
        guard let value = zmq_msg_gets(message, name) else { return nil }
        return String(cString: value)
    }
}

/// Releases the owner passed with a zero-copy frame. Called by libzmq when it is done.
private func releaseOwner(_ data: UnsafeMutableRawPointer?, _ hint: UnsafeMutableRawPointer?) {
    guard let hint else { return }
    Unmanaged<AnyObject>.fromOpaque(hint).release()
}

extension Socket {
    /// Sends one multipart message. With `dontWait` a full queue throws `.wouldBlock` instead of
    /// waiting. Zero-copy frames not handed to libzmq (on error) are released at once.
    public func send(_ frames: [OutboundFrame], dontWait: Bool = false) throws(TransportError) {
        precondition(!frames.isEmpty, "a message has at least one frame")
        for (i, frame) in frames.enumerated() {
            var flags: Int32 = i + 1 < frames.count ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            try sendFrame(frame, flags: flags)
        }
    }

    /// Sends one single-frame message of bytes.
    public func send(_ bytes: [UInt8], dontWait: Bool = false) throws(TransportError) {
        try send([.bytes(bytes)], dontWait: dontWait)
    }

    private func sendFrame(_ frame: OutboundFrame, flags: Int32) throws(TransportError) {
        var msg = zmq_msg_t()
        switch frame {
        case let .bytes(bytes):
            try zmqCall("zmq_msg_init_size") { zmq_msg_init_size(&msg, bytes.count) }
            if !bytes.isEmpty {
                bytes.withUnsafeBytes { src in
                    zmq_msg_data(&msg).copyMemory(from: src.baseAddress!, byteCount: src.count)
                }
            }
        case let .zeroCopy(buffer, owner):
            guard let base = buffer.baseAddress, buffer.count > 0 else {
                try sendFrame(.bytes([]), flags: flags)
                return
            }
            let hint = Unmanaged.passRetained(owner as AnyObject).toOpaque()
            let rc = zmq_msg_init_data(&msg, UnsafeMutableRawPointer(mutating: base), buffer.count, releaseOwner, hint)
            if rc != 0 {
                Unmanaged<AnyObject>.fromOpaque(hint).release()
                throw TransportError(errno: cohort_errno(), operation: "zmq_msg_init_data")
            }
        }
        do {
            try zmqCall("zmq_msg_send") { zmq_msg_send(&msg, handle, flags) }
        } catch {
            zmq_msg_close(&msg) // releases the data (and a zero-copy owner) that was not sent
            throw error
        }
    }

    /// Receives one frame. With `dontWait`, throws `.wouldBlock` when none is ready; a receive
    /// timeout (`setTimeouts`) also surfaces as `.wouldBlock`.
    public func receiveFrame(dontWait: Bool = false) throws(TransportError) -> InboundFrame {
        let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
        zmq_msg_init(msg)
        do {
            try zmqCall("zmq_msg_recv") { zmq_msg_recv(msg, handle, dontWait ? ZMQ_DONTWAIT : 0) }
        } catch {
            zmq_msg_close(msg)
            msg.deallocate()
            throw error
        }
        return InboundFrame(message: msg, more: zmq_msg_more(msg) != 0)
    }

    /// Receives every frame of one multipart message. A message of more than `maxFrames`
    /// frames is drained and rejected, so a peer cannot make the receiver hold unbounded frames.
    public func receive(dontWait: Bool = false, maxFrames: Int = 16) throws(TransportError) -> [InboundFrame] {
        var frames = [try receiveFrame(dontWait: dontWait)]
        while frames[frames.count - 1].more {
            let next = try receiveFrame()
            if frames.count >= maxFrames {
                var last = next
                while last.more { last = try receiveFrame() }
                throw .tooManyFrames(limit: maxFrames)
            }
            frames.append(next)
        }
        return frames
    }
}
