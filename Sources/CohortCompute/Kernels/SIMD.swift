/// SIMD16 helpers shared by the element-wise kernels. Tails shorter than 16 go through the same
/// vector code on a zero-padded register, so an element's value never depends on its position.
typealias F16 = SIMD16<Float>

@inline(__always) func load16(_ p: UnsafePointer<Float>) -> F16 {
    UnsafeRawPointer(p).loadUnaligned(as: F16.self)
}
@inline(__always) func load16(_ p: UnsafeMutablePointer<Float>) -> F16 {
    UnsafeRawPointer(p).loadUnaligned(as: F16.self)
}
@inline(__always) func store16(_ v: F16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: F16.self)
}
/// Lane-wise max/min through compare + select: the stdlib's `pointwiseMax` is a scalar loop
/// (NaN rules per lane) and is not inlined, which made these kernels 5× slower.
@inline(__always) func vmax(_ a: F16, _ b: F16) -> F16 { a.replacing(with: b, where: a .< b) }
@inline(__always) func vmin(_ a: F16, _ b: F16) -> F16 { a.replacing(with: b, where: b .< a) }

@inline(__always) func loadPartial(_ p: UnsafePointer<Float>, _ n: Int, pad: Float = 0) -> F16 {
    var v = F16(repeating: pad)
    for i in 0..<n { v[i] = p[i] }
    return v
}
@inline(__always) func storePartial(_ v: F16, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { p[i] = v[i] }
}

/// e^x for each lane, ~1 ulp on [-87, 88]; inputs are clamped to that range, so -inf gives
/// ~1e-38, not 0. Cody–Waite reduction x = n·ln2 + r, degree-6 Taylor polynomial for e^r,
/// 2^n built in the exponent bits.
@inline(__always) func vexp(_ x: F16) -> F16 {
    let xc = vmin(vmax(x, F16(repeating: -87.3)), F16(repeating: 88.3))
    let magic = F16(repeating: 12_582_912) // 1.5·2^23: adding it rounds to an integer
    let t = xc * 1.442_695_04 + magic
    let n = t - magic
    let r = xc - n * 0.693_145_751_953_125 - n * 1.428_606_765_330_187e-6
    var p = r * (1.0 / 720) + (1.0 / 120)
    p = p * r + (1.0 / 24)
    p = p * r + (1.0 / 6)
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let bits = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127
    let scale = unsafeBitCast(bits &<< 23, to: F16.self)
    return p * scale
}

/// tanh for each lane through e^(-2|x|): tanh|x| = (1 − e)/(1 + e), sign restored.
@inline(__always) func vtanh(_ x: F16) -> F16 {
    let a = vmin(x.replacing(with: -x, where: x .< 0), F16(repeating: 20))
    let e = vexp(-2 * a)
    let t = (1 - e) / (1 + e)
    return t.replacing(with: -t, where: x .< 0)
}

/// Sum of lanes in a fixed order (pairwise), so reductions are reproducible.
@inline(__always) func hsum(_ v: F16) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

@inline(__always) func hmax(_ v: F16) -> Float {
    let a = v.lowHalf.replacing(with: v.highHalf, where: v.lowHalf .< v.highHalf)
    let b = a.lowHalf.replacing(with: a.highHalf, where: a.lowHalf .< a.highHalf)
    let c = b.lowHalf.replacing(with: b.highHalf, where: b.lowHalf .< b.highHalf)
    return max(c[0], c[1])
}
