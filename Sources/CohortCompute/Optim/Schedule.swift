import Foundation

/// A learning-rate schedule, queried by 0-based step index.
public enum LearningRateSchedule: Sendable, Hashable, Codable {
    case constant(Float)
    /// Linear warm-up from peak/warmupSteps to `peak` over steps 0..<warmupSteps
    /// (lr(s) = peak·(s+1)/warmupSteps), then cosine decay from `peak` to `minimum` over the
    /// remaining steps up to `totalSteps`; `minimum` after that.
    case warmupCosine(peak: Float, minimum: Float, warmupSteps: Int, totalSteps: Int)

    public func learningRate(at step: Int) -> Float {
        switch self {
        case let .constant(lr):
            return lr
        case let .warmupCosine(peak, minimum, warmup, total):
            if step < warmup { return peak * Float(step + 1) / Float(warmup) }
            let span = total - warmup
            if span <= 0 { return minimum }
            let progress = min(1, Double(step - warmup) / Double(span))
            return minimum + Float(0.5 * (1 + cos(Double.pi * progress))) * (peak - minimum)
        }
    }
}

/// Global-norm gradient clipping over a flat gradient (or the sum of its shards' squares).
public enum GradientClipping {
    /// Σ g² over `values`, accumulated in Double (shards' sums add up to the global one).
    public static func sumOfSquares(_ values: UnsafeBufferPointer<Float>) -> Double {
        guard let g = values.baseAddress else { return 0 }
        var total = 0.0
        var i = 0
        let n = values.count
        // Float SIMD partial sums over blocks of 4096, flushed to Double: fast and accurate.
        while i < n {
            let end = min(i + 4096, n)
            var acc = F16()
            while i + 16 <= end { let v = load16(g + i); acc += v * v; i += 16 }
            var s = Double(hsum(acc))
            while i < end { s += Double(g[i]) * Double(g[i]); i += 1 }
            total += s
        }
        return total
    }

    /// The L2 norm of `values`.
    public static func norm(_ values: UnsafeBufferPointer<Float>) -> Float {
        Float(sumOfSquares(values).squareRoot())
    }

    /// The factor that brings a gradient of norm `norm` down to `maxNorm` (1 if already within;
    /// PyTorch's `clip_grad_norm_`: maxNorm / (norm + 1e-6)).
    public static func scale(norm: Float, maxNorm: Float) -> Float {
        let s = maxNorm / (norm + 1e-6)
        return s < 1 ? s : 1
    }

    /// Scales `gradients` in place so that its global norm is at most `maxNorm`; returns the
    /// norm before clipping.
    @discardableResult
    public static func clip(_ gradients: UnsafeMutableBufferPointer<Float>, maxNorm: Float) -> Float {
        let n = norm(UnsafeBufferPointer(gradients))
        let s = scale(norm: n, maxNorm: maxNorm)
        if s < 1, let g = gradients.baseAddress {
            for i in 0..<gradients.count { g[i] *= s }
        }
        return n
    }
}
