import Testing
@testable import CohortCompute

/// Every op's backward against central finite differences (see `checkGradient`: L = Σ w ⊙ f(x)
/// summed in Float64, h = 3e-3, pass when |analytic − numeric| ≤ 1e-3 + 1e-2·|numeric|).
struct GradientCheckTests {
    @Test func matmulAllTransposes() {
        let (m, k, n) = (3, 5, 4)
        let x = randomFloats(m * k + k * n, seed: 1)
        // c (M,N) = a (M,K) · b (K,N); da = dc · bᵀ (NT); db = aᵀ · dc (TN)
        checkGradient(x: x, outputs: m * n, forward: { x in
            var c = [Float](repeating: 0, count: m * n)
            BLAS.gemm(transA: false, transB: false, m: m, n: n, k: k, a: x, lda: k, b: Array(x[(m * k)...]), ldb: n, beta: 0, c: &c, ldc: n)
            return c
        }, backward: { x, dc in
            let a = Array(x[..<(m * k)]), b = Array(x[(m * k)...])
            var da = [Float](repeating: 0, count: m * k), db = [Float](repeating: 0, count: k * n)
            BLAS.gemm(transA: false, transB: true, m: m, n: k, k: n, a: dc, lda: n, b: b, ldb: n, beta: 0, c: &da, ldc: k)
            BLAS.gemm(transA: true, transB: false, m: k, n: n, k: m, a: a, lda: k, b: dc, ldb: n, beta: 0, c: &db, ldc: n)
            return da + db
        })
    }

    @Test func linearWithBiasAsTheModelsUseIt() {
        // y (B,out) = x (B,in) · Wᵀ + b, W (out,in): forward NT, dW = dyᵀ · x (TN), dx = dy · W (NN).
        let (B, fin, fout) = (4, 6, 3)
        let x = randomFloats(B * fin + fout * fin + fout, seed: 2)
        checkGradient(x: x, outputs: B * fout, forward: { x in
            var y = [Float](repeating: 0, count: B * fout)
            let w = Array(x[(B * fin)..<(B * fin + fout * fin)]), b = Array(x[(B * fin + fout * fin)...])
            BLAS.gemm(transA: false, transB: true, m: B, n: fout, k: fin, a: x, lda: fin, b: w, ldb: fin, beta: 0, c: &y, ldc: fout)
            Elementwise.biasActivation(nil, z: &y, a: nil, bias: b, rows: B, cols: fout)
            return y
        }, backward: { x, dy in
            let w = Array(x[(B * fin)..<(B * fin + fout * fin)])
            var dx = [Float](repeating: 0, count: B * fin), dw = [Float](repeating: 0, count: fout * fin)
            var db = [Float](repeating: 0, count: fout)
            BLAS.gemm(transA: true, transB: false, m: fout, n: fin, k: B, a: dy, lda: fout, b: x, ldb: fin, beta: 1, c: &dw, ldc: fin)
            BLAS.gemm(transA: false, transB: false, m: B, n: fin, k: fout, a: dy, lda: fout, b: w, ldb: fin, beta: 0, c: &dx, ldc: fin)
            Elementwise.columnSum(dy, rows: B, cols: fout, into: &db)
            return dx + dw + db
        })
    }

    @Test func addBiasBroadcast() {
        let (r, c) = (5, 19) // 19 columns: exercises the SIMD tail
        let x = randomFloats(r * c + c, seed: 3)
        checkGradient(x: x, outputs: r * c, forward: { x in
            var y = Array(x[..<(r * c)])
            Elementwise.biasActivation(nil, z: &y, a: nil, bias: Array(x[(r * c)...]), rows: r, cols: c)
            return y
        }, backward: { _, dy in
            var db = [Float](repeating: 0, count: c)
            Elementwise.columnSum(dy, rows: r, cols: c, into: &db)
            return dy + db
        })
    }

    @Test func mulBiasBroadcast() {
        let (r, c) = (4, 7)
        let x = randomFloats(r * c + c, seed: 4)
        checkGradient(x: x, outputs: r * c, forward: { x in
            apply(x, count: r * c) { Elementwise.mulBias(x: $0, g: $0 + r * c, y: $1, rows: r, cols: c) }
        }, backward: { x, dy in
            var dx = [Float](repeating: 0, count: r * c), dg = [Float](repeating: 0, count: c)
            Elementwise.mulBiasBackward(x: x, g: Array(x[(r * c)...]), dy: dy, dx: &dx, dg: &dg, rows: r, cols: c)
            return dx + dg
        })
    }

