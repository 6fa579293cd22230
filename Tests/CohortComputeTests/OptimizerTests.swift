import Testing
@testable import CohortCompute

/// Optimizer steps against numbers worked out by hand (PyTorch's update rules), shard-by-shard
/// stepping against whole-buffer stepping, schedules and clipping.
struct OptimizerTests {
    /// Runs `steps` updates of a single parameter starting at 1 with the given gradients.
    func run(_ opt: Optimizer, lr: Float, gradients: [Float]) -> [Float] {
        let p = FlatBuffer([1]), g = FlatBuffer(count: 1), s = opt.makeState(parameterCount: 1)
        var out: [Float] = []
        for (i, gi) in gradients.enumerated() {
            g[0] = gi
            opt.step(parameters: p, gradients: g, state: s, learningRate: lr, t: i + 1)
            out.append(p[0])
        }
        return out
    }

    @Test func sgdPlain() {
        // θ = 1 − 0.1·0.5 = 0.95, then 0.95 − 0.1·0.5 = 0.9
        #expect(run(.sgd(.init()), lr: 0.1, gradients: [0.5, 0.5]) == [0.95, 0.9])
    }

    @Test func sgdMomentum() {
        // buf = 0.5 → θ = 0.95; buf = 0.9·0.5 + 0.5 = 0.95 → θ = 0.95 − 0.095 = 0.855
        let r = run(.sgd(.init(momentum: 0.9)), lr: 0.1, gradients: [0.5, 0.5])
        #expect(abs(r[0] - 0.95) < 1e-6 && abs(r[1] - 0.855) < 1e-6, "\(r)")
    }

    @Test func sgdNesterov() {
        // buf = 0.5, step g + μ·buf = 0.95 → θ = 0.905; buf = 0.95, step 0.5 + 0.855 = 1.355 → θ = 0.7695
        let r = run(.sgd(.init(momentum: 0.9, nesterov: true)), lr: 0.1, gradients: [0.5, 0.5])
        #expect(abs(r[0] - 0.905) < 1e-6 && abs(r[1] - 0.7695) < 1e-6, "\(r)")
    }

    @Test func sgdWeightDecayIsCoupled() {
        // g' = 0.5 + 0.1·1 = 0.6 → θ = 1 − 0.06 = 0.94
        let r = run(.sgd(.init(weightDecay: 0.1)), lr: 0.1, gradients: [0.5])
        #expect(abs(r[0] - 0.94) < 1e-6, "\(r)")
    }

    @Test func adamWWithBiasCorrectionAndDecoupledDecay() {
        // t=1: m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25 → θ = 1·(1 − 0.1·0.01) − 0.1·0.5/0.5 = 0.899
        // t=2 (g = −0.25): m = 0.02, v = 0.00031225, m̂ = 0.02/0.19, v̂ = 0.00031225/0.001999
        //   θ = 0.899·0.999 − 0.1·m̂/(√v̂ + 1e-8) = 0.8714672987…
        let r = run(.adamW(.init(beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)), lr: 0.1, gradients: [0.5, -0.25])
        #expect(abs(r[0] - 0.899) < 1e-6 && abs(r[1] - 0.871_467_298_7) < 2e-6, "\(r)")
    }

    /// Also from each range's own gradient: a fused shard's gradient need not sit in a
    /// full-size buffer (the coordinator fuses fp32 shards in their frames).
    @Test(arguments: [Optimizer.sgd(.init(momentum: 0.9, nesterov: true, weightDecay: 0.01)), .sgd(.init()), .adamW(.init())])
    func shardsStepLikeTheWholeBuffer(_ opt: Optimizer) {
        let n = 1000
        let p0 = randomFloats(n, seed: 1), g = FlatBuffer(randomFloats(n, seed: 2))
        let whole = FlatBuffer(p0), sharded = FlatBuffer(p0), own = FlatBuffer(p0)
        let s1 = opt.makeState(parameterCount: n), s2 = opt.makeState(parameterCount: n), s3 = opt.makeState(parameterCount: n)
        for t in 1...3 {
            opt.step(parameters: whole, gradients: g, state: s1, learningRate: 0.01, t: t, gradientScale: 0.5)
            // Odd shard edges: the SIMD loop and its scalar tail must agree bit for bit.
            for range in [0..<333, 333..<334, 334..<1000] {
                opt.step(range: range, parameters: sharded, gradients: g, state: s2, learningRate: 0.01, t: t, gradientScale: 0.5)
                let slice = Array(g.toArray()[range]) // the range's gradient in a buffer of its own
                slice.withUnsafeBufferPointer {
                    opt.step(range: range, parameters: own.buffer, gradientOfRange: $0, state: s3.buffer, learningRate: 0.01, t: t, gradientScale: 0.5)
                }
            }
        }
        #expect(whole.toArray() == sharded.toArray())
        #expect(whole.toArray() == own.toArray())
        #expect(s1.toArray() == s2.toArray())
        #expect(s1.toArray() == s3.toArray())
        #expect(whole.toArray() != p0)
    }

    @Test func invalidSettingsThrow() {
        #expect(throws: ComputeError.self) { try Optimizer.sgd(.init(momentum: 1.5)).validate() }
        #expect(throws: ComputeError.self) { try Optimizer.sgd(.init(momentum: 0, nesterov: true)).validate() }
        #expect(throws: ComputeError.self) { try Optimizer.adamW(.init(beta2: 1)).validate() }
        #expect(throws: Never.self) { try Optimizer.adamW(.init()).validate() }
    }

