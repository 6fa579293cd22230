import Foundation

/// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
/// N bytes of JSON (`{"__metadata__": {String: String}, NAME: {"dtype", "shape",
/// "data_offsets": [begin, end]}, ...}`, padded with spaces to a multiple of 8), then the raw
/// little-endian tensor bytes, offsets relative to the end of the header. Cohort writes and
/// reads F32 tensors only.
public enum Safetensors {
    /// One tensor of a flat parameter buffer: `shape` elements starting at `offset` (in Floats).
    public struct Entry: Sendable, Hashable {
        public var name: String
        public var shape: [Int]
        public var offset: Int
        public init(name: String, shape: [Int], offset: Int) {
            self.name = name
            self.shape = shape
            self.offset = offset
        }
        public var count: Int { shape.reduce(1, *) }
    }

    /// A tensor read from a file.
    public struct Tensor: Sendable, Hashable {
        public var name: String
        public var shape: [Int]
        public var values: [Float]
        public init(name: String, shape: [Int], values: [Float]) {
            precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    /// A whole file: its tensors in data order and its metadata.
    public struct File: Sendable, Hashable {
        public var tensors: [Tensor]
        public var metadata: [String: String]
        public subscript(name: String) -> Tensor? { tensors.first { $0.name == name } }
    }

    /// The dtypes the format defines; any other is refused as unknown.
    static let knownDTypes: Set<String> = [
        "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
        "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64", "C64",
    ]

    /// Largest header accepted (the reference implementation's limit).
    static let maximumHeaderSize = 100_000_000

    // MARK: Writing

    /// Writes the tensors of one flat buffer, viewed through `layout`, without copying the
    /// buffer; tensors are stored contiguously in `layout` order. The file appears atomically
    /// (temporary file in the same directory, fsync, rename, fsync of the directory).
    public static func write(
        to url: URL, buffer: UnsafeBufferPointer<Float>, layout: [Entry], metadata: [String: String] = [:]
    ) throws {
        try write(to: url, groups: [Group(prefix: "", buffer: buffer, layout: layout)], metadata: metadata)
    }

    /// Several flat buffers (parameters, then optimizer moments, …) in one file, each tensor named
    /// `prefix + entry.name`, e.g. prefixes "", "adam.m.", "adam.v.".
    public struct Group {
        public var prefix: String
        public var buffer: UnsafeBufferPointer<Float>
        public var layout: [Entry]
        public init(prefix: String, buffer: UnsafeBufferPointer<Float>, layout: [Entry]) {
            self.prefix = prefix
            self.buffer = buffer
            self.layout = layout
        }
    }

    /// Writes every group's tensors, in group then layout order, without copying the buffers.
    public static func write(to url: URL, groups: [Group], metadata: [String: String] = [:]) throws {
        var parts: [(String, [Int], UnsafeBufferPointer<Float>)] = []
        for group in groups {
            for entry in group.layout {
                precondition(entry.offset >= 0 && entry.offset + entry.count <= group.buffer.count,
                             "tensor \(entry.name) (\(entry.offset)..<\(entry.offset + entry.count)) outside the buffer of \(group.buffer.count)")
                parts.append((group.prefix + entry.name, entry.shape,
                              UnsafeBufferPointer(rebasing: group.buffer[entry.offset..<(entry.offset + entry.count)])))
            }
        }
        try write(to: url, parts: parts, metadata: metadata)
    }

    /// `write(to:buffer:layout:metadata:)` over a flat `[Float]`.
    public static func write(to url: URL, flat: [Float], layout: [Entry], metadata: [String: String] = [:]) throws {
        try flat.withUnsafeBufferPointer { try write(to: url, buffer: $0, layout: layout, metadata: metadata) }
    }

    /// Writes tensors that each own their values.
    public static func write(to url: URL, tensors: [Tensor], metadata: [String: String] = [:]) throws {
        // Hold every array's storage for the duration of the write without copying it.
        func recurse(_ index: Int, _ parts: [(String, [Int], UnsafeBufferPointer<Float>)]) throws {
            if index == tensors.count { return try write(to: url, parts: parts, metadata: metadata) }
            try tensors[index].values.withUnsafeBufferPointer { values in
                try recurse(index + 1, parts + [(tensors[index].name, tensors[index].shape, values)])
            }
        }
        try recurse(0, [])
    }

    /// The header bytes (length prefix included) for tensors of these names and shapes, stored
    /// contiguously in order.
    static func header(_ parts: [(name: String, shape: [Int])], metadata: [String: String]) -> [UInt8] {
        var json = "{"
        var first = true
        if !metadata.isEmpty {
            json += "\"__metadata__\":{"
            json += metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
            json += "}"
            first = false
        }
        var offset = 0
        var names = Set<String>()
        for part in parts {
            precondition(part.name != "__metadata__", "`__metadata__` is reserved in safetensors")
            precondition(names.insert(part.name).inserted, "tensor name \(part.name) used twice")
            precondition(part.shape.allSatisfy { $0 >= 0 }, "tensor \(part.name) has a negative dimension")
            let bytes = part.shape.reduce(1, *) * 4
            if !first { json += "," }
            first = false
            json += "\(jsonString(part.name)):{\"dtype\":\"F32\",\"shape\":[\(part.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        json += "}"
        var body = Array(json.utf8)
        while body.count % 8 != 0 { body.append(0x20) }
        var result: [UInt8] = []
        result.reserveCapacity(8 + body.count)
        for shift in stride(from: 0, to: 64, by: 8) { result.append(UInt8(truncatingIfNeeded: UInt64(body.count) >> UInt64(shift))) }
        result += body
        return result
    }

    private static func write(to url: URL, parts: [(String, [Int], UnsafeBufferPointer<Float>)], metadata: [String: String]) throws {
        #if _endian(big)
        #error("safetensors stores little-endian data; a big-endian writer would have to byte-swap")
        #endif
        let header = header(parts.map { ($0.0, $0.1) }, metadata: metadata)
        try AtomicFile.write(to: url) { sink in
            try header.withUnsafeBytes { try sink($0) }
            for part in parts where !part.2.isEmpty {
                try sink(UnsafeRawBufferPointer(part.2))
            }
        }
    }

    static func jsonString(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
