internal import CKernels
import Foundation

/// An optimizer over the flat parameter buffer. Each `step` touches only `range`, so a shard of
/// the flat buffer can be stepped on its own (by the coordinator, shard by shard) and give the
/// same numbers as stepping the whole buffer. State lives in one flat buffer too
/// (`stateSlots × parameterCount` Floats: slot s of parameter i at `s·parameterCount + i`), so it
/// can be checkpointed and sharded like the parameters.
///
/// Weight decay applies to every element of the range (one parameter group, as PyTorch's default).
public enum Optimizer: Sendable, Hashable, Codable {
    case sgd(SGD)
    case adamW(AdamW)

    /// Stochastic gradient descent, PyTorch semantics (`torch.optim.SGD`, dampening 0):
    /// g ← g + wd·θ; buf ← μ·buf + g; g ← g + μ·buf (Nesterov) or buf; θ ← θ − lr·g.
    /// Weight decay is L2 (coupled), as in PyTorch's SGD.
    public struct SGD: Sendable, Hashable, Codable {
        public var momentum: Float
        public var nesterov: Bool
        public var weightDecay: Float
        public init(momentum: Float = 0, nesterov: Bool = false, weightDecay: Float = 0) {
            self.momentum = momentum
            self.nesterov = nesterov
            self.weightDecay = weightDecay
        }
    }

