/// Layer normalisation over the last axis: y = (x − mean)·rstd·γ + β, rstd = 1/√(var + ε),
/// biased variance (as PyTorch's `nn.LayerNorm`, ε = 1e-5).
enum LayerNorm {
    static let epsilon: Float = 1e-5

    /// x, y (rows,cols); γ, β (cols); mean, rstd (rows) are saved for the backward.
    static func forward(x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                        y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                        rows: Int, cols: Int) {
        let xs = SharedPointer(x), gs = SharedPointer(gamma), bs = SharedPointer(beta)
        let ys = SharedPointer(y), ms = SharedPointer(mean), rs = SharedPointer(rstd)
        let full = cols & ~15
        Parallel.forEach(rows, chunk: Elementwise.rowChunk(cols)) { range in
            for r in range {
                let xr = xs.p + r * cols, yr = ys.p + r * cols
                var acc = F16()
                var c = 0
                while c < full { acc += load16(xr + c); c += 16 }
                var sum = hsum(acc)
                while c < cols { sum += xr[c]; c += 1 }
                let mu = sum / Float(cols)
                var acc2 = F16()
                c = 0
                while c < full { let d = load16(xr + c) - mu; acc2 += d * d; c += 16 }
                var sq = hsum(acc2)
                while c < cols { let d = xr[c] - mu; sq += d * d; c += 1 }
                let rsd = 1 / (sq / Float(cols) + epsilon).squareRoot()
                ms.p[r] = mu
                rs.p[r] = rsd
                c = 0
                while c < full {
                    store16((load16(xr + c) - mu) * rsd * load16(gs.p + c) + load16(bs.p + c), yr + c)
                    c += 16
                }
                while c < cols { yr[c] = (xr[c] - mu) * rsd * gs.p[c] + bs.p[c]; c += 1 }
            }
        }
    }

    /// dx (rows,cols) (+)= rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂⊙x̂)), dx̂ = dy⊙γ; dγ += Σ dy⊙x̂;
    /// dβ += Σ dy. `accumulate` adds into dx (a residual stream) instead of overwriting it.
    /// `resultColumnSum` (cols) += Σ_r dx[r] of the final dx: the bias gradient of the branch that
    /// consumes this residual gradient next, fused into this pass when running serially.
    static func backward(x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                         rstd: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                         dgamma: UnsafeMutablePointer<Float>, dbeta: UnsafeMutablePointer<Float>,
                         rows: Int, cols: Int, accumulate: Bool, resultColumnSum: UnsafeMutablePointer<Float>? = nil) {
        let xs = SharedPointer(x), gs = SharedPointer(gamma), ms = SharedPointer(mean), rs = SharedPointer(rstd)
        let dys = SharedPointer(dy), dxs = SharedPointer(dx)
        let full = cols & ~15
        let invN = 1 / Float(cols)
        // Serially (one thread, whole vectors) the parameter gradients ride along in the row pass;
        // otherwise they get their own column-parallel pass below.
        let fused = Parallel.threads == 1 && full == cols
        let dgs = SharedPointer(dgamma), dbs = SharedPointer(dbeta)
        let rcs = resultColumnSum.map(SharedPointer.init)
        Parallel.forEach(rows, chunk: Elementwise.rowChunk(cols)) { range in
            for r in range {
                let xr = xs.p + r * cols, dyr = dys.p + r * cols, dxr = dxs.p + r * cols
                let mu = ms.p[r], rsd = rs.p[r]
                var a1 = F16(), a2 = F16()
                var c = 0
                while c < full {
                    let xh = (load16(xr + c) - mu) * rsd
                    let dxh = load16(dyr + c) * load16(gs.p + c)
                    a1 += dxh; a2 += dxh * xh
                    c += 16
                }
                var s1 = hsum(a1), s2 = hsum(a2)
                while c < cols {
                    let xh = (xr[c] - mu) * rsd, dxh = dyr[c] * gs.p[c]
                    s1 += dxh; s2 += dxh * xh
                    c += 1
                }
                let m1 = s1 * invN, m2 = s2 * invN
                c = 0
                while c < full {
                    let xh = (load16(xr + c) - mu) * rsd
                    let dxh = load16(dyr + c) * load16(gs.p + c)
                    var v = (dxh - m1 - xh * m2) * rsd
                    if accumulate { v += load16(dxr + c) }
                    store16(v, dxr + c)
                    if fused {
                        if let rcs { store16(load16(rcs.p + c) + v, rcs.p + c) }
                        let d = load16(dyr + c)
                        store16(load16(dgs.p + c) + d * xh, dgs.p + c)
                        store16(load16(dbs.p + c) + d, dbs.p + c)
                    }
                    c += 16
                }
                while c < cols {
                    let xh = (xr[c] - mu) * rsd, dxh = dyr[c] * gs.p[c]
                    let v = (dxh - m1 - xh * m2) * rsd
                    dxr[c] = accumulate ? dxr[c] + v : v
                    c += 1
                }
            }
        }
        if fused { return }
        if let resultColumnSum { Elementwise.columnSum(dx, rows: rows, cols: cols, into: resultColumnSum) }
        // Parameter gradients: columns in blocks across threads, rows summed in order.
        Parallel.forEach((cols + 15) / 16, chunk: 1) { range in
            for blk in range {
                let c = blk * 16, n = min(16, cols - c)
                var ag = F16(), ab = F16()
                for r in 0..<rows {
                    let xh = ((n == 16 ? load16(xs.p + r * cols + c) : loadPartial(xs.p + r * cols + c, n)) - ms.p[r]) * rs.p[r]
                    let d = n == 16 ? load16(dys.p + r * cols + c) : loadPartial(dys.p + r * cols + c, n)
                    ag += d * xh; ab += d
                }
                if n == 16 {
                    store16(load16(dgs.p + c) + ag, dgs.p + c); store16(load16(dbs.p + c) + ab, dbs.p + c)
                } else {
                    storePartial(loadPartial(dgs.p + c, n) + ag, dgs.p + c, n)
                    storePartial(loadPartial(dbs.p + c, n) + ab, dbs.p + c, n)
                }
            }
        }
    }
}