    @Test func warmupCosineSchedule() {
        let s = LearningRateSchedule.warmupCosine(peak: 1, minimum: 0.1, warmupSteps: 10, totalSteps: 110)
        #expect(abs(s.learningRate(at: 0) - 0.1) < 1e-7)
        #expect(abs(s.learningRate(at: 4) - 0.5) < 1e-7)
        #expect(abs(s.learningRate(at: 9) - 1) < 1e-7)
        #expect(abs(s.learningRate(at: 10) - 1) < 1e-7)
        #expect(abs(s.learningRate(at: 60) - 0.55) < 1e-6) // halfway: 0.1 + 0.9·(1 + cos π/2)/2
        #expect(abs(s.learningRate(at: 35) - (0.1 + 0.45 * (1 + 0.707_106_78))) < 1e-6) // a quarter: cos π/4
        #expect(abs(s.learningRate(at: 110) - 0.1) < 1e-7)
        #expect(abs(s.learningRate(at: 500) - 0.1) < 1e-7)
        #expect(LearningRateSchedule.constant(0.3).learningRate(at: 1234) == 0.3)
    }

    @Test func globalNormClipping() {
        var g: [Float] = [3, 4]
        let norm = g.withUnsafeMutableBufferPointer { GradientClipping.clip($0, maxNorm: 1) }
        #expect(norm == 5)
        #expect(abs(g[0] - 0.6) < 1e-6 && abs(g[1] - 0.8) < 1e-6)
        var h: [Float] = [3, 4]
        _ = h.withUnsafeMutableBufferPointer { GradientClipping.clip($0, maxNorm: 10) }
        #expect(h == [3, 4], "within the limit: untouched")
        #expect(GradientClipping.scale(norm: 5, maxNorm: 10) == 1)
    }

    @Test func shardSumsOfSquaresAddUpToTheGlobalNorm() {
        let g = randomFloats(1001, seed: 3)
        let whole = g.withUnsafeBufferPointer { GradientClipping.sumOfSquares($0) }
        let parts = g.withUnsafeBufferPointer { b in
            GradientClipping.sumOfSquares(UnsafeBufferPointer(rebasing: b[0..<500]))
                + GradientClipping.sumOfSquares(UnsafeBufferPointer(rebasing: b[500...]))
        }
        let exact = g.reduce(0.0) { $0 + Double($1) * Double($1) }
        #expect(abs(whole - exact) <= 1e-5 * exact)
        #expect(abs(parts - exact) <= 1e-5 * exact)
    }

    /// AdamW's loop in C (one clone per vector width) gives the Swift loop's bits in p, m and v,
    /// at every length around the vector widths, for several steps, scales and settings.
    @Test(arguments: [Optimizer.AdamW(), .init(beta1: 0.8, beta2: 0.99, epsilon: 1e-6, weightDecay: 0.1)])
    func adamWKernelIsTheSwiftLoop(_ settings: Optimizer.AdamW) {
        for count in Array(0...40) + [255, 256, 257, 1000] {
            let seed = UInt64(4 * count)
            var g = randomFloats(count, seed: seed, scale: 2)
            var p = randomFloats(count, seed: seed + 1)
            var m = randomFloats(count, seed: seed + 2, scale: 0.05)
            var v = randomFloats(count, seed: seed + 3, scale: 0.1).map { $0 * $0 }
            // Element 1 stays at m = v = 0 (√0: the denominator is ε alone); element 2 starts at 0.
            if count > 2 { g[1] = 0; v[1] = 0; m[1] = 0; p[2] = 0 }
            for (t, scale) in [(1, Float(1)), (2, 0.37), (1000, 1)] {
                var (p1, m1, v1) = (p, m, v)
                var state = m + v
                p.withUnsafeMutableBufferPointer { pp in
                    g.withUnsafeBufferPointer { gg in
                        state.withUnsafeMutableBufferPointer { ss in
                            Optimizer.adamW(settings).step(range: 0..<count, parameters: pp, gradients: gg, state: ss,
                                                           learningRate: 0.01, t: t, gradientScale: scale)
                        }
                    }
                }
                p1.withUnsafeMutableBufferPointer { pp in
                    g.withUnsafeBufferPointer { gg in
                        m1.withUnsafeMutableBufferPointer { mm in
                            v1.withUnsafeMutableBufferPointer { vv in
                                if count > 0 {
                                    Optimizer.adamWStepReference(settings, p: pp.baseAddress!, g: gg.baseAddress!, m: mm.baseAddress!,
                                                                 v: vv.baseAddress!, count: count, lr: 0.01, t: t, scale: scale)
                                }
                            }
                        }
                    }
                }
                #expect(p.map(\.bitPattern) == p1.map(\.bitPattern), "p, count \(count), t \(t)")
                #expect(Array(state[0..<count]).map(\.bitPattern) == m1.map(\.bitPattern), "m, count \(count), t \(t)")
                #expect(Array(state[count...]).map(\.bitPattern) == v1.map(\.bitPattern), "v, count \(count), t \(t)")
                (m, v) = (Array(state[0..<count]), Array(state[count...]))
            }
        }
    }
}
