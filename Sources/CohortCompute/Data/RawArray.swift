/// A numeric array as a file stores it (IDX, NPY): element type, shape and the raw bytes, not
/// yet converted. Conversion happens once, straight into the Float or Int32 the models use.
struct RawArray {
    enum Element: Equatable {
        case uint8, int8, int16BE, int32BE, int32LE, int64LE, float32BE, float32LE, float64BE, float64LE

        var size: Int {
            switch self {
            case .uint8, .int8: return 1
            case .int16BE: return 2
            case .int32BE, .int32LE, .float32BE, .float32LE: return 4
            case .int64LE, .float64BE, .float64LE: return 8
            }
        }

        var isInteger: Bool {
            switch self {
            case .uint8, .int8, .int16BE, .int32BE, .int32LE, .int64LE: return true
            case .float32BE, .float32LE, .float64BE, .float64LE: return false
            }
        }
    }

    var element: Element
    var shape: [Int]
    /// The whole file; the elements are `bytes[offset ..< offset + count × element.size]`.
    var bytes: [UInt8]
    var offset: Int

    var count: Int { shape.reduce(1, *) }

    /// Every element as Float, times `scale`.
    func floats(scale: Float) -> [Float] {
        let n = count
        return [Float](unsafeUninitializedCapacity: n) { out, initialized in
            bytes.withUnsafeBytes { raw in
                let p = raw.baseAddress! + offset
                switch element {
                case .uint8:
                    // The hot case (image bytes): a lookup table keeps it one load and one store.
                    var table = [Float](repeating: 0, count: 256)
                    for v in 0..<256 { table[v] = Float(v) * scale }
                    table.withUnsafeBufferPointer { t in
                        let src = p.assumingMemoryBound(to: UInt8.self)
                        for i in 0..<n { out[i] = t[Int(src[i])] }
                    }
                case .int8: for i in 0..<n { out[i] = Float(p.load(fromByteOffset: i, as: Int8.self)) * scale }
                case .int16BE: for i in 0..<n { out[i] = Float(Int16(bigEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) * scale }
                case .int32BE: for i in 0..<n { out[i] = Float(Int32(bigEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) * scale }
                case .int32LE: for i in 0..<n { out[i] = Float(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) * scale }
                case .int64LE: for i in 0..<n { out[i] = Float(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) * scale }
                case .float32BE: for i in 0..<n { out[i] = Float(bitPattern: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) * scale }
                case .float32LE: for i in 0..<n { out[i] = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) * scale }
                case .float64BE: for i in 0..<n { out[i] = Float(Double(bitPattern: UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) * Double(scale)) }
                case .float64LE: for i in 0..<n { out[i] = Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) * Double(scale)) }
                }
            }
            initialized = n
        }
    }

    /// Every element as a class label in 0..<classes; throws naming the first one outside.
    func labels(classes: Int, name: String) throws -> [Int32] {
        guard element.isInteger else {
            throw DataError(name, "labels must be stored as integers, but the file holds floating-point values; convert the labels to an integer type")
        }
        let n = count
        var bad: (index: Int, value: Int64)?
        let result = [Int32](unsafeUninitializedCapacity: n) { out, initialized in
            bytes.withUnsafeBytes { raw in
                let p = raw.baseAddress! + offset
                for i in 0..<n {
                    let v: Int64
                    switch element {
                    case .uint8: v = Int64(p.load(fromByteOffset: i, as: UInt8.self))
                    case .int8: v = Int64(p.load(fromByteOffset: i, as: Int8.self))
                    case .int16BE: v = Int64(Int16(bigEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
                    case .int32BE: v = Int64(Int32(bigEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                    case .int32LE: v = Int64(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                    case .int64LE: v = Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
                    default: v = -1
                    }
                    if v < 0 || v >= Int64(classes) {
                        if bad == nil { bad = (i, v) }
                        out[i] = 0
                    } else {
                        out[i] = Int32(v)
                    }
                }
            }
            initialized = n
        }
        if let bad {
            throw DataError(name, "label \(bad.value) of example \(bad.index) is outside 0..<\(classes); fix the file or the manifest's `classes`")
        }
        return result
    }
}
