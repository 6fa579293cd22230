/// GPT-style character language model:
///   x₀ = token embedding + learned position embedding (dropout)
///   per block (pre-LN): x ← x + drop(proj(causalMHA(LN₁(x)))); x ← x + drop(W₂·GELU_tanh(W₁·LN₂(x)))
///   logits = head(LN_f(x)); loss = mean next-token cross-entropy.
/// The head is UNTIED from the token embedding and has no bias (`head.weight`, (V, C)): untied
/// keeps each gradient a plain slice of the flat buffer and costs V·C extra parameters.
/// Dropout (p = description.dropout) acts on the embedding and on both residual branches;
/// attention probabilities are not dropped. Forward and backward are written out per block.
final class TransformerNetwork {
    let d: ModelDescription.Transformer
    let C: Int, H: Int, V: Int, L: Int

    struct Block {
        var ln1w = 0, ln1b = 0, qkvw = 0, qkvb = 0, projw = 0, projb = 0
        var ln2w = 0, ln2b = 0, fcw = 0, fcb = 0, fc2w = 0, fc2b = 0
    }
    var tokenEmbedding = 0, positionEmbedding = 0, normw = 0, normb = 0, headw = 0
    var blocks: [Block] = []


    init(_ d: ModelDescription.Transformer, layout: inout ParameterLayout, inits: inout [Initialiser]) throws {
        func check(_ ok: Bool, _ why: @autoclosure () -> String) throws {
            if !ok { throw ComputeError.invalidDescription(why()) }
        }
        try check(d.vocabulary >= 2, "transformer.vocabulary must be at least 2, got \(d.vocabulary)")
        try check(d.context >= 1, "transformer.context must be positive, got \(d.context)")
        try check(d.width >= 1, "transformer.width must be positive, got \(d.width)")
        try check(d.layers >= 1, "transformer.layers must be positive, got \(d.layers)")
        try check(d.heads >= 1, "transformer.heads must be positive, got \(d.heads)")
        try check(d.width % d.heads == 0, "transformer.heads (\(d.heads)) must divide transformer.width (\(d.width))")
        try check(d.dropout >= 0 && d.dropout < 1, "transformer.dropout must be in [0, 1), got \(d.dropout)")
        self.d = d
        C = d.width; H = d.heads; V = d.vocabulary; L = d.layers
        let std: Float = 0.02
        let residualStd = std / Float(2 * L).squareRoot() // GPT-2: scale residual projections
        func add(_ name: String, _ shape: [Int], _ i: Initialiser) -> Int {
            inits.append(i)
            return layout.add(name, shape)
        }
        tokenEmbedding = add("embedding.token.weight", [V, C], .normal(std: std))
        positionEmbedding = add("embedding.position.weight", [d.context, C], .normal(std: std))
        for l in 0..<L {
            let p = "layers.\(l)."
            var b = Block()
            b.ln1w = add(p + "ln1.weight", [C], .ones)
            b.ln1b = add(p + "ln1.bias", [C], .zeros)
            b.qkvw = add(p + "attn.qkv.weight", [3 * C, C], .normal(std: std))
            b.qkvb = add(p + "attn.qkv.bias", [3 * C], .zeros)
            b.projw = add(p + "attn.proj.weight", [C, C], .normal(std: residualStd))
            b.projb = add(p + "attn.proj.bias", [C], .zeros)
            b.ln2w = add(p + "ln2.weight", [C], .ones)
            b.ln2b = add(p + "ln2.bias", [C], .zeros)
            b.fcw = add(p + "mlp.fc.weight", [4 * C, C], .normal(std: std))
            b.fcb = add(p + "mlp.fc.bias", [4 * C], .zeros)
            b.fc2w = add(p + "mlp.proj.weight", [C, 4 * C], .normal(std: residualStd))
            b.fc2b = add(p + "mlp.proj.bias", [C], .zeros)
            blocks.append(b)
        }
        normw = add("norm.weight", [C], .ones)
        normb = add("norm.bias", [C], .zeros)
        headw = add("head.weight", [V, C], .normal(std: std))
    }

    // MARK: workspace