    /// AdamW (Loshchilov & Hutter), PyTorch semantics (`torch.optim.AdamW`):
    /// θ ← θ·(1 − lr·wd); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    /// θ ← θ − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε), t counting from 1.
    public struct AdamW: Sendable, Hashable, Codable {
        public var beta1: Float
        public var beta2: Float
        public var epsilon: Float
        public var weightDecay: Float
        public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0.01) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
        }
    }

    /// Floats of state per parameter: SGD 1 (momentum buffer; 0 without momentum), AdamW 2 (m, v).
    public var stateSlots: Int {
        switch self {
        case let .sgd(s): return s.momentum == 0 ? 0 : 1
        case .adamW: return 2
        }
    }

    /// A zeroed state buffer for `parameterCount` parameters.
    public func makeState(parameterCount: Int) -> FlatBuffer {
        FlatBuffer(count: stateSlots * parameterCount)
    }

    /// Checks the settings; throws `ComputeError.invalidSetting` naming the bad one.
    public func validate() throws {
        switch self {
        case let .sgd(s):
            guard s.momentum >= 0 && s.momentum < 1 else { throw ComputeError.invalidSetting("sgd momentum must be in [0, 1), got \(s.momentum)") }
            guard !s.nesterov || s.momentum > 0 else { throw ComputeError.invalidSetting("sgd nesterov needs a positive momentum") }
            guard s.weightDecay >= 0 else { throw ComputeError.invalidSetting("sgd weight decay must be non-negative, got \(s.weightDecay)") }
        case let .adamW(a):
            guard a.beta1 >= 0 && a.beta1 < 1 else { throw ComputeError.invalidSetting("adamw beta1 must be in [0, 1), got \(a.beta1)") }
            guard a.beta2 >= 0 && a.beta2 < 1 else { throw ComputeError.invalidSetting("adamw beta2 must be in [0, 1), got \(a.beta2)") }
            guard a.epsilon > 0 else { throw ComputeError.invalidSetting("adamw epsilon must be positive, got \(a.epsilon)") }
            guard a.weightDecay >= 0 else { throw ComputeError.invalidSetting("adamw weight decay must be non-negative, got \(a.weightDecay)") }
        }
    }

    /// One update of `parameters[range]` from `gradients[range] · gradientScale` (pass the clipping
    /// factor here instead of rescaling the gradient). `state` is the full state buffer
    /// (`stateSlots × parameters.count`). `t` is the 1-based step number (AdamW's bias correction).
    public func step(range: Range<Int>, parameters: UnsafeMutableBufferPointer<Float>,
                     gradients: UnsafeBufferPointer<Float>, state: UnsafeMutableBufferPointer<Float>,
                     learningRate lr: Float, t: Int, gradientScale: Float = 1) {
        precondition(gradients.count == parameters.count, "gradients (\(gradients.count)) and parameters (\(parameters.count)) differ in size")
        step(range: range, parameters: parameters, gradient: gradients.baseAddress, offset: 0, state: state,
             learningRate: lr, t: t, gradientScale: gradientScale)
    }

    /// The same update with the gradient of `range` alone: `gradientOfRange[j]` is the gradient
    /// of `parameters[range.lowerBound + j]` (a fused shard that does not sit in a full-size
    /// buffer).
    public func step(range: Range<Int>, parameters: UnsafeMutableBufferPointer<Float>,
                     gradientOfRange: UnsafeBufferPointer<Float>, state: UnsafeMutableBufferPointer<Float>,
                     learningRate lr: Float, t: Int, gradientScale: Float = 1) {
        precondition(gradientOfRange.count == range.count, "a gradient of \(gradientOfRange.count) for \(range.count) parameters")
        step(range: range, parameters: parameters, gradient: gradientOfRange.baseAddress, offset: range.lowerBound, state: state,
             learningRate: lr, t: t, gradientScale: gradientScale)
    }

    /// Element i's gradient is gradient[i − offset].
    private func step(range: Range<Int>, parameters: UnsafeMutableBufferPointer<Float>,
                      gradient: UnsafePointer<Float>?, offset: Int, state: UnsafeMutableBufferPointer<Float>,
                      learningRate lr: Float, t: Int, gradientScale: Float) {
        let n = parameters.count
        precondition(range.lowerBound >= 0 && range.upperBound <= n, "range \(range) outside 0..<\(n)")
        precondition(state.count >= stateSlots * n, "optimizer state holds \(state.count) floats, needs \(stateSlots * n)")
        guard !range.isEmpty, let p = parameters.baseAddress, let g = gradient else { return }
        precondition(t >= 1 || stateSlots < 2, "AdamW step number t counts from 1")
        // Element-wise, so splitting the range across threads changes no result.
        let ps = SharedPointer(p), gs = SharedPointer(g), ss = state.baseAddress.map(SharedPointer.init)
        let base = range.lowerBound
        Parallel.forEach(range.count, chunk: Parallel.bulkChunk) { part in
            let r = (base + part.lowerBound)..<(base + part.upperBound)
            // This chunk's gradient, indexed like the parameters within the chunk.
            let gr = gs.p + (r.lowerBound - offset)
            switch self {
            case let .sgd(s):
                Self.sgdStep(s, p: ps.p + r.lowerBound, g: gr, buf: ss.map { $0.p + r.lowerBound }, count: r.count, lr: lr, scale: gradientScale)
            case let .adamW(a):
                Self.adamWStep(a, p: ps.p + r.lowerBound, g: gr, m: ss!.p + r.lowerBound, v: ss!.p + n + r.lowerBound,
                               count: r.count, lr: lr, t: t, scale: gradientScale)
            }
        }
    }

    /// Convenience over `FlatBuffer`s (the model's parameters and gradients, a state buffer).
    public func step(range: Range<Int>? = nil, parameters: FlatBuffer, gradients: FlatBuffer, state: FlatBuffer,
                     learningRate: Float, t: Int, gradientScale: Float = 1) {
        step(range: range ?? 0..<parameters.count, parameters: parameters.buffer,
             gradients: UnsafeBufferPointer(gradients.buffer), state: state.buffer,
             learningRate: learningRate, t: t, gradientScale: gradientScale)
    }

    /// p, g and buf point at the chunk's first element.
    private static func sgdStep(_ s: SGD, p: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                                buf: UnsafeMutablePointer<Float>?, count: Int, lr: Float, scale: Float) {
        let wd = s.weightDecay, mu = s.momentum
        var i = 0
        let end = count
        if mu == 0 {
            while i + 16 <= end {
                let gi = load16(g + i) * scale + wd * load16(p + i)
                store16(load16(p + i) - lr * gi, p + i); i += 16
            }
            while i < end { p[i] -= lr * (g[i] * scale + wd * p[i]); i += 1 }
            return
        }
        let b = buf!
        while i + 16 <= end {
            let gi = load16(g + i) * scale + wd * load16(p + i)
            let bi = mu * load16(b + i) + gi
            store16(bi, b + i)
            store16(load16(p + i) - lr * (s.nesterov ? gi + mu * bi : bi), p + i)
            i += 16
        }
        while i < end {
            let gi = g[i] * scale + wd * p[i]
            let bi = mu * b[i] + gi
            b[i] = bi
            p[i] -= lr * (s.nesterov ? gi + mu * bi : bi)
            i += 1
        }
    }

    /// The step's constants: bias corrections in Double (β^t for large t underflows gracefully
    /// and stays exact enough).
    private static func adamWConstants(_ a: AdamW, lr: Float, t: Int) -> (stepSize: Float, rbc2: Float, decay: Float) {
        let bc1 = Float(1 - pow(Double(a.beta1), Double(t)))
        let bc2 = Float(1 - pow(Double(a.beta2), Double(t)))
        return (lr / bc1, 1 / bc2.squareRoot(), 1 - lr * a.weightDecay)
    }

    /// The loop is in C (`cohort_adamw_step`), built per vector width: its square root and
    /// division bound it, and the baseline x86-64 target has them four lanes wide where AVX2
    /// has eight (235k parameters, the demo's MLP: 0.14 → 0.08 ms a step in a C experiment).
    /// The coordinator runs it on every step while the members wait for the new parameters.
    private static func adamWStep(_ a: AdamW, p: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                                  m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                                  count: Int, lr: Float, t: Int, scale: Float) {
        let c = adamWConstants(a, lr: lr, t: t)
        cohort_adamw_step(p, g, m, v, count, scale, a.beta1, a.beta2, a.epsilon, c.decay, c.stepSize, c.rbc2)
    }

    /// The Swift loop the C kernel replaced, kept as the reference tests hold it to, bit for bit.
    static func adamWStepReference(_ a: AdamW, p: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                                   m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                                   count: Int, lr: Float, t: Int, scale: Float) {
        let (stepSize, rbc2, decay) = adamWConstants(a, lr: lr, t: t)
        let b1 = a.beta1, b2 = a.beta2, eps = a.epsilon
        var i = 0
        let end = count
        while i + 16 <= end {
            let gi = load16(g + i) * scale
            let mi = b1 * load16(m + i) + (1 - b1) * gi
            let vi = b2 * load16(v + i) + (1 - b2) * gi * gi
            store16(mi, m + i); store16(vi, v + i)
            let denom = vi.squareRoot() * rbc2 + eps
            store16(load16(p + i) * decay - stepSize * mi / denom, p + i)
            i += 16
        }
        while i < end {
            let gi = g[i] * scale
            let mi = b1 * m[i] + (1 - b1) * gi
            let vi = b2 * v[i] + (1 - b2) * gi * gi
            m[i] = mi; v[i] = vi
            p[i] = p[i] * decay - stepSize * mi / (vi.squareRoot() * rbc2 + eps)
            i += 1
        }
    }
}
