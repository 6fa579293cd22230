import CBLAS

/// Causal multi-head self-attention on a fused qkv projection, one SGEMM per head and row block.
///
/// qkv (B, T, 3C) holds q | k | v; head h of q is columns h·D..<(h+1)·D (D = C/H), addressed in
/// place with leading dimension 3C, so heads are never copied out. probs (B, H, T, T) keeps the
/// softmax for the backward. Causality is exploited by row blocks of `block` rows: block i only
/// multiplies against keys 0..<end(i), which skips most of the upper triangle.
enum Attention {
    static let block = 32

    struct Shape {
        let batch, length, width, heads: Int
        var headWidth: Int { width / heads }
        var scale: Float { 1 / Float(headWidth).squareRoot() }
    }

    /// out (B, T, C): head h at columns h·D..<(h+1)·D. probs (B, H, T, T) receives softmax(q kᵀ·scale)
    /// with zeros above the diagonal (within each row block).
    static func forward(qkv: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>, _ s: Shape) {
        let qs = SharedPointer(qkv), os = SharedPointer(out), ps = SharedPointer(probs)
        eachHead(s) { b, h in
            let T = s.length, C = s.width, D = s.headWidth, ld = 3 * C
            let q = qs.p + b * T * ld + h * D, k = q + C, v = q + 2 * C
            let p = ps.p + (b * s.heads + h) * T * T
            let o = os.p + b * T * C + h * D
            var r0 = 0
            while r0 < T {
                let r1 = min(r0 + block, T)
                // p[r0..<r1, 0..<r1] (r1−r0, r1) = q[r0..<r1] (r1−r0, D) · k[0..<r1]ᵀ (D, r1) · scale
                BLAS.gemm(transA: false, transB: true, m: r1 - r0, n: r1, k: D, alpha: s.scale * log2e,
                          a: q + r0 * ld, lda: ld, b: k, ldb: ld, beta: 0, c: p + r0 * T, ldc: T)
                for t in r0..<r1 { causalSoftmaxRow(p + t * T, valid: t + 1, stored: r1) }
                // o[r0..<r1] (r1−r0, D) = p[r0..<r1, 0..<r1] · v[0..<r1] (r1, D)
                BLAS.gemm(transA: false, transB: false, m: r1 - r0, n: D, k: r1,
                          a: p + r0 * T, lda: T, b: v, ldb: ld, beta: 0, c: o + r0 * C, ldc: C)
                r0 = r1
            }
        }
    }

    /// dqkv (B, T, 3C) = gradient of the loss w.r.t. qkv, given dout (B, T, C). `scratch` is
    /// (B, H, T, T) floats for dp/ds. dqkv is overwritten.
    static func backward(qkv: UnsafePointer<Float>, probs: UnsafePointer<Float>, dout: UnsafePointer<Float>,
                         dqkv: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, _ s: Shape) {
        let qs = SharedPointer(qkv), ps = SharedPointer(probs), dos = SharedPointer(dout)
        let dqs = SharedPointer(dqkv), ss = SharedPointer(scratch)
        eachHead(s) { b, h in
            let T = s.length, C = s.width, D = s.headWidth, ld = 3 * C
            let q = qs.p + b * T * ld + h * D, k = q + C, v = q + 2 * C
            let dq = dqs.p + b * T * ld + h * D, dk = dq + C, dv = dq + 2 * C
            let p = ps.p + (b * s.heads + h) * T * T
            let ds = ss.p + (b * s.heads + h) * T * T
            let dO = dos.p + b * T * C + h * D
            var r0 = 0
            while r0 < T {
                let r1 = min(r0 + block, T)
                // dp[r0..<r1, 0..<r1] = dO[r0..<r1] (r1−r0, D) · v[0..<r1]ᵀ (D, r1)
                BLAS.gemm(transA: false, transB: true, m: r1 - r0, n: r1, k: D,
                          a: dO + r0 * C, lda: C, b: v, ldb: ld, beta: 0, c: ds + r0 * T, ldc: T)
                // ds = p ⊙ (dp − Σ p⊙dp) · scale  (the softmax backward, scaled for q kᵀ·scale)
                for t in r0..<r1 { softmaxBackwardRow(p + t * T, ds + t * T, valid: t + 1, stored: r1, scale: s.scale) }
                // dq[r0..<r1] (r1−r0, D) = ds[r0..<r1, 0..<r1] · k[0..<r1] (r1, D)
                BLAS.gemm(transA: false, transB: false, m: r1 - r0, n: D, k: r1,
                          a: ds + r0 * T, lda: T, b: k, ldb: ld, beta: 0, c: dq + r0 * ld, ldc: ld)
                r0 = r1
            }
            var c0 = 0
            while c0 < T {
                let c1 = min(c0 + block, T)
                // Rows above c0 have zeros in columns c0..<c1, so only rows c0..<T contribute.
                // dk[c0..<c1] (c1−c0, D) = ds[c0..<T, c0..<c1]ᵀ · q[c0..<T] (T−c0, D)
                BLAS.gemm(transA: true, transB: false, m: c1 - c0, n: D, k: T - c0,
                          a: ds + c0 * T + c0, lda: T, b: q + c0 * ld, ldb: ld, beta: 0, c: dk + c0 * ld, ldc: ld)
                // dv[c0..<c1] (c1−c0, D) = p[c0..<T, c0..<c1]ᵀ · dO[c0..<T] (T−c0, D)
                BLAS.gemm(transA: true, transB: false, m: c1 - c0, n: D, k: T - c0,
                          a: p + c0 * T + c0, lda: T, b: dO + c0 * C, ldb: C, beta: 0, c: dv + c0 * ld, ldc: ld)
                c0 = c1
            }
        }
    }

