/// Little-endian writer for envelope fields.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }

    /// A length-prefixed (u32) byte string.
    mutating func blob(_ v: some Collection<UInt8>) {
        u32(UInt32(v.count))
        bytes.append(contentsOf: v)
    }

    mutating func string(_ s: String) { blob(Array(s.utf8)) }
}

/// Bounds-checked little-endian reader: every read checks the bytes that remain and returns
/// a `WireError` naming the field; nothing here can trap on peer input.
struct ByteReader {
    let base: UnsafeRawBufferPointer
    private(set) var offset: Int = 0
    let limits: WireLimits

    init(_ base: UnsafeRawBufferPointer, limits: WireLimits) {
        self.base = base
        self.limits = limits
    }

    var remaining: Int { base.count - offset }

    private mutating func take(_ n: Int, _ field: String) throws(WireError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else { throw .truncated(field: field, needed: n, available: remaining) }
        let slice = UnsafeRawBufferPointer(rebasing: base[offset..<(offset + n)])
        offset += n
        return slice
    }

    mutating func u8(_ field: String) throws(WireError) -> UInt8 {
        try take(1, field)[0]
    }

    mutating func u16(_ field: String) throws(WireError) -> UInt16 {
        UInt16(littleEndian: try take(2, field).loadUnaligned(as: UInt16.self))
    }

    mutating func u32(_ field: String) throws(WireError) -> UInt32 {
        UInt32(littleEndian: try take(4, field).loadUnaligned(as: UInt32.self))
    }

    mutating func u64(_ field: String) throws(WireError) -> UInt64 {
        UInt64(littleEndian: try take(8, field).loadUnaligned(as: UInt64.self))
    }

    mutating func f64(_ field: String) throws(WireError) -> Double {
        Double(bitPattern: try u64(field))
    }

    /// A u32-length-prefixed byte string, its length checked against `limit` before reading.
    mutating func blob(_ field: String, limit: Int) throws(WireError) -> [UInt8] {
        let n = Int(try u32("\(field).length"))
        guard n <= limit else { throw .limitExceeded(field: field, value: n, limit: limit) }
        return Array(try take(n, field))
    }

    mutating func string(_ field: String) throws(WireError) -> String {
        let bytes = try blob(field, limit: limits.maxStringBytes)
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw .invalidValue(field: field, reason: "is not valid UTF-8")
        }
        return s
    }

    func expectEnd(_ message: String) throws(WireError) {
        if remaining != 0 { throw .trailingBytes(message: message, count: remaining) }
    }
}
