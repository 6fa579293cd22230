/// One named parameter tensor inside a model's flat buffer (checkpoint table entry).
public struct ParameterInfo: Sendable, Hashable, Codable {
    /// Dotted name, e.g. `layers.0.attn.qkv.weight`.
    public var name: String
    /// Row-major shape; a Linear weight is (out, in) as in PyTorch.
    public var shape: [Int]
    /// First element's index in the flat parameter (and gradient) buffer.
    public var offset: Int
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<offset + count }

    public init(name: String, shape: [Int], offset: Int) {
        self.name = name
        self.shape = shape
        self.offset = offset
    }
}

/// Builds the flat layout in declaration order: tensors are packed back to back with no padding,
/// so the parameter count is exactly the sum of the tensors' sizes.
struct ParameterLayout {
    private(set) var table: [ParameterInfo] = []
    private(set) var count = 0
    /// Set once the tensors added exceed `Model.maxParameters` (counted without overflow);
    /// tensors are then no longer added, and the model must not be built.
    private(set) var tooLarge = false

    /// Appends a tensor and returns its offset.
    mutating func add(_ name: String, _ shape: [Int]) -> Int {
        guard !tooLarge else { return 0 }
        var size = 1
        for extent in shape {
            let (product, overflow) = size.multipliedReportingOverflow(by: extent)
            guard !overflow, product <= Model.maxParameters else {
                tooLarge = true
                return 0
            }
            size = product
        }
        guard count + size <= Model.maxParameters else {
            tooLarge = true
            return 0
        }
        let info = ParameterInfo(name: name, shape: shape, offset: count)
        table.append(info)
        count += size
        return info.offset
    }
}

/// How a parameter tensor is initialised.
enum Initialiser {
    case zeros, ones
    case normal(std: Float)

    func fill(_ p: UnsafeMutablePointer<Float>, count: Int, rng: inout Xoshiro256) {
        switch self {
        case .zeros: p.update(repeating: 0, count: count)
        case .ones: p.update(repeating: 1, count: count)
        case let .normal(std): for i in 0..<count { p[i] = Float(rng.nextNormal()) * std }
        }
    }
}
