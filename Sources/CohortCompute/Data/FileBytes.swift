internal import CZlib
import Foundation

/// Reading a data file into memory, gunzipping it when it starts with the gzip magic.
enum FileBytes {
    static func read(_ url: URL) throws -> [UInt8] {
        let data: Foundation.Data
        do {
            data = try Foundation.Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw DataError(url.path, "cannot read the file (\(error.localizedDescription)); check that it exists and is readable")
        }
        return try data.withUnsafeBytes { raw -> [UInt8] in
            if raw.count >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
                return try gunzip(raw, name: url.path)
            }
            return Array(raw)
        }
    }

    /// Inflates every gzip member in `input` (concatenated members are one stream, as gzip -d does).
    static func gunzip(_ input: UnsafeRawBufferPointer, name: String) throws -> [UInt8] {
        // ISIZE (the last four bytes) is the uncompressed size modulo 2^32: a good first guess.
        var capacity = 1 << 16
        if input.count >= 18 {
            let isize = Int(input.loadUnaligned(fromByteOffset: input.count - 4, as: UInt32.self).littleEndian)
            capacity = max(capacity, isize)
        }
        var output = [UInt8](repeating: 0, count: capacity)
        var produced = 0
        var stream = z_stream()
        guard inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError(name, "zlib could not start inflating (out of memory?)")
        }
        defer { inflateEnd(&stream) }
        let base = input.baseAddress!.assumingMemoryBound(to: UInt8.self)
        stream.next_in = UnsafeMutablePointer(mutating: base)
        stream.avail_in = UInt32(input.count)
        while true {
            if produced == output.count { output.append(contentsOf: repeatElement(0, count: output.count)) }
            let status: Int32 = output.withUnsafeMutableBufferPointer { out in
                stream.next_out = out.baseAddress! + produced
                let room = min(out.count - produced, Int(UInt32.max))
                stream.avail_out = UInt32(room)
                let status = inflate(&stream, Z_NO_FLUSH)
                produced += room - Int(stream.avail_out)
                return status
            }
            switch status {
            case Z_STREAM_END:
                if stream.avail_in == 0 { output.removeSubrange(produced...); return output }
                // Another gzip member follows; skip trailing zero padding as gzip does.
                let rest = UnsafeRawBufferPointer(start: stream.next_in, count: Int(stream.avail_in))
                if rest.allSatisfy({ $0 == 0 }) { output.removeSubrange(produced...); return output }
                guard inflateReset(&stream) == Z_OK else { throw DataError(name, "zlib could not restart inflating") }
            case Z_OK:
                continue
            case Z_BUF_ERROR where stream.avail_out == 0:
                continue
            case Z_BUF_ERROR:
                throw DataError(name, "the gzip data ends early (the file is truncated); fetch or copy it again")
            default:
                let detail = stream.msg.map { String(cString: $0) } ?? "status \(status)"
                throw DataError(name, "the gzip data is corrupt (\(detail)); fetch or copy the file again")
            }
        }
    }
}
