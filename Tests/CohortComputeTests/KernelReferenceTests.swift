import Testing
@testable import CohortCompute

/// Forward values against float64 NumPy (Tests/Fixtures/compute/make_fixtures.py).
/// Tolerance: 2e-6 absolute + 2e-5 relative for element-wise kernels (the vector exp is ~1 ulp),
/// 1e-5 + 1e-4 for composite kernels.
struct KernelReferenceTests {
    @Test func activationsMatchNumPy() throws {
        let f = try Reference.section("activations")
        let x = try f.floats("x")
        for (kind, key) in [(Elementwise.Kind.relu, "relu"), (.gelu, "gelu"), (.tanh, "tanh")] {
            let y = apply(x, count: x.count) { Elementwise.activation(kind, x: $0, y: $1, count: x.count) }
            #expect(worstError(y, try f.doubles(key), atol: 2e-6, rtol: 2e-5) <= 1, "\(key)")
        }
    }

    @Test func softmaxAndLogSoftmaxMatchNumPy() throws {
        let f = try Reference.section("softmax")
        let x = try f.floats("x"), rows = try f.int("rows"), cols = try f.int("cols")
        let s = apply(x, count: x.count) { Softmax.forward($0, $1, rows: rows, cols: cols) }
        #expect(worstError(s, try f.doubles("softmax"), atol: 2e-7, rtol: 2e-5) <= 1)
        let l = apply(x, count: x.count) { Softmax.logForward($0, $1, rows: rows, cols: cols) }
        #expect(worstError(l, try f.doubles("logSoftmax"), atol: 2e-6, rtol: 2e-5) <= 1)
    }

    @Test func crossEntropyMatchesNumPy() throws {
        let f = try Reference.section("crossEntropy")
        let x = try f.floats("logits"), rows = try f.int("rows"), cols = try f.int("cols")
        let targets = try f.ints("targets").map(Int32.init)
        var loss = [Float](repeating: 0, count: rows), hit = loss
        var grad = [Float](repeating: 0, count: x.count)
        targets.withUnsafeBufferPointer { t in
            Softmax.crossEntropy(logits: x, targets: t.baseAddress!, rows: rows, cols: cols, rowLoss: &loss, rowHit: &hit,
                                 gradient: &grad, gradientScale: 1 / Float(rows))
        }
        #expect(worstError(loss, try f.doubles("rowLoss"), atol: 2e-6, rtol: 2e-5) <= 1)
        #expect(worstError(grad, try f.doubles("gradientMean"), atol: 1e-7, rtol: 2e-5) <= 1)
        #expect(hit.map(Int.init) == (try f.ints("hits")))
    }

    @Test func layerNormMatchesNumPy() throws {
        let f = try Reference.section("layerNorm")
        let x = try f.floats("x"), g = try f.floats("gamma"), b = try f.floats("beta")
        let rows = try f.int("rows"), cols = try f.int("cols")
        var mean = [Float](repeating: 0, count: rows), rstd = mean
        let y = apply(x, count: x.count) {
            LayerNorm.forward(x: $0, gamma: g, beta: b, y: $1, mean: &mean, rstd: &rstd, rows: rows, cols: cols)
        }
        #expect(worstError(y, try f.doubles("y"), atol: 1e-5, rtol: 1e-4) <= 1)
    }

    @Test func matmulMatchesNumPyForEveryTransposeCombination() throws {
        let f = try Reference.section("matmul")
        let a = try f.floats("a"), b = try f.floats("b"), m = try f.int("m"), k = try f.int("k"), n = try f.int("n")
        let expected = try f.doubles("c")
        let at = Tensor(a, shape: [m, k]).transposed().scalars // (K, M)
        let bt = Tensor(b, shape: [k, n]).transposed().scalars // (N, K)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            var c = [Float](repeating: 0, count: m * n)
            BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: ta ? at : a, lda: ta ? m : k,
                      b: tb ? bt : b, ldb: tb ? k : n, beta: 0, c: &c, ldc: n)
            #expect(worstError(c, expected, atol: 1e-5, rtol: 1e-5) <= 1, "transA \(ta) transB \(tb)")
        }
    }

    @Test func causalAttentionMatchesNumPy() throws {
        let f = try Reference.section("attention")
        let qkv = try f.floats("qkv")
        let s = Attention.Shape(batch: try f.int("batch"), length: try f.int("length"), width: try f.int("width"), heads: try f.int("heads"))
        var probs = [Float](repeating: 0, count: s.batch * s.heads * s.length * s.length)
        let out = apply(qkv, count: s.batch * s.length * s.width) { Attention.forward(qkv: $0, out: $1, probs: &probs, s) }
        #expect(worstError(out, try f.doubles("out"), atol: 1e-5, rtol: 1e-4) <= 1)
    }

    @Test func mlpLossMatchesNumPy() throws {
        let f = try Reference.section("mlp")
        let model = try Model(.mlp(.init(inputs: try f.int("inputs"), hidden: try f.ints("hidden"), classes: try f.int("classes"),
                                         activation: .tanh)), seed: 1)
        let p = try f.floats("parameters")
        try #require(p.count == model.parameterCount)
        model.parameters.copy(from: p)
        let batch = Batch.classification(features: try f.floats("features"), width: try f.int("inputs"),
                                         labels: try f.ints("labels").map(Int32.init))
        let e = try model.evaluate(batch)
        #expect(abs(e.lossSum - (try f.double("lossSum"))) <= 1e-5 * max(1, abs(e.lossSum)))
        #expect(e.correct == (try f.int("correct")))
        #expect(e.count == 7)
    }

    @Test func transformerLossMatchesNumPy() throws {
        let f = try Reference.section("transformer")
        let d = ModelDescription.Transformer(vocabulary: try f.int("vocabulary"), context: try f.int("context"),
                                             width: try f.int("width"), layers: try f.int("layers"), heads: try f.int("heads"))
        let model = try Model(.transformer(d), seed: 1)
        #expect(model.parameterTable.map(\.name) == (f["names"] as? [String]))
        let p = try f.floats("parameters")
        try #require(p.count == model.parameterCount)
        model.parameters.copy(from: p)
        let batch = Batch.sequences(tokens: try f.ints("tokens").map(Int32.init), length: try f.int("length"))
        let e = try model.evaluate(batch)
        #expect(abs(e.lossSum - (try f.double("lossSum"))) <= 1e-4 * max(1, abs(e.lossSum)))
        #expect(e.correct == (try f.int("correct")))
        #expect(e.count == (try f.int("count")))
    }
}
