/// Element-wise kernels with their backward passes. All buffers are row-major Float32; rows are
/// split across threads in fixed chunks (see `Parallel`).
enum Elementwise {
    static let rowChunkElements = 16_384

    static func rowChunk(_ cols: Int) -> Int { max(1, rowChunkElements / max(cols, 1)) }

    // MARK: activations

    /// ReLU, GELU (tanh approximation, PyTorch's `approximate='tanh'`), tanh, or identity (`nil`).
    enum Kind: Sendable { case relu, gelu, tanh }


    /// y (n) = f(x): the activation alone.
    static func activation(_ kind: Kind, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count n: Int) {
        switch kind {
        case .relu: map(ReLU.self, x: x, y: y, count: n)
        case .gelu: map(GELU.self, x: x, y: y, count: n)
        case .tanh: map(Tanh.self, x: x, y: y, count: n)
        }
    }

    /// z (rows,cols) += bias (cols) when given; a (rows,cols) = f(z) when `kind` is given.
    static func biasActivation(_ kind: Kind?, z: UnsafeMutablePointer<Float>, a: UnsafeMutablePointer<Float>?,
                               bias: UnsafePointer<Float>?, rows: Int, cols: Int) {
        switch kind {
        case nil: biasMap(Identity.self, z: z, a: nil, bias: bias, rows: rows, cols: cols)
        case .relu?: biasMap(ReLU.self, z: z, a: a, bias: bias, rows: rows, cols: cols)
        case .gelu?: biasMap(GELU.self, z: z, a: a, bias: bias, rows: rows, cols: cols)
        case .tanh?: biasMap(Tanh.self, z: z, a: a, bias: bias, rows: rows, cols: cols)
        }
    }

    /// dz (n) = da ⊙ f'(z); `a` = f(z) (used by tanh). `dz` may alias `da` or `z`.
    static func activationBackward(_ kind: Kind, z: UnsafePointer<Float>, a: UnsafePointer<Float>,
                                   da: UnsafePointer<Float>, dz: UnsafeMutablePointer<Float>, count n: Int) {
        switch kind {
        case .relu: derivativeMap(ReLU.self, z: z, a: a, da: da, dz: dz, count: n)
        case .gelu: derivativeMap(GELU.self, z: z, a: a, da: da, dz: dz, count: n)
        case .tanh: derivativeMap(Tanh.self, z: z, a: a, da: da, dz: dz, count: n)
        }
    }

    /// a (n) = GELU(z) and, written over z, GELU'(z): the backward then needs one multiply,
    /// not a second exponential, and no extra buffer.
    static func geluWithDerivative(z: UnsafeMutablePointer<Float>, a: UnsafeMutablePointer<Float>, count n: Int) {
        let zs = SharedPointer(z), asp = SharedPointer(a)
        Parallel.forEach(n, chunk: rowChunkElements) { range in
            // One SIMD4 (one SSE register) at a time keeps the polynomial out of memory.
            var i = range.lowerBound
            while i + 4 <= range.upperBound {
                let (y, d) = GELU.valueAndDerivative(UnsafeRawPointer(zs.p + i).loadUnaligned(as: F4.self))
                UnsafeMutableRawPointer(asp.p + i).storeBytes(of: y, as: F4.self)
                UnsafeMutableRawPointer(zs.p + i).storeBytes(of: d, as: F4.self)
                i += 4
            }
            if i < range.upperBound {
                let k = range.upperBound - i
                let v = loadPartial(zs.p + i, k)
                let (y, d) = GELU.valueAndDerivative(v.lowHalf.lowHalf)
                for j in 0..<k { asp.p[i + j] = y[j]; zs.p[i + j] = d[j] }
            }
        }
    }

    // Loops generic over the activation type, so each is specialised with its function inlined
    // (closures passed down were not inlined, and the switch per vector cost 3×).

    private static func map<A: ActivationFunction>(_: A.Type, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count n: Int) {
        let xs = SharedPointer(x), ys = SharedPointer(y)
        Parallel.forEach(n, chunk: rowChunkElements) { range in
            var i = range.lowerBound
            while i + 16 <= range.upperBound { store16(quarters(load16(xs.p + i), A.f), ys.p + i); i += 16 }
            if i < range.upperBound {
                let k = range.upperBound - i
                storePartial(quarters(loadPartial(xs.p + i, k), A.f), ys.p + i, k)
            }
        }
    }