    @Test(arguments: [Elementwise.Kind.relu, .gelu, .tanh])
    func activation(_ kind: Elementwise.Kind) {
        // Keep ReLU's inputs away from its kink (|x| ≥ 0.05 > h).
        let x = randomFloats(37, seed: 5, scale: 1.5).map { abs($0) < 0.05 ? $0 + 0.1 : $0 }
        checkGradient(x: x, outputs: x.count, forward: { x in
            apply(x, count: x.count) { Elementwise.activation(kind, x: $0, y: $1, count: x.count) }
        }, backward: { x, dy in
            let a = apply(x, count: x.count) { Elementwise.activation(kind, x: $0, y: $1, count: x.count) }
            var dz = [Float](repeating: 0, count: x.count)
            Elementwise.activationBackward(kind, z: x, a: a, da: dy, dz: &dz, count: x.count)
            return dz
        })
    }

    @Test func softmax() {
        let (r, c) = (3, 18)
        let x = randomFloats(r * c, seed: 6, scale: 2)
        checkGradient(x: x, outputs: r * c, forward: { x in
            apply(x, count: x.count) { Softmax.forward($0, $1, rows: r, cols: c) }
        }, backward: { x, dy in
            let y = apply(x, count: x.count) { Softmax.forward($0, $1, rows: r, cols: c) }
            return apply(dy, count: x.count) { Softmax.backward(y: y, dy: $0, dx: $1, rows: r, cols: c) }
        })
    }

    @Test func logSoftmax() {
        let (r, c) = (3, 9)
        let x = randomFloats(r * c, seed: 7, scale: 2)
        checkGradient(x: x, outputs: r * c, forward: { x in
            apply(x, count: x.count) { Softmax.logForward($0, $1, rows: r, cols: c) }
        }, backward: { x, dy in
            let y = apply(x, count: x.count) { Softmax.logForward($0, $1, rows: r, cols: c) }
            return apply(dy, count: x.count) { Softmax.logBackward(y: y, dy: $0, dx: $1, rows: r, cols: c) }
        })
    }

    @Test func crossEntropy() {
        let (r, c) = (5, 11)
        let x = randomFloats(r * c, seed: 8, scale: 2)
        let targets: [Int32] = [0, 10, 3, 3, 7]
        func run(_ x: [Float], gradient: Bool) -> ([Float], [Float]) {
            var loss = [Float](repeating: 0, count: r), hit = loss, g = [Float](repeating: 0, count: r * c)
            targets.withUnsafeBufferPointer { t in
                g.withUnsafeMutableBufferPointer { gp in
                    Softmax.crossEntropy(logits: x, targets: t.baseAddress!, rows: r, cols: c, rowLoss: &loss, rowHit: &hit,
                                         gradient: gradient ? gp.baseAddress : nil, gradientScale: 1)
                }
            }
            return (loss, g)
        }
        checkGradient(x: x, outputs: r, forward: { run($0, gradient: false).0 }, backward: { x, w in
            let g = run(x, gradient: true).1
            return (0..<(r * c)).map { g[$0] * w[$0 / c] }
        })
    }

    @Test func embedding() {
        let (V, T, C, B) = (5, 3, 4, 2)
        let tokens: [Int32] = [1, 4, 1, 9, 0, 1, 1, 9] // (B, T+1); column T is a target, never read
        let x = randomFloats(V * C + T * C, seed: 9)
        checkGradient(x: x, outputs: B * T * C, forward: { x in
            apply(x, count: B * T * C) {
                Embedding.forward(tokens: tokens, tokenStride: T + 1, batch: B, length: T, tokenTable: $0,
                                  positionTable: $0 + V * C, out: $1, width: C)
            }
        }, backward: { _, dy in
            var d = [Float](repeating: 0, count: V * C + T * C)
            d.withUnsafeMutableBufferPointer { dp in
                Embedding.backward(tokens: tokens, tokenStride: T + 1, batch: B, length: T, dout: dy,
                                   dTokenTable: dp.baseAddress!, dPositionTable: dp.baseAddress! + V * C, width: C)
            }
            return d
        })
    }

