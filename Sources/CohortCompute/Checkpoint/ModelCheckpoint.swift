import Foundation

/// A model and its optimizer state as one safetensors file: the parameters under their own
/// names, each optimizer slot under `optimizer.SLOT.` + the parameter's name (SGD momentum is
/// slot 0; AdamW's first and second moments are slots 0 and 1). `cohort train` and the
/// coordinator write the same format, and read it back with `read`.
public enum ModelCheckpoint {
    public static func write(to url: URL, model: Model, optimizer: Optimizer, state: FlatBuffer, step: Int,
                             extra: [String: String] = [:]) throws {
        let layout = layout(model)
        var groups = [Safetensors.Group(prefix: "", buffer: UnsafeBufferPointer(model.parameters.buffer), layout: layout)]
        let n = model.parameterCount
        for slot in 0..<optimizer.stateSlots {
            let slice = UnsafeBufferPointer(rebasing: UnsafeBufferPointer(state.buffer)[(slot * n)..<((slot + 1) * n)])
            groups.append(Safetensors.Group(prefix: "optimizer.\(slot).", buffer: slice, layout: layout))
        }
        try Safetensors.write(to: url, groups: groups,
                              metadata: CheckpointMetadata.make(step: step, model: model.modelDescription, extra: extra))
    }

    /// Fills `model`'s parameters and `state` from a checkpoint written by `write`; returns its metadata.
    @discardableResult
    public static func read(from url: URL, into model: Model, optimizer: Optimizer, state: FlatBuffer) throws -> [String: String] {
        let layout = layout(model)
        var groups = [Safetensors.MutableGroup(prefix: "", buffer: model.parameters.buffer, layout: layout)]
        let n = model.parameterCount
        for slot in 0..<optimizer.stateSlots {
            groups.append(Safetensors.MutableGroup(prefix: "optimizer.\(slot).",
                                                   buffer: UnsafeMutableBufferPointer(rebasing: state.buffer[(slot * n)..<((slot + 1) * n)]),
                                                   layout: layout))
        }
        return try Safetensors.read(from: url, into: groups)
    }

    static func layout(_ model: Model) -> [Safetensors.Entry] {
        model.parameterTable.map { Safetensors.Entry(name: $0.name, shape: $0.shape, offset: $0.offset) }
    }
}
