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
/// Lane-wise max through compare + select: the stdlib's `pointwiseMax` is a scalar loop
/// (NaN rules per lane) and is not inlined, which made these kernels 5× slower.
@inline(__always) func vmax(_ a: F16, _ b: F16) -> F16 { a.replacing(with: b, where: a .< b) }

@inline(__always) func loadPartial(_ p: UnsafePointer<Float>, _ n: Int, pad: Float = 0) -> F16 {
    var v = F16(repeating: pad)
    for i in 0..<n { v[i] = p[i] }
    return v
}
@inline(__always) func storePartial(_ v: F16, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { p[i] = v[i] }
}

/// Transcendentals work on SIMD4 quarters: in the default x86-64 (SSE2) build a SIMD4 is one
/// register, so the polynomial stays in registers, where SIMD16 values (four registers each)
/// spilled and the exp was not inlined (3× slower).
typealias F4 = SIMD4<Float>

@inline(__always) func quarters(_ v: F16, _ f: (F4) -> F4) -> F16 {
    F16(lowHalf: SIMD8(lowHalf: f(v.lowHalf.lowHalf), highHalf: f(v.lowHalf.highHalf)),
        highHalf: SIMD8(lowHalf: f(v.highHalf.lowHalf), highHalf: f(v.highHalf.highHalf)))
}

@inline(__always) func quarters(_ v: F16, _ w: F16, _ f: (F4, F4) -> F4) -> F16 {
    F16(lowHalf: SIMD8(lowHalf: f(v.lowHalf.lowHalf, w.lowHalf.lowHalf), highHalf: f(v.lowHalf.highHalf, w.lowHalf.highHalf)),
        highHalf: SIMD8(lowHalf: f(v.highHalf.lowHalf, w.highHalf.lowHalf), highHalf: f(v.highHalf.highHalf, w.highHalf.highHalf)))
}

/// e^x for each lane, ~1 ulp on [-87, 88]; inputs are clamped to that range, so -inf gives
/// ~1e-38, not 0. Cody–Waite reduction x = n·ln2 + r, degree-6 Taylor polynomial for e^r,
/// 2^n built in the exponent bits.
@inline(__always) func vexp4(_ x: F4) -> F4 {
    let lo = F4(repeating: -87.3), hi = F4(repeating: 88.3)
    var xc = x.replacing(with: lo, where: x .< lo)
    xc = xc.replacing(with: hi, where: xc .> hi)
    let magic = F4(repeating: 12_582_912) // 1.5·2^23: adding it rounds to an integer
    let t = xc * 1.442_695_04 + magic
    let n = t - magic
    let r = xc - n * 0.693_145_751_953_125 - n * 1.428_606_765_330_187e-6
    var p = r * (1.0 / 720) + (1.0 / 120)
    p = p * r + (1.0 / 24)
    p = p * r + (1.0 / 6)
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let bits = unsafeBitCast(t, to: SIMD4<Int32>.self) &- 0x4B40_0000 &+ 127
    return p * unsafeBitCast(bits &<< 23, to: F4.self)
}

@inline(__always) func vexp(_ x: F16) -> F16 { quarters(x, vexp4) }

@inline(__always) func vexp2(_ x: F16) -> F16 { quarters(x, vexp2_4) }

/// 2^y for each lane, y clamped to [-126, 127]: y = n + r, |r| ≤ ½, degree-6 polynomial for 2^r.
/// For callers that fold log₂e into their own constants (GELU), saving the reduction's multiplies;
/// relative error grows to ~|y|·6e-8.
@inline(__always) func vexp2_4(_ y: F4) -> F4 {
    let lo = F4(repeating: -126), hi = F4(repeating: 127)
    var yc = y.replacing(with: lo, where: y .< lo)
    yc = yc.replacing(with: hi, where: yc .> hi)
    let magic = F4(repeating: 12_582_912)
    let t = yc + magic
    let r = yc - (t - magic)
    var p = r * 1.540_353_0e-4 + 1.333_355_8e-3
    p = p * r + 9.618_129e-3
    p = p * r + 5.550_411e-2
    p = p * r + 0.240_226_51
    p = p * r + 0.693_147_18
    p = p * r + 1
    let bits = unsafeBitCast(t, to: SIMD4<Int32>.self) &- 0x4B40_0000 &+ 127
    return p * unsafeBitCast(bits &<< 23, to: F4.self)
}

/// tanh for each lane through e^(-2|x|): tanh|x| = (1 − e)/(1 + e), sign restored.
@inline(__always) func vtanh4(_ x: F4) -> F4 {
    let neg = x .< 0
    let a = x.replacing(with: -x, where: neg)
    let e = vexp4(-2 * a)
    let t = (1 - e) / (1 + e)
    return t.replacing(with: -t, where: neg)
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
