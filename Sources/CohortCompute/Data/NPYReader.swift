/// NPY files (NumPy's `np.save`): magic `\x93NUMPY`, version 1.0 (2-byte header length) or
/// 2.0/3.0 (4-byte), a Python dict literal header, then the elements in C order.
/// Supported dtypes: `<f4`, `<f8`, `|u1`, `<i4`, `<i8`; anything else is refused by name.
enum NPYReader {
    static let supported = ["<f4", "<f8", "|u1", "<i4", "<i8"]

    static func parse(_ bytes: [UInt8], name: String) throws -> RawArray {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw DataError(name, "does not start with the NPY magic `\\x93NUMPY`; it is not a .npy file (np.savez archives are not supported, save each array with np.save)")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw DataError(name, "ends inside its NPY header; the file is truncated") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw DataError(name, "has NPY format version \(major).\(bytes[7]), but only versions 1, 2 and 3 exist; the file is corrupt")
        }
        guard bytes.count >= headerStart + headerLength else {
            throw DataError(name, "ends inside its NPY header; the file is truncated")
        }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        let fields = try dictionary(header, name: name)
        guard let descr = fields["descr"] else { throw DataError(name, "NPY header has no 'descr'; the file is corrupt") }
        let element: RawArray.Element
        switch descr {
        case "<f4": element = .float32LE
        case "<f8": element = .float64LE
        case "|u1", "<u1": element = .uint8
        case "<i4": element = .int32LE
        case "<i8": element = .int64LE
        default:
            throw DataError(name, "has NPY dtype '\(descr)'; supported are \(supported.joined(separator: ", ")) (convert with arr.astype('<f4') before np.save)")
        }
        switch fields["fortran_order"] {
        case "False": break
        case "True": throw DataError(name, "is stored in Fortran order; save it in C order (np.save(path, np.ascontiguousarray(arr)))")
        default: throw DataError(name, "NPY header has no valid 'fortran_order'; the file is corrupt")
        }
        guard let shapeText = fields["shape"] else { throw DataError(name, "NPY header has no 'shape'; the file is corrupt") }
        var shape: [Int] = []
        for part in shapeText.split(separator: ",") {
            let trimmed = String(part).trimmedNPY(" ")
            if trimmed.isEmpty { continue }
            guard let size = Int(trimmed), size >= 0 else {
                throw DataError(name, "NPY header has shape (\(shapeText)), which is not a tuple of sizes; the file is corrupt")
            }
            shape.append(size)
        }
        let dataStart = headerStart + headerLength
        var count = 1
        for size in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow else { throw DataError(name, "NPY shape \(shape) is too large") }
            count = product
        }
        let (body, overflow) = count.multipliedReportingOverflow(by: element.size)
        guard !overflow, body <= Int.max - dataStart else { throw DataError(name, "NPY shape \(shape) is too large") }
        let expected = dataStart + body
        if bytes.count < expected {
            throw DataError(name, "declares shape \(shape) of \(descr) (\(expected) bytes) but holds only \(bytes.count) bytes; the file is truncated")
        }
        if bytes.count > expected {
            throw DataError(name, "declares shape \(shape) of \(descr) (\(expected) bytes) but holds \(bytes.count) bytes; the file has trailing data")
        }
        return RawArray(element: element, shape: shape, bytes: bytes, offset: dataStart)
    }

    /// The three fields of the header's dict literal, each as its source text (strings unquoted,
    /// the shape tuple without parentheses).
    private static func dictionary(_ header: String, name: String) throws -> [String: String] {
        var result: [String: String] = [:]
        let scalars = Array(header.unicodeScalars)
        var i = 0
        func skipSpace() { while i < scalars.count, scalars[i] == " " || scalars[i] == "\n" || scalars[i] == "," { i += 1 } }
        func fail() -> DataError { DataError(name, "NPY header `\(header.trimmedNPY(" \n"))` is not a dict literal; the file is corrupt") }
        func quoted() throws -> String {
            guard i < scalars.count, scalars[i] == "'" || scalars[i] == "\"" else { throw fail() }
            let quote = scalars[i]
            i += 1
            var text = ""
            while i < scalars.count, scalars[i] != quote { text.unicodeScalars.append(scalars[i]); i += 1 }
            guard i < scalars.count else { throw fail() }
            i += 1
            return text
        }
        skipSpace()
        guard i < scalars.count, scalars[i] == "{" else { throw fail() }
        i += 1
        while true {
            skipSpace()
            guard i < scalars.count else { throw fail() }
            if scalars[i] == "}" { break }
            let key = try quoted()
            while i < scalars.count, scalars[i] == " " { i += 1 }
            guard i < scalars.count, scalars[i] == ":" else { throw fail() }
            i += 1
            while i < scalars.count, scalars[i] == " " { i += 1 }
            guard i < scalars.count else { throw fail() }
            if scalars[i] == "'" || scalars[i] == "\"" {
                result[key] = try quoted()
            } else if scalars[i] == "(" {
                i += 1
                var text = ""
                while i < scalars.count, scalars[i] != ")" { text.unicodeScalars.append(scalars[i]); i += 1 }
                guard i < scalars.count else { throw fail() }
                i += 1
                result[key] = text
            } else {
                var text = ""
                while i < scalars.count, scalars[i] != ",", scalars[i] != "}" { text.unicodeScalars.append(scalars[i]); i += 1 }
                result[key] = text.trimmedNPY(" ")
            }
        }
        return result
    }
}

extension String {
    fileprivate func trimmedNPY(_ set: String) -> String {
        let skip = Set(set.unicodeScalars)
        let scalars = Array(unicodeScalars)
        var start = 0, end = scalars.count
        while start < end, skip.contains(scalars[start]) { start += 1 }
        while end > start, skip.contains(scalars[end - 1]) { end -= 1 }
        var result = ""
        result.unicodeScalars.append(contentsOf: scalars[start..<end])
        return result
    }
}
