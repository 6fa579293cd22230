import Foundation

/// Row-wise softmax, log-softmax and the fused cross-entropy. Each row is reduced in a fixed order
/// (SIMD16 lanes, then pairwise), so results do not depend on the thread split.
enum Softmax {
    /// max of row[0..<n].
    @inline(__always)
    static func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m = F16(repeating: -.infinity)
        var c = 0
        while c + 16 <= n { m = vmax(m, load16(x + c)); c += 16 }
        if c < n { m = vmax(m, loadPartial(x + c, n - c, pad: -.infinity)) }
        return hmax(m)
    }

    /// y[c] = e^(x[c] − mx) for c < n; returns Σ y in a fixed order. `y` may alias `x`.
    @inline(__always)
    /// With `base2` the row holds x·log₂e and y = 2^(x − mx).
    static func expRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, minus mx: Float,
                       base2: Bool = false) -> Float {
        var s = F16()
        var c = 0
        while c + 16 <= n {
            let v = load16(x + c) - mx
            let e = base2 ? vexp2(v) : vexp(v)
            store16(e, y + c); s += e; c += 16
        }
        var sum = hsum(s)
        if c < n {
            let v = loadPartial(x + c, n - c) - mx
            let e = base2 ? vexp2(v) : vexp(v)
            storePartial(e, y + c, n - c)
            for i in 0..<(n - c) { sum += e[i] }
        }
        return sum
    }

    /// y[c] *= s for c < n.
    @inline(__always)
    static func scaleRow(_ y: UnsafeMutablePointer<Float>, _ n: Int, by s: Float) {
        var c = 0
        while c + 16 <= n { store16(load16(y + c) * s, y + c); c += 16 }
        while c < n { y[c] *= s; c += 1 }
    }

    /// (max, Σ e^(x−max)) of one row, without storing the exponentials.
    @inline(__always)
    static func rowStats(_ x: UnsafePointer<Float>, _ n: Int) -> (max: Float, sum: Float) {
        let mx = rowMax(x, n)
        var s = F16()
        var c = 0
        while c + 16 <= n { s += vexp(load16(x + c) - mx); c += 16 }
        var sum = hsum(s)
        if c < n {
            let e = vexp(loadPartial(x + c, n - c) - mx)
            for i in 0..<(n - c) { sum += e[i] }
        }
        return (mx, sum)
    }

    /// y (rows,cols) = softmax(x) along each row. `y` may alias `x`.
    static func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        let xs = SharedPointer(x), ys = SharedPointer(y)
        Parallel.forEach(rows, chunk: Elementwise.rowChunk(cols)) { range in
            for r in range {
                let xr = xs.p + r * cols, yr = ys.p + r * cols
                let sum = expRow(xr, yr, cols, minus: rowMax(xr, cols))
                scaleRow(yr, cols, by: 1 / sum)
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
                let xt = xr[t]
                let bestValue = rowMax(xr, cols)
                var best = 0
                while best < cols - 1 && xr[best] != bestValue { best += 1 } // the first maximum
                hitS.p[r] = best == t ? 1 : 0
                if let g = gs {
                    // The gradient may overwrite the logits: everything read from them is read above.
                    let gr = g.p + r * cols
                    let s = expRow(xr, gr, cols, minus: bestValue)
                    lossS.p[r] = bestValue + logf(s) - xt
                    scaleRow(gr, cols, by: gradientScale / s)
                    gr[t] -= gradientScale
                } else {
                    var sum = F16()
                    var c = 0
                    while c + 16 <= cols { sum += vexp(load16(xr + c) - bestValue); c += 16 }
                    var s = hsum(sum)
                    while c < cols { s += expf(xr[c] - bestValue); c += 1 }
                    lossS.p[r] = bestValue + logf(s) - xt
                }
            }
        }
    }

    struct TargetPointer: @unchecked Sendable { let p: UnsafePointer<Int32> }
}
