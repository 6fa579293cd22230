/// Multilayer perceptron classifier: Linear → activation → … → Linear → cross-entropy.
/// Forward and backward are written out per layer (fused bias + activation), not taped.
final class MLPNetwork {
    let d: ModelDescription.MLP
    let dims: [Int]
    let kind: Elementwise.Kind
    /// Offsets of layer i's weight (out, in) and bias (out) in the flat buffers.
    var weightOffsets: [Int] = [], biasOffsets: [Int] = []

    private var capacity = 0
    private var arena = Arena(capacity: 0)
    private var z: [UnsafeMutablePointer<Float>] = []   // pre-activations (B, out_i)
    private var a: [UnsafeMutablePointer<Float>] = []   // activations (B, out_i), hidden layers
    private var dA: UnsafeMutablePointer<Float>?       // (B, max width) gradient w.r.t. an activation
    private var rowLoss: UnsafeMutablePointer<Float>?
    private var rowHit: UnsafeMutablePointer<Float>?

    init(_ d: ModelDescription.MLP, layout: inout ParameterLayout, inits: inout [Initialiser]) throws {
        guard d.inputs > 0 else { throw ComputeError.invalidDescription("mlp.inputs must be positive, got \(d.inputs)") }
        guard d.classes >= 2 else { throw ComputeError.invalidDescription("mlp.classes must be at least 2, got \(d.classes)") }
        for (i, h) in d.hidden.enumerated() where h <= 0 {
            throw ComputeError.invalidDescription("mlp.hidden[\(i)] must be positive, got \(h)")
        }
        self.d = d
        dims = [d.inputs] + d.hidden + [d.classes]
        switch d.activation {
        case .relu: kind = .relu
        case .gelu: kind = .gelu
        case .tanh: kind = .tanh
        }
        for i in 0..<(dims.count - 1) {
            let fanIn = dims[i], out = dims[i + 1]
            let last = i == dims.count - 2
            // He-style for ReLU/GELU hidden layers, 1/√fan_in for tanh and the output layer.
            let gain: Float = (last || kind == .tanh) ? 1 : 2
            weightOffsets.append(layout.add("layers.\(i).weight", [out, fanIn]))
            inits.append(.normal(std: (gain / Float(fanIn)).squareRoot()))
            biasOffsets.append(layout.add("layers.\(i).bias", [out]))
            inits.append(.zeros)
        }
    }

    private func reserve(_ batch: Int) {
        if batch <= capacity { return }
        let layers = dims.count - 1
        var sizes: [Int] = []
        for i in 0..<layers { sizes.append(batch * dims[i + 1]); sizes.append(batch * dims[i + 1]) }
        sizes += [batch * (dims.max() ?? 1), batch, batch]
        arena = Arena(capacity: Arena.size(sizes))
        z = []; a = []
        for i in 0..<layers { z.append(arena.take(batch * dims[i + 1])); a.append(arena.take(batch * dims[i + 1])) }
        dA = arena.take(batch * (dims.max() ?? 1))
        rowLoss = arena.take(batch)
        rowHit = arena.take(batch)
        capacity = batch
    }

    func validate(_ batch: Batch) throws {
        guard case let .classification(features, width, labels) = batch else {
            throw ComputeError.invalidBatch("an mlp model needs a classification batch, got token sequences")
        }
        guard width == d.inputs else {
            throw ComputeError.invalidBatch("feature width \(width) does not match the model's \(d.inputs) inputs")
        }
        let B = labels.count
        guard features.count == B * width else {
            throw ComputeError.invalidBatch("\(features.count) features for \(B) examples of width \(width); expected \(B * width)")
        }
        for (i, l) in labels.enumerated() where l < 0 || Int(l) >= d.classes {
            throw ComputeError.labelOutOfRange(index: i, label: l, classes: d.classes)
        }
    }

    /// Forward (and backward when `train`) over examples `examples` of a validated batch. The
    /// gradient of Σ loss · `gradientScale` is added to `gradients`.
    func pass(_ view: BatchView, examples: Range<Int>, parameters: UnsafePointer<Float>, gradients G: UnsafeMutablePointer<Float>,
              train: Bool, gradientScale: Float) -> RunResult {
        let B = examples.count
        reserve(B)
        let P = parameters
        let layers = dims.count - 1
        let x = view.features! + examples.lowerBound * d.inputs
        let labels = view.labels! + examples.lowerBound
        // Forward.
        for i in 0..<layers {
            let input = i == 0 ? x : UnsafePointer(a[i - 1])
            let fanIn = dims[i], out = dims[i + 1]
            // z (B, out) = b + input (B, in) · Wᵀ (in, out); a = f(z)
            Elementwise.broadcastRows(P + biasOffsets[i], residual: nil, into: z[i], rows: B, cols: out)
            BLAS.gemm(transA: false, transB: true, m: B, n: out, k: fanIn,
                      a: input, lda: fanIn, b: P + weightOffsets[i], ldb: fanIn, beta: 1, c: z[i], ldc: out)
            if i < layers - 1 {
                Elementwise.biasActivation(kind, z: z[i], a: a[i], bias: nil, rows: B, cols: out)
            }
        }
        let logits = z[layers - 1]
        Softmax.crossEntropy(logits: logits, targets: labels, rows: B, cols: d.classes,
                             rowLoss: rowLoss!, rowHit: rowHit!,
                             gradient: train ? logits : nil, gradientScale: gradientScale)
        let result = RunResult(rowLoss: rowLoss!, rowHit: rowHit!, rows: B)
        guard train else { return result }
        // Backward: z[i] now holds dL/dz_i for the layer being processed.
        for i in stride(from: layers - 1, through: 0, by: -1) {
            let input = i == 0 ? x : UnsafePointer(a[i - 1])
            let fanIn = dims[i], out = dims[i + 1]
            // dW (out, in) += dzᵀ (out, B) · input (B, in)
            BLAS.gemm(transA: true, transB: false, m: out, n: fanIn, k: B,
                      a: z[i], lda: out, b: input, ldb: fanIn, beta: 1, c: G + weightOffsets[i], ldc: fanIn)
            Elementwise.columnSum(z[i], rows: B, cols: out, into: G + biasOffsets[i])
            if i > 0 {
                // dA (B, in) = dz (B, out) · W (out, in)
                BLAS.gemm(transA: false, transB: false, m: B, n: fanIn, k: out,
                          a: z[i], lda: out, b: P + weightOffsets[i], ldb: fanIn, beta: 0, c: dA!, ldc: fanIn)
                // dz_{i-1} = dA ⊙ f'(z_{i-1}), written over z_{i-1}
                Elementwise.activationBackward(kind, z: z[i - 1], a: a[i - 1], da: dA!, dz: z[i - 1], count: B * fanIn)
            }
        }
        return result
    }
}