    struct Activations {
        var ln1, mean1, rstd1, qkv, probs, att, x1, ln2, mean2, rstd2, fc, gelu, x2: UnsafeMutablePointer<Float>
        var maskA, maskM: UnsafeMutablePointer<Float>?
    }
    private var capacityBatch = 0
    private var arena = Arena(capacity: 0)
    private var acts: [Activations] = []
    private var x0: UnsafeMutablePointer<Float>?, mask0: UnsafeMutablePointer<Float>?
    private var lnf: UnsafeMutablePointer<Float>?, meanf: UnsafeMutablePointer<Float>?, rstdf: UnsafeMutablePointer<Float>?
    private var logits: UnsafeMutablePointer<Float>?, rowLoss: UnsafeMutablePointer<Float>?, rowHit: UnsafeMutablePointer<Float>?
    private var tmp: UnsafeMutablePointer<Float>?, dres: UnsafeMutablePointer<Float>?, dtmp: UnsafeMutablePointer<Float>?
    private var dqkv: UnsafeMutablePointer<Float>?, dfc: UnsafeMutablePointer<Float>?, dscratch: UnsafeMutablePointer<Float>?
    private var targets: [Int32] = []

    private func reserve(batch B: Int, length T: Int) {
        precondition(T <= d.context)
        if B <= capacityBatch { return }
        // Size for B full-length sequences so that any shorter length fits too.
        let Nc = B * d.context, TT = B * H * d.context * d.context
        let drop = d.dropout > 0
        var sizes: [Int] = []
        for _ in 0..<L {
            sizes += [Nc * C, Nc, Nc, Nc * 3 * C, TT, Nc * C, Nc * C, Nc * C, Nc, Nc, Nc * 4 * C, Nc * 4 * C, Nc * C]
            if drop { sizes += [Nc * C, Nc * C] }
        }
        sizes += [Nc * C, Nc * C, Nc * C, Nc, Nc, Nc * V, Nc, Nc, Nc * C, Nc * C, Nc * C, Nc * 3 * C, Nc * 4 * C, TT]
        arena = Arena(capacity: Arena.size(sizes))
        acts = []
        for _ in 0..<L {
            var a = Activations(ln1: arena.take(Nc * C), mean1: arena.take(Nc), rstd1: arena.take(Nc),
                                qkv: arena.take(Nc * 3 * C), probs: arena.take(TT), att: arena.take(Nc * C),
                                x1: arena.take(Nc * C), ln2: arena.take(Nc * C), mean2: arena.take(Nc), rstd2: arena.take(Nc),
                                fc: arena.take(Nc * 4 * C), gelu: arena.take(Nc * 4 * C), x2: arena.take(Nc * C))
            if drop { a.maskA = arena.take(Nc * C); a.maskM = arena.take(Nc * C) }
            acts.append(a)
        }
        x0 = arena.take(Nc * C); mask0 = arena.take(Nc * C); lnf = arena.take(Nc * C)
        meanf = arena.take(Nc); rstdf = arena.take(Nc); logits = arena.take(Nc * V)
        rowLoss = arena.take(Nc); rowHit = arena.take(Nc)
        tmp = arena.take(Nc * C); dres = arena.take(Nc * C); dtmp = arena.take(Nc * C)
        dqkv = arena.take(Nc * 3 * C); dfc = arena.take(Nc * 4 * C); dscratch = arena.take(TT)
        targets = [Int32](repeating: 0, count: Nc)
        capacityBatch = B
    }

    // MARK: passes

    func validate(_ batch: Batch) throws {
        guard case let .sequences(tokens, length) = batch else {
            throw ComputeError.invalidBatch("a transformer model needs token sequences, got a classification batch")
        }
        guard length >= 1, length <= d.context else {
            throw ComputeError.invalidBatch("sequence length \(length) must be in 1...\(d.context) (the model's context)")
        }
        guard tokens.count % (length + 1) == 0 else {
            throw ComputeError.invalidBatch("\(tokens.count) tokens are not whole rows of length + 1 = \(length + 1)")
        }
        for (i, t) in tokens.enumerated() where t < 0 || Int(t) >= V {
            throw ComputeError.tokenOutOfRange(index: i, token: t, vocabulary: V)
        }
    }

