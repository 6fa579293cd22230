import Foundation

extension Safetensors {
    /// Reads every tensor and the metadata; strict: the header must be well-formed, every dtype
    /// known and F32, every tensor's bytes equal to shape × 4, inside the file, with no overlap
    /// and no gap between tensors, and no bytes after the last one.
    public static func read(from url: URL) throws -> File {
        let data: Foundation.Data
        do {
            data = try Foundation.Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw DataError(url.path, "cannot read the checkpoint (\(error.localizedDescription)); check that it exists and is readable")
        }
        return try data.withUnsafeBytes { try parse($0, name: url.path) }
    }

    /// Reads the file into `buffer` at the offsets of `layout`; the file must hold exactly the
    /// tensors of `layout`, with the same shapes. Returns the metadata.
    @discardableResult
    public static func read(from url: URL, into buffer: UnsafeMutableBufferPointer<Float>, layout: [Entry]) throws -> [String: String] {
        try read(from: url, into: [MutableGroup(prefix: "", buffer: buffer, layout: layout)])
    }

    /// The reading counterpart of `Group`.
    public struct MutableGroup {
        public var prefix: String
        public var buffer: UnsafeMutableBufferPointer<Float>
        public var layout: [Entry]
        public init(prefix: String, buffer: UnsafeMutableBufferPointer<Float>, layout: [Entry]) {
            self.prefix = prefix
            self.buffer = buffer
            self.layout = layout
        }
    }

    /// Reads the file into every group's buffer; the file must hold exactly the groups' tensors
    /// (`prefix + name`), with the same shapes. Returns the metadata.
    @discardableResult
    public static func read(from url: URL, into groups: [MutableGroup]) throws -> [String: String] {
        let file = try read(from: url)
        let byName = Dictionary(file.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let expected = groups.flatMap { group in group.layout.map { group.prefix + $0.name } }
        let missing = expected.filter { byName[$0] == nil }
        if !missing.isEmpty {
            throw DataError(url.path, "lacks tensor(s) \(missing.joined(separator: ", ")) that the model has; it was written for a different model")
        }
        let expectedSet = Set(expected)
        let extra = file.tensors.map(\.name).filter { !expectedSet.contains($0) }
        if !extra.isEmpty {
            throw DataError(url.path, "holds tensor(s) \(extra.joined(separator: ", ")) that the model lacks; it was written for a different model")
        }
        for group in groups {
            for entry in group.layout {
                let tensor = byName[group.prefix + entry.name]!
                guard tensor.shape == entry.shape else {
                    throw DataError(url.path, "tensor \(group.prefix + entry.name) has shape \(tensor.shape), the model's is \(entry.shape); it was written for a different model")
                }
                precondition(entry.offset >= 0 && entry.offset + entry.count <= group.buffer.count, "layout outside the buffer")
                tensor.values.withUnsafeBufferPointer { src in
                    guard let base = src.baseAddress, src.count > 0 else { return }
                    (group.buffer.baseAddress! + entry.offset).update(from: base, count: src.count)
                }
            }
        }
        return file.metadata
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, name: String) throws -> File {
        func fail(_ message: String) -> DataError { DataError(name, "\(message); the checkpoint is corrupt or not a safetensors file") }
        guard bytes.count >= 8 else { throw fail("is \(bytes.count) bytes long, shorter than the 8-byte header length") }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(maximumHeaderSize) else { throw fail("declares a header of \(headerLength) bytes, more than the \(maximumHeaderSize) allowed") }
        guard 8 + Int(headerLength) <= bytes.count else {
            throw fail("declares a header of \(headerLength) bytes but the file holds only \(bytes.count - 8) after the length (truncated)")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + Int(headerLength))])
        guard headerBytes.first == UInt8(ascii: "{") else { throw fail("has a header that does not start with `{`") }
        let header: [String: HeaderValue]
        do {
            // JSONDecoder keeps integers, booleans and floats apart (JSONSerialization's NSNumber does not).
            header = try JSONDecoder().decode([String: HeaderValue].self, from: Foundation.Data(headerBytes))
        } catch {
            throw fail("has a header that is not a valid JSON object (\(error.localizedDescription))")
        }