    private static func biasMap<A: ActivationFunction>(_: A.Type, z: UnsafeMutablePointer<Float>, a: UnsafeMutablePointer<Float>?,
                                                      bias: UnsafePointer<Float>?, rows: Int, cols: Int) {
        let zs = SharedPointer(z), asp = a.map(SharedPointer.init), bs = bias.map(SharedPointer.init)
        Parallel.forEach(rows, chunk: rowChunk(cols)) { range in
            for r in range {
                let zr = zs.p + r * cols
                var c = 0
                while c < cols {
                    let n = min(16, cols - c)
                    var v = n == 16 ? load16(zr + c) : loadPartial(zr + c, n)
                    if let b = bs {
                        v += n == 16 ? load16(b.p + c) : loadPartial(b.p + c, n)
                        if n == 16 { store16(v, zr + c) } else { storePartial(v, zr + c, n) }
                    }
                    if let ar = asp?.p {
                        let y = quarters(v, A.f)
                        if n == 16 { store16(y, ar + r * cols + c) } else { storePartial(y, ar + r * cols + c, n) }
                    }
                    c += 16
                }
            }
        }
    }

    private static func derivativeMap<A: ActivationFunction>(_: A.Type, z: UnsafePointer<Float>, a: UnsafePointer<Float>,
                                                            da: UnsafePointer<Float>, dz: UnsafeMutablePointer<Float>, count n: Int) {
        let zs = SharedPointer(z), asp = SharedPointer(a), das = SharedPointer(da), dzs = SharedPointer(dz)
        Parallel.forEach(n, chunk: rowChunkElements) { range in
            var i = range.lowerBound
            while i + 16 <= range.upperBound {
                store16(load16(das.p + i) * quarters(load16(zs.p + i), load16(asp.p + i), A.df), dzs.p + i)
                i += 16
            }
            if i < range.upperBound {
                let k = range.upperBound - i
                let d = quarters(loadPartial(zs.p + i, k), loadPartial(asp.p + i, k), A.df)
                storePartial(loadPartial(das.p + i, k) * d, dzs.p + i, k)
            }
        }
    }

    // MARK: broadcasting a bias, reductions

    /// out (cols) += Σ_r x (rows,cols)[r]: the gradient of a broadcast bias. Columns are split
    /// across threads; each column sums its rows in order.
    static func columnSum(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        let xs = SharedPointer(x), os = SharedPointer(out)
        let blocks = (cols + 63) / 64
        Parallel.forEach(blocks, chunk: 1) { range in
            for blk in range {
                let c0 = blk * 64, c1 = min(c0 + 64, cols)
                var c = c0
                while c < c1 {
                    let n = min(16, c1 - c)
                    var acc = F16()
                    for r in 0..<rows {
                        acc += n == 16 ? load16(xs.p + r * cols + c) : loadPartial(xs.p + r * cols + c, n)
                    }
                    if n == 16 { store16(load16(os.p + c) + acc, os.p + c) } else {
                        storePartial(loadPartial(os.p + c, n) + acc, os.p + c, n)
                    }
                    c += 16
                }
            }
        }
    }

    /// y (rows,cols) = x ⊙ g (cols), broadcast over rows.
    static func mulBias(x: UnsafePointer<Float>, g: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows { for c in 0..<cols { y[r * cols + c] = x[r * cols + c] * g[c] } }
    }

    /// Backward of `mulBias`: dx = dy ⊙ g; dg += Σ_r dy ⊙ x.
    static func mulBiasBackward(x: UnsafePointer<Float>, g: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>, dg: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows {
            for c in 0..<cols {
                dx[r * cols + c] = dy[r * cols + c] * g[c]
                dg[c] += dy[r * cols + c] * x[r * cols + c]
            }
        }
    }