    /// Runs `body(b, h)` for every (batch, head) pair. With more than one compute thread the
    /// pairs run in parallel with OpenBLAS held to one thread (its small GEMMs don't scale).
    @inline(__always)
    static func eachHead(_ s: Shape, _ body: @Sendable (Int, Int) -> Void) {
        let pairs = s.batch * s.heads
        let threads = Parallel.threads
        if threads > 1 && pairs > 1 {
            openblas_set_num_threads(1)
            Parallel.forEach(pairs, chunk: 1) { range in
                for i in range { body(i / s.heads, i % s.heads) }
            }
            openblas_set_num_threads(Int32(threads))
        } else {
            for i in 0..<pairs { body(i / s.heads, i % s.heads) }
        }
    }

    static let log2e: Float = 1.442_695_04
    static let lane = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

    /// Softmax of row[0..<valid]; zeros in row[valid..<stored]. The ragged end of the causal row
    /// is one masked vector (lanes past `valid` read as −∞) instead of a scalar tail.
    @inline(__always)
    static func causalSoftmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, stored: Int) {
        let full = valid & ~15
        let padded = full == valid ? full : full + 16
        guard padded <= stored else {
            let sum = Softmax.expRow(row, row, valid, minus: Softmax.rowMax(row, valid), base2: true)
            Softmax.scaleRow(row, valid, by: 1 / sum)
            if stored > valid { (row + valid).update(repeating: 0, count: stored - valid) }
            return
        }
        let outside = lane .>= SIMD16<Int32>(repeating: Int32(valid - full))
        var m = F16(repeating: -.infinity)
        var c = 0
        while c < full { m = vmax(m, load16(row + c)); c += 16 }
        if padded > full { m = vmax(m, load16(row + full).replacing(with: -.infinity, where: outside)) }
        let mx = hmax(m)
        var acc = F16()
        c = 0
        while c < full { let e = vexp2(load16(row + c) - mx); store16(e, row + c); acc += e; c += 16 }
        if padded > full {
            let e = vexp2(load16(row + full) - mx).replacing(with: 0, where: outside)
            store16(e, row + full); acc += e
        }
        let inv = 1 / hsum(acc)
        c = 0
        while c < padded { store16(load16(row + c) * inv, row + c); c += 16 }
        if stored > padded { (row + padded).update(repeating: 0, count: stored - padded) }
    }

    /// d[0..<valid] = p ⊙ (d − Σ p⊙d) · scale; zeros in d[valid..<stored]. p is zero past `valid`
    /// (see `causalSoftmaxRow`), so whole vectors up to the next multiple of 16 need no mask.
    @inline(__always)
    static func softmaxBackwardRow(_ p: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, valid: Int, stored: Int, scale: Float) {
        let padded = min((valid + 15) & ~15, stored)
        let full = padded & ~15
        var acc = F16()
        var c = 0
        while c < full { acc += load16(p + c) * load16(d + c); c += 16 }
        var dot = hsum(acc)
        while c < valid { dot += p[c] * d[c]; c += 1 }
        c = 0
        while c < full { store16(load16(p + c) * (load16(d + c) - dot) * scale, d + c); c += 16 }
        while c < valid { d[c] = p[c] * (d[c] - dot) * scale; c += 1 }
        let zeroFrom = max(c, valid)
        if stored > zeroFrom { (d + zeroFrom).update(repeating: 0, count: stored - zeroFrom) }
    }
}
