import Foundation

/// The content hash of a dataset: one SHA-256 over its files, so that members of a `shared` job
/// can check that they hold identical data (and the same vocabulary).
///
/// Definition (reproducible with `sha256sum`): for each file of the manifest in canonical role
/// order (train.features, train.labels, train.file, test.features, test.labels, test.file,
/// vocabulary; absent roles skipped), the line `HEX ROLE\n`, where HEX is the lowercase hex
/// SHA-256 of the file's bytes as stored (a gzip file is hashed compressed); the content hash is
/// `sha256:` + the hex SHA-256 of those lines concatenated.
public enum ContentHash {
    /// The hex SHA-256 of a file's bytes, read in 1 MiB chunks.
    public static func sha256(file url: URL) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: url.path) else {
            throw DataError(url.path, "cannot open the file to hash it; check that it exists and is readable")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk: Foundation.Data
            do {
                guard let read = try handle.read(upToCount: 1 << 20) else { break }
                chunk = read
            } catch {
                throw DataError(url.path, "reading the file failed (\(error.localizedDescription))")
            }
            if chunk.isEmpty { break }
            chunk.withUnsafeBytes { hasher.update($0) }
        }
        return SHA256.hex(hasher.finish())
    }

    /// The hex SHA-256 of bytes in memory.
    public static func sha256(bytes: [UInt8]) -> String {
        var hasher = SHA256()
        hasher.update(bytes)
        return SHA256.hex(hasher.finish())
    }

    /// The content hash of the manifest's files (`sha256:…`).
    public static func compute(_ manifest: DatasetManifest) throws -> String {
        var lines = ""
        for (role, url) in manifest.files {
            lines += "\(try sha256(file: url)) \(role)\n"
        }
        return "sha256:" + sha256(bytes: Array(lines.utf8))
    }

    /// The hex SHA-256 of the vocabulary file alone, nil for datasets without one. In a
    /// `per-site` job the data differ between sites but the vocabulary must not: members compare
    /// this instead of the content hash.
    public static func vocabularyHash(_ manifest: DatasetManifest) throws -> String? {
        guard let vocabulary = manifest.vocabulary else { return nil }
        return try sha256(file: vocabulary)
    }

    /// Checks the files against the manifest's `content-hash`; throws if it is absent or differs.
    public static func verify(_ manifest: DatasetManifest) throws {
        guard let expected = manifest.contentHash else {
            throw DataError(manifest.source, "has no `content-hash`; run `deploy/datasets/install.sh` again or add one (docs/datasets.md)")
        }
        let actual = try compute(manifest)
        if actual != expected.lowercased() {
            throw DataError(manifest.source, "the data files do not match `content-hash` (manifest \(expected), files \(actual)); this site's copy of dataset `\(manifest.name)` differs from the one the manifest describes")
        }
    }
}

extension FlatBuffer {
    /// SHA-256 (hex) of the buffer's bytes: two replicas with the same digest hold the same
    /// parameters bit for bit (a run starts without shipping them when the workers' match).
    public var digest: String {
        var hasher = SHA256()
        hasher.update(UnsafeRawBufferPointer(start: baseAddress, count: count * MemoryLayout<Float>.stride))
        return SHA256.hex(hasher.finish())
    }
}