    /// 21 columns: the separate column pass; 32: parameter gradients fused into the row pass.
    @Test(arguments: [21, 32])
    func layerNorm(cols c: Int) {
        let r = 3
        let x = randomFloats(r * c, seed: 10, scale: 2, offset: 1) + randomFloats(c, seed: 11, scale: 0.3, offset: 1)
            + randomFloats(c, seed: 12, scale: 0.3)
        func fwd(_ x: [Float]) -> ([Float], [Float], [Float]) {
            var mean = [Float](repeating: 0, count: r), rstd = mean
            let y = apply(x, count: r * c) {
                LayerNorm.forward(x: $0, gamma: $0 + r * c, beta: $0 + r * c + c, y: $1, mean: &mean, rstd: &rstd, rows: r, cols: c)
            }
            return (y, mean, rstd)
        }
        checkGradient(x: x, outputs: r * c, forward: { fwd($0).0 }, backward: { x, dy in
            let (_, mean, rstd) = fwd(x)
            var dx = [Float](repeating: 0, count: r * c), dg = [Float](repeating: 0, count: c), db = dg
            LayerNorm.backward(x: x, gamma: Array(x[(r * c)...]), mean: mean, rstd: rstd, dy: dy, dx: &dx, dgamma: &dg,
                               dbeta: &db, rows: r, cols: c, accumulate: false)
            return dx + dg + db
        })
    }

    @Test func causalSelfAttention() {
        // T = 37 spans two row blocks with a ragged tail; 2 heads of width 4.
        let s = Attention.Shape(batch: 2, length: 37, width: 8, heads: 2)
        let x = randomFloats(s.batch * s.length * 3 * s.width, seed: 13)
        let probsCount = s.batch * s.heads * s.length * s.length
        func fwd(_ x: [Float]) -> ([Float], [Float]) {
            var probs = [Float](repeating: 0, count: probsCount)
            let out = apply(x, count: s.batch * s.length * s.width) { Attention.forward(qkv: $0, out: $1, probs: &probs, s) }
            return (out, probs)
        }
        // A sample of inputs (q, k and v of both batches) keeps the debug-build check fast.
        let sample = Array(stride(from: 0, to: x.count, by: 7))
        checkGradient(x: x, outputs: s.batch * s.length * s.width, only: sample, forward: { fwd($0).0 }, backward: { x, dy in
            let probs = fwd(x).1
            var scratch = [Float](repeating: 0, count: probsCount)
            return apply(dy, count: x.count) { Attention.backward(qkv: x, probs: probs, dout: $0, dqkv: $1, scratch: &scratch, s) }
        })
    }

    @Test func geluWithDerivativeMatchesTheSeparateKernels() {
        let x = randomFloats(37, seed: 18, scale: 2)
        var z = x
        var a = [Float](repeating: 0, count: x.count)
        Elementwise.geluWithDerivative(z: &z, a: &a, count: x.count)
        let y = apply(x, count: x.count) { Elementwise.activation(.gelu, x: $0, y: $1, count: x.count) }
        var d = [Float](repeating: 0, count: x.count)
        Elementwise.activationBackward(.gelu, z: x, a: y, da: [Float](repeating: 1, count: x.count), dz: &d, count: x.count)
        #expect(worstError(a, y, atol: 1e-6, rtol: 1e-5) <= 1)
        #expect(worstError(z, d, atol: 1e-6, rtol: 1e-5) <= 1)
    }

    @Test func dropout() {
        let n = 40
        let x = randomFloats(n, seed: 14)
        func fwd(_ x: [Float]) -> ([Float], [Float]) {
            var mask = [Float](repeating: 0, count: n)
            let y = apply(x, count: n) { Elementwise.dropout(x: $0, y: $1, mask: &mask, count: n, p: 0.3, seed: 99, stream: 1) }
            return (y, mask)
        }
        let mask = fwd(x).1
        #expect(mask.contains(0) && mask.contains { abs($0 - 1 / 0.7) < 1e-6 }, "mask keeps and drops")
        checkGradient(x: x, outputs: n, forward: { fwd($0).0 }, backward: { x, dy in
            apply(dy, count: n) { Elementwise.multiply($0, fwd(x).1, into: $1, count: n) }
        })
    }