    /// Forward (and backward when `train`) over sequences `examples` of a validated batch; adds
    /// the gradient of Σ loss · `gradientScale` to `gradients`. Dropout masks are drawn by
    /// position in the whole batch, so a split batch draws the same masks.
    func pass(_ view: BatchView, examples: Range<Int>, parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
              train: Bool, gradientScale: Float, seed: UInt64) -> RunResult {
        let T = view.length
        return pass(view.tokens! + examples.lowerBound * (T + 1), batch: examples.count, length: T, parameters: parameters,
                    gradients: gradients, train: train, seed: seed, gradientScale: gradientScale,
                    indexOffset: examples.lowerBound * T * C)
    }

    private func pass(_ tokens: UnsafePointer<Int32>, batch B: Int, length T: Int, parameters P: UnsafePointer<Float>,
                      gradients G: UnsafeMutablePointer<Float>, train: Bool, seed: UInt64, gradientScale: Float,
                      indexOffset: Int) -> RunResult {
        reserve(batch: B, length: T)
        let N = B * T
        let drop = train && d.dropout > 0
        let p = d.dropout
        let shape = Attention.Shape(batch: B, length: T, width: C, heads: H)
        let tmp = tmp!, x0 = x0!

        // Embeddings: x₀ (N, C).
        Embedding.forward(tokens: tokens, tokenStride: T + 1, batch: B, length: T, tokenTable: P + tokenEmbedding,
                          positionTable: P + positionEmbedding, out: drop ? tmp : x0, width: C)
        if drop { Elementwise.dropout(x: tmp, y: x0, mask: mask0!, count: N * C, p: p, seed: seed, stream: 0, indexOffset: indexOffset) }

        var x = UnsafePointer(x0)
        for l in 0..<L {
            let w = blocks[l], a = acts[l]
            LayerNorm.forward(x: x, gamma: P + w.ln1w, beta: P + w.ln1b, y: a.ln1, mean: a.mean1, rstd: a.rstd1, rows: N, cols: C)
            // qkv (N, 3C) = b + ln1 (N, C) · W_qkvᵀ (C, 3C)
            Elementwise.broadcastRows(P + w.qkvb, residual: nil, into: a.qkv, rows: N, cols: 3 * C)
            BLAS.gemm(transA: false, transB: true, m: N, n: 3 * C, k: C, a: a.ln1, lda: C, b: P + w.qkvw, ldb: C,
                      beta: 1, c: a.qkv, ldc: 3 * C)
            Attention.forward(qkv: a.qkv, out: a.att, probs: a.probs, shape)
            // x1 (N, C) = x + drop(att · W_projᵀ + b); without dropout the GEMM accumulates onto x + b.
            if drop {
                BLAS.gemm(transA: false, transB: true, m: N, n: C, k: C, a: a.att, lda: C, b: P + w.projw, ldb: C,
                          beta: 0, c: tmp, ldc: C)
                Elementwise.biasActivation(nil, z: tmp, a: nil, bias: P + w.projb, rows: N, cols: C)
                Elementwise.dropout(x: tmp, y: tmp, mask: a.maskA!, count: N * C, p: p, seed: seed, stream: UInt64(1 + 2 * l), indexOffset: indexOffset)
                Elementwise.residualAdd(residual: x, x: tmp, bias: nil, mask: nil, out: a.x1, rows: N, cols: C)
            } else {
                Elementwise.broadcastRows(P + w.projb, residual: x, into: a.x1, rows: N, cols: C)
                BLAS.gemm(transA: false, transB: true, m: N, n: C, k: C, a: a.att, lda: C, b: P + w.projw, ldb: C,
                          beta: 1, c: a.x1, ldc: C)
            }
            LayerNorm.forward(x: a.x1, gamma: P + w.ln2w, beta: P + w.ln2b, y: a.ln2, mean: a.mean2, rstd: a.rstd2, rows: N, cols: C)
            // fc (N, 4C) = b + ln2 · W_fcᵀ; gelu = GELU_tanh(fc)
            Elementwise.broadcastRows(P + w.fcb, residual: nil, into: a.fc, rows: N, cols: 4 * C)
            BLAS.gemm(transA: false, transB: true, m: N, n: 4 * C, k: C, a: a.ln2, lda: C, b: P + w.fcw, ldb: C,
                      beta: 1, c: a.fc, ldc: 4 * C)
            if train {
                Elementwise.geluWithDerivative(z: a.fc, a: a.gelu, count: N * 4 * C) // a.fc now holds GELU'(fc)
            } else {
                Elementwise.biasActivation(.gelu, z: a.fc, a: a.gelu, bias: nil, rows: N, cols: 4 * C)
            }
            // x2 (N, C) = x1 + drop(gelu (N, 4C) · W_2ᵀ (4C, C) + b)
            if drop {
                BLAS.gemm(transA: false, transB: true, m: N, n: C, k: 4 * C, a: a.gelu, lda: 4 * C, b: P + w.fc2w, ldb: 4 * C,
                          beta: 0, c: tmp, ldc: C)
                Elementwise.biasActivation(nil, z: tmp, a: nil, bias: P + w.fc2b, rows: N, cols: C)
                Elementwise.dropout(x: tmp, y: tmp, mask: a.maskM!, count: N * C, p: p, seed: seed, stream: UInt64(2 + 2 * l), indexOffset: indexOffset)
                Elementwise.residualAdd(residual: a.x1, x: tmp, bias: nil, mask: nil, out: a.x2, rows: N, cols: C)
            } else {
                Elementwise.broadcastRows(P + w.fc2b, residual: a.x1, into: a.x2, rows: N, cols: C)
                BLAS.gemm(transA: false, transB: true, m: N, n: C, k: 4 * C, a: a.gelu, lda: 4 * C, b: P + w.fc2w, ldb: 4 * C,
                          beta: 1, c: a.x2, ldc: C)
            }
            x = UnsafePointer(a.x2)
        }
        LayerNorm.forward(x: x, gamma: P + normw, beta: P + normb, y: lnf!, mean: meanf!, rstd: rstdf!, rows: N, cols: C)
        // logits (N, V) = lnf (N, C) · W_headᵀ (C, V)
        BLAS.gemm(transA: false, transB: true, m: N, n: V, k: C, a: lnf!, lda: C, b: P + headw, ldb: C,
                  beta: 0, c: logits!, ldc: V)
        for b in 0..<B { for t in 0..<T { targets[b * T + t] = tokens[b * (T + 1) + t + 1] } }
        targets.withUnsafeBufferPointer { tg in
            Softmax.crossEntropy(logits: logits!, targets: tg.baseAddress!, rows: N, cols: V, rowLoss: rowLoss!, rowHit: rowHit!,
                                 gradient: train ? logits! : nil, gradientScale: gradientScale)
        }
        let result = RunResult(rowLoss: rowLoss!, rowHit: rowHit!, rows: N)
        guard train else { return result }

        // Backward. logits now holds dL/dlogits (mean over the N predicted tokens).
        let dres = dres!, dtmp = dtmp!, dqkv = dqkv!, dfc = dfc!
        // dW_head (V, C) += dlogitsᵀ (V, N) · lnf (N, C); dlnf (N, C) = dlogits (N, V) · W_head (V, C)
        BLAS.gemm(transA: true, transB: false, m: V, n: C, k: N, a: logits!, lda: V, b: lnf!, ldb: C, beta: 1, c: G + headw, ldc: C)
        BLAS.gemm(transA: false, transB: false, m: N, n: C, k: V, a: logits!, lda: V, b: P + headw, ldb: C, beta: 0, c: dtmp, ldc: C)
        // Without dropout a residual gradient is also the next branch's output gradient, so each
        // LayerNorm backward sums it into that branch's bias gradient on the way.
        LayerNorm.backward(x: x, gamma: P + normw, mean: meanf!, rstd: rstdf!, dy: dtmp, dx: dres,
                           dgamma: G + normw, dbeta: G + normb, rows: N, cols: C, accumulate: false,
                           resultColumnSum: drop ? nil : G + blocks[L - 1].fc2b)
        for l in stride(from: L - 1, through: 0, by: -1) {
            let w = blocks[l], a = acts[l]
            let xin = l == 0 ? UnsafePointer(x0) : UnsafePointer(acts[l - 1].x2)
            // MLP branch: dres is dL/dx2; the branch output's gradient is dres ⊙ mask.
            var dbranch = UnsafePointer(dres)
            if drop {
                Elementwise.multiply(dres, a.maskM!, into: dtmp, count: N * C); dbranch = UnsafePointer(dtmp)
                Elementwise.columnSum(dbranch, rows: N, cols: C, into: G + w.fc2b)
            }
            // dW_2 (C, 4C) += dbranchᵀ (C, N) · gelu (N, 4C); dgelu (N, 4C) = dbranch (N, C) · W_2 (C, 4C)
            BLAS.gemm(transA: true, transB: false, m: C, n: 4 * C, k: N, a: dbranch, lda: C, b: a.gelu, ldb: 4 * C,
                      beta: 1, c: G + w.fc2w, ldc: 4 * C)
            BLAS.gemm(transA: false, transB: false, m: N, n: 4 * C, k: C, a: dbranch, lda: C, b: P + w.fc2w, ldb: 4 * C,
                      beta: 0, c: dfc, ldc: 4 * C)
            // a.fc holds GELU'(fc) from the forward
            Elementwise.multiplyAndColumnSum(dfc, a.fc, into: dfc, rows: N, cols: 4 * C, columnSum: G + w.fcb)
            // dW_fc (4C, C) += dfcᵀ (4C, N) · ln2 (N, C); dln2 (N, C) = dfc (N, 4C) · W_fc (4C, C)
            BLAS.gemm(transA: true, transB: false, m: 4 * C, n: C, k: N, a: dfc, lda: 4 * C, b: a.ln2, ldb: C,
                      beta: 1, c: G + w.fcw, ldc: C)
            BLAS.gemm(transA: false, transB: false, m: N, n: C, k: 4 * C, a: dfc, lda: 4 * C, b: P + w.fcw, ldb: C,
                      beta: 0, c: dtmp, ldc: C)
            LayerNorm.backward(x: a.x1, gamma: P + w.ln2w, mean: a.mean2, rstd: a.rstd2, dy: dtmp, dx: dres,
                               dgamma: G + w.ln2w, dbeta: G + w.ln2b, rows: N, cols: C, accumulate: true,
                               resultColumnSum: drop ? nil : G + w.projb)
            // Attention branch: dres is now dL/dx1.
            dbranch = UnsafePointer(dres)
            if drop {
                Elementwise.multiply(dres, a.maskA!, into: dtmp, count: N * C); dbranch = UnsafePointer(dtmp)
                Elementwise.columnSum(dbranch, rows: N, cols: C, into: G + w.projb)
            }
            // dW_proj (C, C) += dbranchᵀ · att; datt (N, C) = dbranch · W_proj, into tmp
            BLAS.gemm(transA: true, transB: false, m: C, n: C, k: N, a: dbranch, lda: C, b: a.att, ldb: C,
                      beta: 1, c: G + w.projw, ldc: C)
            BLAS.gemm(transA: false, transB: false, m: N, n: C, k: C, a: dbranch, lda: C, b: P + w.projw, ldb: C,
                      beta: 0, c: tmp, ldc: C)
            Attention.backward(qkv: a.qkv, probs: a.probs, dout: tmp, dqkv: dqkv, scratch: dscratch!, shape)
            Elementwise.columnSum(dqkv, rows: N, cols: 3 * C, into: G + w.qkvb)
            // dW_qkv (3C, C) += dqkvᵀ (3C, N) · ln1 (N, C); dln1 (N, C) = dqkv (N, 3C) · W_qkv (3C, C)
            BLAS.gemm(transA: true, transB: false, m: 3 * C, n: C, k: N, a: dqkv, lda: 3 * C, b: a.ln1, ldb: C,
                      beta: 1, c: G + w.qkvw, ldc: C)
            BLAS.gemm(transA: false, transB: false, m: N, n: C, k: 3 * C, a: dqkv, lda: 3 * C, b: P + w.qkvw, ldb: C,
                      beta: 0, c: dtmp, ldc: C)
            LayerNorm.backward(x: xin, gamma: P + w.ln1w, mean: a.mean1, rstd: a.rstd1, dy: dtmp, dx: dres,
                               dgamma: G + w.ln1w, dbeta: G + w.ln1b, rows: N, cols: C, accumulate: true,
                               resultColumnSum: drop || l == 0 ? nil : G + blocks[l - 1].fc2b)
        }
        var demb = UnsafePointer(dres)
        if drop { Elementwise.multiply(dres, mask0!, into: dtmp, count: N * C); demb = UnsafePointer(dtmp) }
        Embedding.backward(tokens: tokens, tokenStride: T + 1, batch: B, length: T, dout: demb,
                           dTokenTable: G + tokenEmbedding, dPositionTable: G + positionEmbedding, width: C)
        return result
    }
}
