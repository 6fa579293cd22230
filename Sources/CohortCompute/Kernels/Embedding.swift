/// Token and position embeddings.
enum Embedding {
    /// out (B·T, C) = tokenTable[tokens[b,t]] + positionTable[t]; tokens are read from a (B, T+1)
    /// array with row stride `tokenStride` (the batch's layout), inputs are columns 0..<T.
    static func forward(tokens: UnsafePointer<Int32>, tokenStride: Int, batch: Int, length: Int,
                        tokenTable: UnsafePointer<Float>, positionTable: UnsafePointer<Float>?,
                        out: UnsafeMutablePointer<Float>, width: Int) {
        for b in 0..<batch {
            for t in 0..<length {
                let tok = Int(tokens[b * tokenStride + t])
                let o = out + (b * length + t) * width
                let e = tokenTable + tok * width
                if let positionTable {
                    let p = positionTable + t * width
                    var c = 0
                    while c + 16 <= width { store16(load16(e + c) + load16(p + c), o + c); c += 16 }
                    while c < width { o[c] = e[c] + p[c]; c += 1 }
                } else {
                    o.update(from: e, count: width)
                }
            }
        }
    }

    /// dTokenTable[tokens[b,t]] += dout[b,t]; dPositionTable[t] += Σ_b dout[b,t]. In row order, so
    /// repeated tokens sum deterministically.
    static func backward(tokens: UnsafePointer<Int32>, tokenStride: Int, batch: Int, length: Int,
                         dout: UnsafePointer<Float>, dTokenTable: UnsafeMutablePointer<Float>,
                         dPositionTable: UnsafeMutablePointer<Float>?, width: Int) {
        for b in 0..<batch {
            for t in 0..<length {
                let tok = Int(tokens[b * tokenStride + t])
                let d = dout + (b * length + t) * width
                let e = dTokenTable + tok * width
                var c = 0
                while c + 16 <= width { store16(load16(e + c) + load16(d + c), e + c); c += 16 }
                while c < width { e[c] += d[c]; c += 1 }
                if let dPositionTable {
                    let p = dPositionTable + t * width
                    c = 0
                    while c + 16 <= width { store16(load16(p + c) + load16(d + c), p + c); c += 16 }
                    while c < width { p[c] += d[c]; c += 1 }
                }
            }
        }
    }
}