    /// out (rows,cols) = residual + mask ⊙ (x + bias): a projection's bias, dropout and residual
    /// connection in one pass. `mask` may be nil (no dropout), `bias` nil (no bias).
    static func residualAdd(residual: UnsafePointer<Float>, x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                            mask: UnsafePointer<Float>?, out: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        let rs = SharedPointer(residual), xs = SharedPointer(x), os = SharedPointer(out)
        let bs = bias.map(SharedPointer.init), ms = mask.map(SharedPointer.init)
        Parallel.forEach(rows, chunk: rowChunk(cols)) { range in
            for r in range {
                let o = r * cols
                var c = 0
                while c < cols {
                    let n = min(16, cols - c)
                    var v = n == 16 ? load16(xs.p + o + c) : loadPartial(xs.p + o + c, n)
                    if let b = bs { v += n == 16 ? load16(b.p + c) : loadPartial(b.p + c, n) }
                    if let m = ms { v *= n == 16 ? load16(m.p + o + c) : loadPartial(m.p + o + c, n) }
                    v += n == 16 ? load16(rs.p + o + c) : loadPartial(rs.p + o + c, n)
                    if n == 16 { store16(v, os.p + o + c) } else { storePartial(v, os.p + o + c, n) }
                    c += 16
                }
            }
        }
    }

    /// y (n) = a ⊙ b (dy ⊙ mask for dropout's backward).
    static func multiply(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count n: Int) {
        let as_ = SharedPointer(a), bs = SharedPointer(b), ys = SharedPointer(y)
        Parallel.forEach(n, chunk: rowChunkElements) { range in
            var i = range.lowerBound
            while i + 16 <= range.upperBound { store16(load16(as_.p + i) * load16(bs.p + i), ys.p + i); i += 16 }
            while i < range.upperBound { ys.p[i] = as_.p[i] * bs.p[i]; i += 1 }
        }
    }

    /// out (rows,cols) = bias broadcast over rows (+ residual when given): the C operand of a
    /// GEMM run with beta = 1, so bias (and residual) cost no pass of their own and OpenBLAS
    /// skips its beta = 0 zeroing pass.
    static func broadcastRows(_ bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>,
                              rows: Int, cols: Int) {
        let bs = SharedPointer(bias), os = SharedPointer(out), rs = residual.map(SharedPointer.init)
        Parallel.forEach(rows, chunk: rowChunk(cols)) { range in
            for r in range {
                let o = os.p + r * cols
                if let rs {
                    let x = rs.p + r * cols
                    var c = 0
                    while c + 16 <= cols { store16(load16(x + c) + load16(bs.p + c), o + c); c += 16 }
                    while c < cols { o[c] = x[c] + bs.p[c]; c += 1 }
                } else {
                    o.update(from: bs.p, count: cols)
                }
            }
        }
    }

    /// y (n) += x (n).
    static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count n: Int) {
        let xs = SharedPointer(x), ys = SharedPointer(y)
        Parallel.forEach(n, chunk: Parallel.bulkChunk) { range in
            var i = range.lowerBound
            while i + 16 <= range.upperBound { store16(load16(ys.p + i) + load16(xs.p + i), ys.p + i); i += 16 }
            while i < range.upperBound { ys.p[i] += xs.p[i]; i += 1 }
        }
    }

    /// y (rows,cols) = a ⊙ b and colsum (cols) += Σ_r y[r]: the GELU backward and its bias
    /// gradient in one pass when this thread runs serially (else two parallel passes).
    static func multiplyAndColumnSum(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                                     rows: Int, cols: Int, columnSum out: UnsafeMutablePointer<Float>) {
        guard Parallel.threads == 1, cols % 16 == 0 else {
            multiply(a, b, into: y, count: rows * cols)
            columnSum(y, rows: rows, cols: cols, into: out)
            return
        }
        for r in 0..<rows {
            let o = r * cols
            var c = 0
            while c < cols {
                let v = load16(a + o + c) * load16(b + o + c)
                store16(v, y + o + c)
                store16(load16(out + c) + v, out + c)
                c += 16
            }
        }
    }

    // MARK: dropout

    /// mask (n) = 0 with probability p, else 1/(1−p), drawn from (seed, stream, index) so it does
    /// not depend on the thread split; y = x ⊙ mask. The backward is `multiply(dy, mask)`.
    /// `indexOffset` is the position of element 0 in the whole batch, so that a batch split across
    /// replicas draws the same mask as the whole.
    static func dropout(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>,
                        count n: Int, p: Float, seed: UInt64, stream: UInt64, indexOffset: Int = 0) {
        let keep = 1 / (1 - p)
        let xs = SharedPointer(x), ys = SharedPointer(y), ms = SharedPointer(mask)
        Parallel.forEach(n, chunk: rowChunkElements) { range in
            for i in range {
                let m: Float = counterUniform(seed: seed, stream: stream, index: UInt64(i + indexOffset)) < p ? 0 : keep
                ms.p[i] = m
                ys.p[i] = xs.p[i] * m
            }
        }
    }

    // MARK: layout

    /// y (cols,rows) = xᵀ for x (rows,cols). Its backward is the same op on dy with the sizes swapped.
    static func transpose(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into y: UnsafeMutablePointer<Float>) {
        let tile = 32
        var r0 = 0
        while r0 < rows {
            var c0 = 0
            while c0 < cols {
                for r in r0..<min(r0 + tile, rows) {
                    for c in c0..<min(c0 + tile, cols) { y[c * rows + r] = x[r * cols + c] }
                }
                c0 += tile
            }
            r0 += tile
        }
    }

    /// y (A,C,B,D) = x (A,B,C,D) with axes 1 and 2 swapped (splitting (B,T,H·D) into heads
    /// (B,H,T,D)). Its backward is the same op with B and C swapped.
    static func swapAxes12(_ x: UnsafePointer<Float>, _ a: Int, _ b: Int, _ c: Int, _ d: Int, into y: UnsafeMutablePointer<Float>) {
        for i in 0..<a {
            for j in 0..<b {
                for k in 0..<c {
                    (y + ((i * c + k) * b + j) * d).update(from: x + ((i * b + j) * c + k) * d, count: d)
                }
            }
        }
    }
}

