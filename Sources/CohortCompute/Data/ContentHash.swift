import Foundation
import Synchronization

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

    /// What the members of a `shared` job compare: the hash of the files as they are (not as
    /// the manifest declares them; a declared `content-hash` that the files do not match is an
    /// error), and a digest of what in the manifest decides which rows are train and test and
    /// what a row holds (format, shape, classes, scale, label column, header, split), since two
    /// sites whose files match but whose manifests carve or read them differently do not train
    /// on one dataset. Cached per process by the files' paths, sizes and modification times.
    public static func identity(_ manifest: DatasetManifest) throws -> String {
        var key = ""
        for (_, url) in manifest.files {
            let attributes = try? FileManager.default.attributesOfItem(atPath: url.path)
            let size = attributes?[.size] as? Int ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? -1
            key += "\(url.path)|\(size)|\(modified)\n"
        }
        let files: String
        if let cached = cache.withLock({ $0[key] }) {
            files = cached
        } else {
            files = try compute(manifest)
            cache.withLock { $0[key] = files }
        }
        if let declared = manifest.contentHash, declared.lowercased() != files {
            throw DataError(manifest.source, "the data files do not match `content-hash` (manifest \(declared), files \(files)); this site's copy of dataset `\(manifest.name)` differs from the one the manifest describes")
        }
        let split = manifest.split.map { "\($0.testFraction) seed \($0.seed)" } ?? "none"
        let settings = "format \(manifest.format.rawValue) shape \(manifest.shape) classes \(manifest.classes) scale \(manifest.scale) "
            + "label \(manifest.labelColumn.rawValue) header \(manifest.header.rawValue) split \(split)"
        return files + " reading:" + sha256(bytes: Array(settings.utf8)).prefix(16)
    }

    private static let cache = Mutex<[String: String]>([:])

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
