/// Timings of the element-wise kernels at the benchmark transformer's shapes, for
/// `cohort-bench-compute --kernels` (where does the non-GEMM time go).
@_spi(Benchmarks) public enum KernelBench {
    public static func run(clock: () -> Double) -> [(String, Double)] {
        let N = 4096, C = 128
        let a = FlatBuffer(count: N * 4 * C), b = FlatBuffer(count: N * 4 * C), c = FlatBuffer(count: N * 4 * C)
        for i in 0..<a.count { a[i] = Float(i % 97) * 0.01 - 0.5; b[i] = Float(i % 13) * 0.1 }
        let g = FlatBuffer(count: 4 * C), stats = FlatBuffer(count: N), stats2 = FlatBuffer(count: N)
        func time(_ name: String, _ body: () -> Void) -> (String, Double) {
            body()
            var best = Double.infinity
            for _ in 0..<5 { let t0 = clock(); body(); best = min(best, clock() - t0) }
            return (name, best)
        }
        let probs = FlatBuffer(count: 32 * 4 * 128 * 128)
        let s = Attention.Shape(batch: 32, length: 128, width: C, heads: 4)
        return [
            time("gelu+bias fwd (N,4C)") {
                Elementwise.biasActivation(.gelu, z: a.baseAddress, a: b.baseAddress, bias: g.baseAddress, rows: N, cols: 4 * C)
            },
            time("gelu+derivative (N,4C)") {
                Elementwise.geluWithDerivative(z: c.baseAddress, a: b.baseAddress, count: N * 4 * C)
            },
            time("same, 32×64K in cache") {
                for _ in 0..<32 { Elementwise.geluWithDerivative(z: c.baseAddress, a: b.baseAddress, count: 1 << 16) }
            },
            time("copy (N,4C)") { c.baseAddress.update(from: a.baseAddress, count: N * 4 * C) },
            time("gelu bwd (N,4C)") {
                Elementwise.activationBackward(.gelu, z: a.baseAddress, a: b.baseAddress, da: b.baseAddress, dz: c.baseAddress, count: N * 4 * C)
            },
            time("bias add (N,3C)") {
                Elementwise.biasActivation(nil, z: c.baseAddress, a: nil, bias: g.baseAddress, rows: N, cols: 3 * C)
            },
            time("columnSum (N,4C)") { Elementwise.columnSum(a.baseAddress, rows: N, cols: 4 * C, into: g.baseAddress) },
            time("layerNorm fwd (N,C)") {
                LayerNorm.forward(x: a.baseAddress, gamma: g.baseAddress, beta: g.baseAddress, y: b.baseAddress,
                                  mean: stats.baseAddress, rstd: stats2.baseAddress, rows: N, cols: C)
            },
            time("layerNorm bwd (N,C)") {
                LayerNorm.backward(x: a.baseAddress, gamma: g.baseAddress, mean: stats.baseAddress, rstd: stats2.baseAddress,
                                   dy: b.baseAddress, dx: c.baseAddress, dgamma: g.baseAddress, dbeta: g.baseAddress,
                                   rows: N, cols: C, accumulate: true)
            },
            time("residual add (N,C)") {
                Elementwise.residualAdd(residual: a.baseAddress, x: b.baseAddress, bias: g.baseAddress, mask: nil,
                                        out: c.baseAddress, rows: N, cols: C)
            },
            time("attention fwd (B32 H4 T128)") {
                Attention.forward(qkv: a.baseAddress, out: b.baseAddress, probs: probs.baseAddress, s)
            },
            time("attention bwd (B32 H4 T128)") {
                Attention.backward(qkv: a.baseAddress, probs: probs.baseAddress, dout: b.baseAddress, dqkv: c.baseAddress,
                                   scratch: probs.baseAddress, s)
            },
            time("cross-entropy (N,256)") {
                stats.baseAddress.withMemoryRebound(to: Int32.self, capacity: N) { t in
                    for i in 0..<N { t[i] = Int32(i % 256) }
                    Softmax.crossEntropy(logits: a.baseAddress, targets: t, rows: N, cols: 256, rowLoss: stats2.baseAddress,
                                         rowHit: c.baseAddress, gradient: b.baseAddress, gradientScale: 1)
                }
            },
        ]
    }
}
