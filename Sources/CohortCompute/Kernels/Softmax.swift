import Foundation

/// Row-wise softmax, log-softmax and the fused cross-entropy. Each row is reduced in a fixed order
/// (SIMD16 lanes, then pairwise), so results do not depend on the thread split.
enum Softmax {
    /// (max, Σ e^(x−max)) of one row.
    @inline(__always)
    static func rowStats(_ x: UnsafePointer<Float>, _ n: Int) -> (max: Float, sum: Float) {
        var m = F16(repeating: -.infinity)
        var c = 0
        while c + 16 <= n { m = vmax(m, load16(x + c)); c += 16 }
        if c < n { m = vmax(m, loadPartial(x + c, n - c, pad: -.infinity)) }
        let mx = hmax(m)
        var s = F16()
        c = 0
        while c + 16 <= n { s += vexp(load16(x + c) - mx); c += 16 }
        if c < n {
            let e = vexp(loadPartial(x + c, n - c) - mx)
            s += e.replacing(with: 0, where: SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) .>= SIMD16<Int32>(repeating: Int32(n - c)))
        }
        return (mx, hsum(s))
    }

    /// y (rows,cols) = softmax(x) along each row. `y` may alias `x`.
    static func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        let xs = SharedPointer(x), ys = SharedPointer(y)
        Parallel.forEach(rows, chunk: Elementwise.rowChunk(cols)) { range in
            for r in range {
                let xr = xs.p + r * cols, yr = ys.p + r * cols
                let (mx, s) = rowStats(xr, cols)
                let inv = 1 / s
                var c = 0
                while c < cols {
                    let n = min(16, cols - c)
                    let e = vexp((n == 16 ? load16(xr + c) : loadPartial(xr + c, n)) - mx) * inv
                    if n == 16 { store16(e, yr + c) } else { storePartial(e, yr + c, n) }
                    c += 16
                }
            }
        }
    }

    /// dx = y ⊙ (dy − Σ_c dy⊙y), y = softmax(x).
    static func backward(y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let o = r * cols
            var dot: Float = 0
            for c in 0..<cols { dot += dy[o + c] * y[o + c] }
            for c in 0..<cols { dx[o + c] = y[o + c] * (dy[o + c] - dot) }
        }
    }

    /// y (rows,cols) = x − logΣe^x along each row.
    static func logForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let (mx, s) = rowStats(x + r * cols, cols)
            let lse = mx + logf(s)
            for c in 0..<cols { y[r * cols + c] = x[r * cols + c] - lse }
        }
    }

    /// dx = dy − e^y · Σ_c dy, y = log-softmax(x).
    static func logBackward(y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let o = r * cols
            var s: Float = 0
            for c in 0..<cols { s += dy[o + c] }
            for c in 0..<cols { dx[o + c] = dy[o + c] - expf(y[o + c]) * s }
        }
    }

    /// Fused, numerically stable cross-entropy of logits (rows,cols) against `targets` (rows).
    /// Writes each row's loss (logΣe^x − x[target]) to `rowLoss` and 1/0 for a top-1 hit (the first
    /// maximum) to `rowHit`. When `gradient` is given it receives (softmax − onehot)·`gradientScale`
    /// and may alias `logits`.
    static func crossEntropy(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, rows: Int, cols: Int,
                             rowLoss: UnsafeMutablePointer<Float>, rowHit: UnsafeMutablePointer<Float>,
                             gradient: UnsafeMutablePointer<Float>?, gradientScale: Float) {
        let ls = SharedPointer(logits), lossS = SharedPointer(rowLoss), hitS = SharedPointer(rowHit)
        let gs = gradient.map(SharedPointer.init)
        let ts = TargetPointer(p: targets)
        Parallel.forEach(rows, chunk: Elementwise.rowChunk(cols)) { range in
            for r in range {
                let xr = ls.p + r * cols
                let t = Int(ts.p[r])
                let (mx, s) = rowStats(xr, cols)
                let xt = xr[t]
                lossS.p[r] = mx + logf(s) - xt
                var best = 0
                var bestValue = xr[0]
                for c in 1..<cols where xr[c] > bestValue { best = c; bestValue = xr[c] }
                hitS.p[r] = best == t ? 1 : 0
                if let g = gs {
                    let gr = g.p + r * cols
                    let scale = gradientScale / s
                    var c = 0
                    while c < cols {
                        let n = min(16, cols - c)
                        let e = vexp((n == 16 ? load16(xr + c) : loadPartial(xr + c, n)) - mx) * scale
                        if n == 16 { store16(e, gr + c) } else { storePartial(e, gr + c, n) }
                        c += 16
                    }
                    gr[t] -= gradientScale
                }
            }
        }
    }

    struct TargetPointer: @unchecked Sendable { let p: UnsafePointer<Int32> }
}
