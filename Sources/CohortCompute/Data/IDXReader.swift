/// IDX files (the MNIST family): magic `0 0 TYPE DIMS`, DIMS big-endian UInt32 sizes, then the
/// elements big-endian in C order. gzip or plain.
enum IDXReader {
    static func parse(_ bytes: [UInt8], name: String) throws -> RawArray {
        guard bytes.count >= 4 else {
            throw DataError(name, "is \(bytes.count) bytes long, too short for an IDX header; the file is truncated or not IDX")
        }
        guard bytes[0] == 0, bytes[1] == 0 else {
            throw DataError(name, "does not start with the IDX magic (two zero bytes); it is not an IDX file (or a gzip file that was renamed)")
        }
        let element: RawArray.Element
        switch bytes[2] {
        case 0x08: element = .uint8
        case 0x09: element = .int8
        case 0x0B: element = .int16BE
        case 0x0C: element = .int32BE
        case 0x0D: element = .float32BE
        case 0x0E: element = .float64BE
        default:
            throw DataError(name, "has IDX element type 0x\(String(bytes[2], radix: 16)), which is not one of 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E; the file is corrupt or not IDX")
        }
        let dims = Int(bytes[3])
        guard dims >= 1 else { throw DataError(name, "declares 0 dimensions; the file is corrupt or not IDX") }
        let headerSize = 4 + 4 * dims
        guard bytes.count >= headerSize else {
            throw DataError(name, "ends inside its IDX header (\(bytes.count) of \(headerSize) bytes); the file is truncated")
        }
        var shape: [Int] = []
        var count = 1
        for d in 0..<dims {
            let i = 4 + 4 * d
            let size = Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            shape.append(size)
            count = count.multipliedReportingOverflow(by: size).overflow ? Int.max : count * size
        }
        let (body, overflow) = count.multipliedReportingOverflow(by: element.size)
        let expected = overflow || body > Int.max - headerSize ? Int.max : headerSize + body
        if bytes.count < expected {
            throw DataError(name, "declares shape \(shape) (\(expected) bytes) but holds only \(bytes.count) bytes; the file is truncated, fetch or copy it again")
        }
        if bytes.count > expected {
            throw DataError(name, "declares shape \(shape) (\(expected) bytes) but holds \(bytes.count) bytes; the file has trailing data or a wrong header")
        }
        return RawArray(element: element, shape: shape, bytes: bytes, offset: headerSize)
    }
}
