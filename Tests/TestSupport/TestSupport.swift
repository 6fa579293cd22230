import Foundation

/// Helpers shared by every test target (STYLE.md: one test-support target, not copies).
public enum TestSupport {
    /// The package root, found from this source file's location.
    public static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// A fresh, empty directory under the system temporary directory.
    public static func temporaryDirectory(_ label: String = "cohort-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
