/// A Float32 tensor: a shape and a contiguous, row-major view into a `FlatBuffer`.
/// Views share storage: `reshaped` and row slices copy nothing, and a model's parameters are
/// `Tensor`s whose storage is the model's one flat parameter buffer.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let storage: FlatBuffer
    public let offset: Int

    public var count: Int { shape.reduce(1, *) }

    /// A new zero-filled tensor with its own storage.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "tensor dimensions must be non-negative")
        self.shape = shape
        storage = FlatBuffer(count: shape.reduce(1, *))
        offset = 0
    }

    /// A new tensor holding a copy of `values`, which must have `shape`'s element count.
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values do not fill shape \(shape)")
        self.shape = shape
        storage = FlatBuffer(values)
        offset = 0
    }

    /// A view of `storage[offset..<offset + count]` with `shape`.
    public init(view storage: FlatBuffer, offset: Int, shape: [Int]) {
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= storage.count, "view exceeds its storage")
        self.shape = shape
        self.storage = storage
        self.offset = offset
    }

    /// The first element (valid while `storage` is alive).
    public var pointer: UnsafeMutablePointer<Float> { storage.baseAddress + offset }

    /// The same elements under another shape (like `torch.reshape` on a contiguous tensor).
    /// Its gradient is the output gradient reshaped back: a view again, nothing to compute.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(view: storage, offset: offset, shape: newShape)
    }

    /// Rows `range` of the first axis, as a view.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0])
        let inner = shape.dropFirst().reduce(1, *)
        return Tensor(view: storage, offset: offset + range.lowerBound * inner, shape: [range.count] + shape.dropFirst())
    }

    /// The elements, copied out in row-major order.
    public var scalars: [Float] { storage.toArray(offset..<offset + count) }

    /// Element at a multi-index.
    public subscript(_ index: Int...) -> Float {
        get { pointer[flatIndex(index)] }
        nonmutating set { pointer[flatIndex(index)] = newValue }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index rank \(index.count) for shape \(shape)")
        var flat = 0
        for (i, n) in zip(index, shape) {
            precondition(i >= 0 && i < n, "index \(index) out of shape \(shape)")
            flat = flat * n + i
        }
        return flat
    }

    /// A transposed copy of a 2-D tensor (rows,cols) → (cols,rows). Its backward is `transposed()`
    /// of the output gradient.
    public func transposed() -> Tensor {
        precondition(shape.count == 2, "transposed() needs a 2-D tensor, got \(shape)")
        let out = Tensor(zeros: [shape[1], shape[0]])
        Elementwise.transpose(pointer, rows: shape[0], cols: shape[1], into: out.pointer)
        return out
    }
}
