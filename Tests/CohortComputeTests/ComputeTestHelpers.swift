import Foundation
import Testing
import TestSupport
@testable import CohortCompute

/// The NumPy float64 references made by Tests/Fixtures/compute/make_fixtures.py.
enum Reference {
    static var json: [String: Any] {
        let url = TestSupport.packageRoot.appendingPathComponent("Tests/Fixtures/compute/reference.json")
        guard let data = try? Data(contentsOf: url),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return [:]
        }
        return obj
    }

    static func section(_ name: String) throws -> [String: Any] {
        try #require(json[name] as? [String: Any], "fixture section \(name) missing: run make_fixtures.py")
    }
}

extension Dictionary where Key == String, Value == Any {
    func floats(_ key: String) throws -> [Float] {
        try #require(self[key] as? [Double], "fixture key \(key)").map { Float($0) }
    }
    func doubles(_ key: String) throws -> [Double] { try #require(self[key] as? [Double], "fixture key \(key)") }
    func ints(_ key: String) throws -> [Int] { try #require(self[key] as? [Int], "fixture key \(key)") }
    func int(_ key: String) throws -> Int { try #require(self[key] as? Int, "fixture key \(key)") }
    func double(_ key: String) throws -> Double { try #require(self[key] as? Double, "fixture key \(key)") }
}

/// Largest |a − b| / (atol + rtol·|b|); ≤ 1 means within tolerance.
func worstError(_ a: [Float], _ b: [Double], atol: Double, rtol: Double) -> Double {
    precondition(a.count == b.count, "sizes \(a.count) vs \(b.count)")
    var worst = 0.0
    for (x, y) in zip(a, b) { worst = max(worst, abs(Double(x) - y) / (atol + rtol * abs(y))) }
    return worst
}

func worstError(_ a: [Float], _ b: [Float], atol: Double, rtol: Double) -> Double {
    worstError(a, b.map(Double.init), atol: atol, rtol: rtol)
}

/// Calls `body` with a read pointer to `x` and a write pointer to a fresh `count`-element output.
func apply(_ x: [Float], count: Int, _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> [Float] {
    var out = [Float](repeating: 0, count: count)
    x.withUnsafeBufferPointer { xs in out.withUnsafeMutableBufferPointer { os in body(xs.baseAddress!, os.baseAddress!) } }
    return out
}

/// Deterministic test data.
func randomFloats(_ n: Int, seed: UInt64, scale: Float = 1, offset: Float = 0) -> [Float] {
    var rng = Xoshiro256(seed: seed)
    return (0..<n).map { _ in Float(rng.nextNormal()) * scale + offset }
}

/// Gradient check: the analytic `backward(x, w)` (which must return dL/dx for L = Σ w ⊙ f(x))
/// against central differences (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h, with L summed in Float64.
/// Passes when |analytic − numeric| ≤ atol + rtol·|numeric| for every input.
func checkGradient(x: [Float], outputs: Int, h: Float = 3e-3, atol: Double = 1e-3, rtol: Double = 1e-2,
                   seed: UInt64 = 7, only indices: [Int]? = nil,
                   forward: ([Float]) -> [Float], backward: ([Float], [Float]) -> [Float],
                   sourceLocation: SourceLocation = #_sourceLocation) {
    let w = randomFloats(outputs, seed: seed)
    func loss(_ x: [Float]) -> Double {
        let y = forward(x)
        var s = 0.0
        for i in 0..<outputs { s += Double(w[i]) * Double(y[i]) }
        return s
    }
    let analytic = backward(x, w)
    #expect(analytic.count == x.count, sourceLocation: sourceLocation)
    var worst = 0.0, worstAt = -1, worstValues = (0.0, 0.0)
    for i in indices ?? Array(0..<x.count) {
        var xp = x, xm = x
        xp[i] += h; xm[i] -= h
        // The actual step after Float rounding.
        let step = Double(xp[i]) - Double(xm[i])
        let numeric = (loss(xp) - loss(xm)) / step
        let err = abs(Double(analytic[i]) - numeric) / (atol + rtol * abs(numeric))
        if err > worst { worst = err; worstAt = i; worstValues = (Double(analytic[i]), numeric) }
    }
    #expect(worst <= 1, "gradient mismatch at input \(worstAt): analytic \(worstValues.0), numeric \(worstValues.1)",
            sourceLocation: sourceLocation)
}