/// An activation on one SIMD4 register: f(z) and f'(z) given z and a = f(z).
protocol ActivationFunction: SendableMetatype {
    static func f(_ z: F4) -> F4
    static func df(_ z: F4, _ a: F4) -> F4
}

enum Identity: ActivationFunction {
    @inline(__always) static func f(_ z: F4) -> F4 { z }
    @inline(__always) static func df(_ z: F4, _ a: F4) -> F4 { F4(repeating: 1) }
}

enum ReLU: ActivationFunction {
    @inline(__always) static func f(_ z: F4) -> F4 { z.replacing(with: 0, where: z .< 0) }
    @inline(__always) static func df(_ z: F4, _ a: F4) -> F4 { F4(repeating: 0).replacing(with: 1, where: z .> 0) }
}

enum Tanh: ActivationFunction {
    @inline(__always) static func f(_ z: F4) -> F4 { vtanh4(z) }
    @inline(__always) static func df(_ z: F4, _ a: F4) -> F4 { 1 - a * a }
}

/// GELU, tanh approximation (PyTorch's `approximate='tanh'`):
/// 0.5·z·(1 + tanh(u)) = z·σ(2u), u = √(2/π)(z + 0.044715 z³).
enum GELU: ActivationFunction {
    static let c: Float = 0.797_884_56 // √(2/π)
    static let k: Float = 0.044_715
    // e^(−2u) = 2^(z·(a + b·z²)) with a = −2·log₂e·c, b = a·k: constants folded into one exp2.
    static let a: Float = -2 * 1.442_695_04 * 0.797_884_56
    static let b: Float = -2 * 1.442_695_04 * 0.797_884_56 * 0.044_715
    // GELU'(z) = s + s(1 − s)·z·(2c + 6ck·z²), s = σ(2u)
    static let d0: Float = 2 * 0.797_884_56
    static let d1: Float = 6 * 0.797_884_56 * 0.044_715

    @inline(__always) static func sigmoid2u(_ z: F4, _ z2: F4) -> F4 {
        1 / (1 + vexp2_4(z * (z2 * b + a)))
    }

    @inline(__always) static func f(_ z: F4) -> F4 { z * sigmoid2u(z, z * z) }

    @inline(__always) static func df(_ z: F4, _ a: F4) -> F4 { valueAndDerivative(z).1 }

    @inline(__always) static func valueAndDerivative(_ z: F4) -> (F4, F4) {
        let z2 = z * z
        let s = sigmoid2u(z, z2)
        return (z * s, s + s * (1 - s) * z * (z2 * d1 + d0))
    }
}