    @Test func transposeAndSwapAxes() {
        let (r, c) = (3, 5)
        let x = randomFloats(r * c, seed: 15)
        checkGradient(x: x, outputs: r * c, forward: { x in
            apply(x, count: r * c) { Elementwise.transpose($0, rows: r, cols: c, into: $1) }
        }, backward: { _, dy in
            apply(dy, count: r * c) { Elementwise.transpose($0, rows: c, cols: r, into: $1) }
        })
        let (a, b, cc, d) = (2, 3, 4, 2)
        let y = randomFloats(a * b * cc * d, seed: 16)
        checkGradient(x: y, outputs: y.count, forward: { x in
            apply(x, count: x.count) { Elementwise.swapAxes12($0, a, b, cc, d, into: $1) }
        }, backward: { _, dy in
            apply(dy, count: dy.count) { Elementwise.swapAxes12($0, a, cc, b, d, into: $1) }
        })
    }

    @Test func reshapeIsAViewWithIdentityGradient() {
        let t = Tensor(randomFloats(12, seed: 17), shape: [3, 4])
        let r = t.reshaped([2, 6])
        #expect(r.storage === t.storage && r.scalars == t.scalars)
        r[1, 0] = 42
        #expect(t[1, 2] == 42, "a reshape writes through to its source")
    }
}

/// Whole-model gradients: forwardBackward's flat gradient against finite differences of the
/// batch-mean loss, on a sample of parameters from every tensor (h = 1e-2; tolerance
/// 2e-3 + 2e-2·|numeric|, the loss being a Float mean).
struct ModelGradientTests {
    func check(_ model: Model, _ batch: Batch, seed: UInt64) throws {
        model.zeroGradients()
        _ = try model.forwardBackward(batch, dropoutSeed: seed)
        let analytic = model.gradients.toArray()
        var worst = 0.0, worstName = ""
        for info in model.parameterTable {
            for j in Set([0, info.count / 2, info.count - 1, info.count / 3]) {
                let i = info.offset + j
                let saved = model.parameters[i]
                let h: Float = 1e-2
                model.parameters[i] = saved + h
                let lp = Double(try model.forwardBackward(batch, dropoutSeed: seed).loss)
                model.parameters[i] = saved - h
                let lm = Double(try model.forwardBackward(batch, dropoutSeed: seed).loss)
                model.parameters[i] = saved
                let numeric = (lp - lm) / Double(2 * h)
                let err = abs(Double(analytic[i]) - numeric) / (2e-3 + 2e-2 * abs(numeric))
                if err > worst { worst = err; worstName = "\(info.name)[\(j)]: analytic \(analytic[i]) numeric \(numeric)" }
            }
        }
        #expect(worst <= 1, "\(worstName)")
    }

    @Test(arguments: [ModelDescription.Activation.relu, .gelu, .tanh])
    func mlp(_ activation: ModelDescription.Activation) throws {
        let model = try Model(.mlp(.init(inputs: 5, hidden: [7, 6], classes: 4, activation: activation)), seed: 3)
        let batch = Batch.classification(features: randomFloats(6 * 5, seed: 4), width: 5, labels: [0, 1, 2, 3, 1, 2])
        try check(model, batch, seed: 0)
    }

    /// Width 16 without dropout takes the fused bias-gradient paths; width 8 with dropout the
    /// separate passes.
    @Test(arguments: [(Float(0), 16), (Float(0.2), 8)])
    func transformer(dropout: Float, width: Int) throws {
        let d = ModelDescription.Transformer(vocabulary: 9, context: 8, width: width, layers: 2, heads: 2, dropout: dropout)
        let model = try Model(.transformer(d), seed: 5)
        // Larger weights than the GPT init so every path carries signal.
        for i in 0..<model.parameterCount { model.parameters[i] *= 3 }
        var rng = Xoshiro256(seed: 6)
        let tokens = (0..<(3 * 7)).map { _ in Int32(rng.next() % 9) }
        try check(model, .sequences(tokens: tokens, length: 6), seed: 42)
    }
}
