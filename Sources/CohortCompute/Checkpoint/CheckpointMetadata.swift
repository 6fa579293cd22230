import Foundation

/// The metadata keys Cohort writes into a checkpoint's `__metadata__` (all values strings, as
/// safetensors requires).
public enum CheckpointMetadata {
    public static let formatKey = "format"
    public static let stepKey = "cohort.step"
    public static let modelKey = "cohort.model"

    /// `format: pt` (what Python tools expect), the step, and the model description as JSON,
    /// plus `extra`.
    public static func make(step: Int, model: ModelDescription, extra: [String: String] = [:]) -> [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(model)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        var metadata = extra
        metadata[formatKey] = "pt"
        metadata[stepKey] = String(step)
        metadata[modelKey] = json
        return metadata
    }

    /// The step recorded in `metadata`, if any.
    public static func step(_ metadata: [String: String]) -> Int? { metadata[stepKey].flatMap { Int($0) } }

    /// The model description recorded in `metadata`, if any.
    public static func model(_ metadata: [String: String]) throws -> ModelDescription? {
        guard let json = metadata[modelKey] else { return nil }
        do {
            return try JSONDecoder().decode(ModelDescription.self, from: Foundation.Data(json.utf8))
        } catch {
            throw DataError("", "the checkpoint's `\(modelKey)` metadata is not a model description (\(error.localizedDescription))")
        }
    }
}
