import Foundation

/// Where datasets live: `NAME/dataset.yaml` under one directory per site.
public enum DataRoot {
    /// The environment variable that overrides the default data root.
    public static let environmentVariable = "COHORT_DATA_ROOT"

    /// The data root to use: `explicit` (from `--data-root`) if given, else `$COHORT_DATA_ROOT`
    /// if set and non-empty, else `~/.local/share/cohort/datasets`. A leading `~` is expanded.
    public static func resolve(
        explicit: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> URL {
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        func expand(_ path: String) -> URL {
            if path == "~" { return URL(fileURLWithPath: home, isDirectory: true) }
            if path.hasPrefix("~/") {
                return URL(fileURLWithPath: home, isDirectory: true)
                    .appendingPathComponent(String(path.dropFirst(2)), isDirectory: true)
            }
            return URL(fileURLWithPath: path, isDirectory: true)
        }
        if let explicit, !explicit.isEmpty { return expand(explicit) }
        if let fromEnvironment = environment[environmentVariable], !fromEnvironment.isEmpty {
            return expand(fromEnvironment)
        }
        return expand("~/.local/share/cohort/datasets")
    }

    /// The manifest of dataset `name` under `root`: `root/name/dataset.yaml`.
    public static func manifestURL(dataset name: String, root: URL) -> URL {
        root.appendingPathComponent(name, isDirectory: true).appendingPathComponent("dataset.yaml")
    }
}