        var metadata: [String: String] = [:]
        if let raw = header["__metadata__"] {
            guard case let .object(map) = raw else { throw fail("has `__metadata__` that is not an object") }
            for (key, value) in map {
                guard case let .string(string) = value else { throw fail("has `__metadata__.\(key)` that is not a string") }
                metadata[key] = string
            }
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = bytes.count - dataStart
        var entries: [(name: String, shape: [Int], begin: Int, end: Int)] = []
        for (tensorName, raw) in header where tensorName != "__metadata__" {
            guard case let .object(info) = raw else { throw fail("has tensor `\(tensorName)` whose entry is not an object") }
            let allowed: Set<String> = ["dtype", "shape", "data_offsets"]
            if let unknown = info.keys.first(where: { !allowed.contains($0) }) { throw fail("has tensor `\(tensorName)` with unknown field `\(unknown)`") }
            guard case let .string(dtype)? = info["dtype"] else { throw fail("has tensor `\(tensorName)` without a string `dtype`") }
            guard knownDTypes.contains(dtype) else { throw fail("has tensor `\(tensorName)` of unknown dtype `\(dtype)`") }
            guard dtype == "F32" else {
                throw DataError(name, "tensor `\(tensorName)` has dtype \(dtype); Cohort reads F32 checkpoints only (convert with safetensors/torch first)")
            }
            guard case let .array(shapeRaw)? = info["shape"], let shape = integers(shapeRaw), shape.allSatisfy({ $0 >= 0 }) else {
                throw fail("has tensor `\(tensorName)` whose `shape` is not a list of non-negative integers")
            }
            guard case let .array(offsetsRaw)? = info["data_offsets"], let offsets = integers(offsetsRaw), offsets.count == 2 else {
                throw fail("has tensor `\(tensorName)` whose `data_offsets` is not two integers")
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard 0 <= begin, begin <= end, end <= dataSize else {
                throw fail("has tensor `\(tensorName)` at bytes \(begin)..<\(end), outside the \(dataSize) data bytes (truncated?)")
            }
            var elements = 1
            for dimension in shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw fail("has tensor `\(tensorName)` of shape \(shape), too large") }
                elements = product
            }
            guard elements.multipliedReportingOverflow(by: 4) == (end - begin, false) else {
                throw fail("has tensor `\(tensorName)` of shape \(shape) (\(elements) × 4 bytes) stored in \(end - begin) bytes")
            }
            entries.append((tensorName, shape, begin, end))
        }
        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var position = 0
        for entry in entries {
            if entry.begin < position { throw fail("has tensor `\(entry.name)` overlapping the one before it") }
            if entry.begin > position { throw fail("leaves bytes \(position)..<\(entry.begin) belonging to no tensor") }
            position = entry.end
        }
        if position != dataSize { throw fail("has \(dataSize - position) bytes after the last tensor") }

        let dataBase = bytes.baseAddress! + dataStart
        let tensors = entries.map { entry -> Tensor in
            let count = (entry.end - entry.begin) / 4
            let values = [Float](unsafeUninitializedCapacity: count) { out, initialized in
                if count > 0 {
                    UnsafeMutableRawPointer(out.baseAddress!).copyMemory(from: dataBase + entry.begin, byteCount: count * 4)
                }
                #if _endian(big)
                for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: out[i].bitPattern)) }
                #endif
                initialized = count
            }
            return Tensor(name: entry.name, shape: entry.shape, values: values)
        }
        return File(tensors: tensors, metadata: metadata)
    }

    private static func integers(_ values: [HeaderValue]) -> [Int]? {
        var result: [Int] = []
        for value in values {
            guard case let .integer(n) = value else { return nil }
            result.append(n)
        }
        return result
    }
}

/// A JSON value as the safetensors header holds it.
fileprivate enum HeaderValue: Decodable {
    case null, bool(Bool), integer(Int), number(Double), string(String), array([HeaderValue]), object([String: HeaderValue])

    init(from decoder: any Decoder) throws {
        if let container = try? decoder.container(keyedBy: Key.self) {
            var object: [String: HeaderValue] = [:]
            for key in container.allKeys { object[key.stringValue] = try container.decode(HeaderValue.self, forKey: key) }
            self = .object(object)
        } else if var container = try? decoder.unkeyedContainer() {
            var array: [HeaderValue] = []
            while !container.isAtEnd { array.append(try container.decode(HeaderValue.self)) }
            self = .array(array)
        } else {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() { self = .null }
            else if let value = try? container.decode(Bool.self) { self = .bool(value) }
            else if let value = try? container.decode(Int.self) { self = .integer(value) }
            else if let value = try? container.decode(Double.self) { self = .number(value) }
            else { self = .string(try container.decode(String.self)) }
        }
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
