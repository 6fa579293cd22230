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

    /// Appends a tensor and returns its offset.
    mutating func add(_ name: String, _ shape: [Int]) -> Int {
        let info = ParameterInfo(name: name, shape: shape, offset: count)
        table.append(info)
        count += info.count
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
