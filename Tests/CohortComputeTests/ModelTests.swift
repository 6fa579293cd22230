import Testing
@testable import CohortCompute

struct ModelTests {
    static let tinyGPT = ModelDescription.Transformer(vocabulary: 11, context: 8, width: 16, layers: 2, heads: 4)

    func tokens(_ batch: Int, length: Int, vocabulary: Int, seed: UInt64) -> [Int32] {
        var rng = Xoshiro256(seed: seed)
        return (0..<(batch * (length + 1))).map { _ in Int32(rng.next() % UInt64(vocabulary)) }
    }

    @Test func parameterTableIsOneContiguousFlatLayout() throws {
        let model = try Model(.transformer(Self.tinyGPT), seed: 1)
        var next = 0
        for info in model.parameterTable {
            #expect(info.offset == next, "\(info.name) starts at \(info.offset), expected \(next)")
            next += info.count
        }
        #expect(next == model.parameterCount)
        #expect(model.gradients.count == model.parameterCount)
        let qkv = try #require(model.parameterTable.first { $0.name == "layers.0.attn.qkv.weight" })
        #expect(qkv.shape == [48, 16])
        // C·V + T·C + L·(12C² + 13C) + 2C + V·C
        #expect(model.parameterCount == 11 * 16 + 8 * 16 + 2 * (12 * 256 + 13 * 16) + 2 * 16 + 11 * 16)
        #expect(try Model.parameterTable(for: .transformer(Self.tinyGPT)) == model.parameterTable)
        // A named view reads and writes the flat buffer.
        let w = try #require(model.parameter(named: "norm.weight"))
        w[3] = 7
        #expect(model.parameters[model.parameterTable.first { $0.name == "norm.weight" }!.offset + 3] == 7)
        let mlp = try Model(.mlp(.init(inputs: 4, hidden: [3], classes: 2)), seed: 1)
        #expect(mlp.parameterTable.map(\.name) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"])
        #expect(mlp.parameterCount == 4 * 3 + 3 + 3 * 2 + 2)
    }

    @Test func initialisationIsSeeded() throws {
        let a = try Model(.transformer(Self.tinyGPT), seed: 7), b = try Model(.transformer(Self.tinyGPT), seed: 7)
        let c = try Model(.transformer(Self.tinyGPT), seed: 8)
        #expect(a.parameters.toArray() == b.parameters.toArray())
        #expect(a.parameters.toArray() != c.parameters.toArray())
        #expect(a.parameter(named: "layers.0.ln1.weight")!.scalars.allSatisfy { $0 == 1 })
    }

    @Test func badDescriptionsThrowClearErrors() {
        var d = Self.tinyGPT
        d.heads = 3
        #expect { try Model(.transformer(d), seed: 0) } throws: { error in
            "\(error)".contains("heads (3) must divide transformer.width (16)")
        }
        #expect(throws: ComputeError.self) { try Model(.mlp(.init(inputs: 0, hidden: [], classes: 2)), seed: 0) }
        #expect(throws: ComputeError.self) { try Model(.mlp(.init(inputs: 3, hidden: [4, -1], classes: 2)), seed: 0) }
        d = Self.tinyGPT
        d.dropout = 1
        #expect(throws: ComputeError.self) { try Model(.transformer(d), seed: 0) }
    }

    @Test func badBatchesThrowClearErrors() throws {
        let mlp = try Model(.mlp(.init(inputs: 3, hidden: [4], classes: 2)), seed: 0)
        #expect { try mlp.forwardBackward(.classification(features: [1, 2, 3, 4], width: 4, labels: [0])) } throws: {
            "\($0)".contains("feature width 4 does not match the model's 3 inputs")
        }
        #expect(throws: ComputeError.labelOutOfRange(index: 1, label: 2, classes: 2)) {
            try mlp.forwardBackward(.classification(features: [Float](repeating: 0, count: 6), width: 3, labels: [0, 2]))
        }
        #expect(throws: ComputeError.self) { try mlp.evaluate(.classification(features: [1, 2], width: 3, labels: [0])) }
        #expect(throws: ComputeError.self) { try mlp.forwardBackward(.sequences(tokens: [1, 2], length: 1)) }
        #expect(throws: ComputeError.self) { try mlp.forwardBackward(.classification(features: [], width: 3, labels: [])) }

        let gpt = try Model(.transformer(Self.tinyGPT), seed: 0)
        #expect { try gpt.forwardBackward(.sequences(tokens: [1, 2, 11], length: 2)) } throws: {
            "\($0)".contains("token 11 at position 2 is outside the vocabulary 0..<11")
        }
        #expect(throws: ComputeError.self) { try gpt.forwardBackward(.sequences(tokens: [1, 2, -1], length: 2)) }
        #expect(throws: ComputeError.self) { try gpt.forwardBackward(.sequences(tokens: [Int32](repeating: 1, count: 10), length: 9)) }
        #expect(throws: ComputeError.self) { try gpt.forwardBackward(.sequences(tokens: [1, 2, 3, 4], length: 2)) }
        #expect(throws: ComputeError.self) { try gpt.forwardBackward(.classification(features: [1], width: 1, labels: [0])) }
    }

    /// The coordinator weights worker i's mean gradient by n_i/Σn; that must equal the mean
    /// gradient of the union batch.
    @Test func weightedShardGradientsEqualTheGlobalBatchMean() throws {
        let model = try Model(.transformer(Self.tinyGPT), seed: 3)
        let all = tokens(8, length: 6, vocabulary: 11, seed: 4)
        let split = 3 * 7
        model.zeroGradients()
        let full = try model.forwardBackward(.sequences(tokens: all, length: 6))
        let g = model.gradients.toArray()
        model.zeroGradients()
        let a = try model.forwardBackward(.sequences(tokens: Array(all[..<split]), length: 6))
        let ga = model.gradients.toArray()
        model.zeroGradients()
        let b = try model.forwardBackward(.sequences(tokens: Array(all[split...]), length: 6))
        let gb = model.gradients.toArray()
        #expect(a.examples == 3 && b.examples == 5 && full.count == 48)
        let combined: [Double] = zip(ga, gb).map { (x: Float, y: Float) -> Double in 0.375 * Double(x) + 0.625 * Double(y) }
        #expect(worstError(g, combined, atol: 1e-6, rtol: 1e-4) <= 1)
        let weighted: Double = 0.375 * Double(a.loss) + 0.625 * Double(b.loss)
        #expect(abs(Double(full.loss) - weighted) < 1e-5)
    }

    @Test func gradientsAccumulateAcrossCalls() throws {
        let model = try Model(.mlp(.init(inputs: 3, hidden: [5], classes: 3, activation: .gelu)), seed: 1)
        let batch = Batch.classification(features: randomFloats(12, seed: 2), width: 3, labels: [0, 1, 2, 1])
        model.zeroGradients()
        _ = try model.forwardBackward(batch)
        let once = model.gradients.toArray()
        _ = try model.forwardBackward(batch)
        #expect(worstError(model.gradients.toArray(), once.map { 2 * $0 }, atol: 1e-7, rtol: 1e-6) <= 1)
        #expect(once.contains { $0 != 0 })
    }

    @Test func evaluateAgreesWithTraining() throws {
        let model = try Model(.transformer(Self.tinyGPT), seed: 5)
        let batch = Batch.sequences(tokens: tokens(40, length: 8, vocabulary: 11, seed: 6), length: 8)
        let step = try model.forwardBackward(batch)
        let e = try model.evaluate(batch) // 40 examples: more than one evaluation chunk
        #expect(e.count == 320 && step.count == 320)
        #expect(abs(e.meanLoss - Double(step.loss)) < 1e-5)
        #expect(e.correct == step.correct)
        // Untrained over 11 symbols: loss near log 11.
        #expect(abs(e.meanLoss - 2.3979) < 0.1)
    }

    @Test func mlpLearnsASyntheticProblem() throws {
        // Four classes: the quadrant of a noisy 2-D point, plus 6 distractor features.
        var rng = Xoshiro256(seed: 11)
        var features: [Float] = [], labels: [Int32] = []
        for _ in 0..<256 {
            let x = Float(rng.nextNormal()), y = Float(rng.nextNormal())
            features += [x, y] + (0..<6).map { _ in Float(rng.nextNormal()) }
            labels.append(Int32((x > 0 ? 1 : 0) + (y > 0 ? 2 : 0)))
        }
        let batch = Batch.classification(features: features, width: 8, labels: labels)
        let model = try Model(.mlp(.init(inputs: 8, hidden: [32], classes: 4)), seed: 1)
        let opt = Optimizer.sgd(.init(momentum: 0.9))
        let state = opt.makeState(parameterCount: model.parameterCount)
        let start = try model.evaluate(batch)
        for t in 1...200 {
            model.zeroGradients()
            _ = try model.forwardBackward(batch)
            opt.step(parameters: model.parameters, gradients: model.gradients, state: state, learningRate: 0.1, t: t)
        }
        let end = try model.evaluate(batch)
        #expect(end.meanLoss < 0.25 * start.meanLoss, "loss \(start.meanLoss) → \(end.meanLoss)")
        #expect(end.accuracy > 0.9, "accuracy \(end.accuracy)")
    }

    @Test func transformerLearnsARepeatingSequence() throws {
        let pattern: [Int32] = [1, 5, 2, 7, 3, 9, 4]
        let rows = 8, length = 8
        var toks: [Int32] = []
        for r in 0..<rows { for t in 0...length { toks.append(pattern[(r + t) % pattern.count]) } }
        let batch = Batch.sequences(tokens: toks, length: length)
        let model = try Model(.transformer(Self.tinyGPT), seed: 2)
        let opt = Optimizer.adamW(.init(weightDecay: 0))
        let state = opt.makeState(parameterCount: model.parameterCount)
        let start = try model.evaluate(batch)
        for t in 1...60 {
            model.zeroGradients()
            _ = try model.forwardBackward(batch)
            opt.step(parameters: model.parameters, gradients: model.gradients, state: state, learningRate: 1e-2, t: t)
        }
        let end = try model.evaluate(batch)
        #expect(end.meanLoss < 0.2 * start.meanLoss, "loss \(start.meanLoss) → \(end.meanLoss)")
    }
}

/// Everything that changes the process-wide thread count lives here, serialised, so that no
/// other test sees it change mid-run.
@Suite(.serialized)
struct ThreadTests {
    func train(_ description: ModelDescription, threads: Int, steps: Int, batch: Batch, optimizer: Optimizer) throws -> [Float] {
        ComputeThreads.set(threads)
        defer { ComputeThreads.set(1) }
        let model = try Model(description, seed: 99)
        let state = optimizer.makeState(parameterCount: model.parameterCount)
        for t in 1...steps {
            model.zeroGradients()
            _ = try model.forwardBackward(batch, dropoutSeed: UInt64(t))
            let norm = GradientClipping.norm(UnsafeBufferPointer(model.gradients.buffer))
            optimizer.step(parameters: model.parameters, gradients: model.gradients, state: state, learningRate: 1e-2, t: t,
                           gradientScale: GradientClipping.scale(norm: norm, maxNorm: 1))
        }
        return model.parameters.toArray()
    }

    @Test(arguments: [1, 2])
    func sameSeedAndThreadsGiveBitIdenticalParameters(threads: Int) throws {
        var d = ModelTests.tinyGPT
        d.dropout = 0.1
        var rng = Xoshiro256(seed: 3)
        let tokens = (0..<(6 * 9)).map { _ in Int32(rng.next() % 11) }
        let batch = Batch.sequences(tokens: tokens, length: 8)
        let a = try train(.transformer(d), threads: threads, steps: 5, batch: batch, optimizer: .adamW(.init()))
        let b = try train(.transformer(d), threads: threads, steps: 5, batch: batch, optimizer: .adamW(.init()))
        #expect(a == b)
        let mlp = ModelDescription.mlp(.init(inputs: 6, hidden: [16, 8], classes: 3))
        let cb = Batch.classification(features: randomFloats(6 * 70, seed: 4), width: 6, labels: (0..<70).map { Int32($0 % 3) })
        let opt = Optimizer.sgd(.init(momentum: 0.9, nesterov: true, weightDecay: 1e-4))
        #expect(try train(mlp, threads: threads, steps: 5, batch: cb, optimizer: opt)
                == train(mlp, threads: threads, steps: 5, batch: cb, optimizer: opt))
    }

    /// Two threads split the batch in two replicas; the summed gradient must match one thread's
    /// up to summation order, dropout masks included.
    @Test func splittingTheBatchAcrossThreadsMatchesOneThread() throws {
        var d = ModelTests.tinyGPT
        d.dropout = 0.1
        var rng = Xoshiro256(seed: 8)
        let gpt = Batch.sequences(tokens: (0..<(5 * 9)).map { _ in Int32(rng.next() % 11) }, length: 8)
        let mlp = Batch.classification(features: randomFloats(70 * 6, seed: 9), width: 6, labels: (0..<70).map { Int32($0 % 3) })
        for (description, batch) in [(ModelDescription.transformer(d), gpt), (.mlp(.init(inputs: 6, hidden: [16], classes: 3)), mlp)] {
            func run(_ threads: Int) throws -> ([Float], StepResult) {
                ComputeThreads.set(threads)
                defer { ComputeThreads.set(1) }
                let model = try Model(description, seed: 4)
                model.zeroGradients()
                let r = try model.forwardBackward(batch, dropoutSeed: 9)
                return (model.gradients.toArray(), r)
            }
            let (g1, r1) = try run(1), (g2, r2) = try run(2)
            #expect(worstError(g2, g1, atol: 1e-7, rtol: 1e-4) <= 1)
            #expect(abs(r1.loss - r2.loss) < 1e-5 && r1.correct == r2.correct && r1.count == r2.count)
        }
    }

    @Test func attentionIsBitIdenticalAcrossThreadCounts() {
        let s = Attention.Shape(batch: 3, length: 40, width: 16, heads: 4)
        let qkv = randomFloats(s.batch * s.length * 3 * s.width, seed: 5)
        let dout = randomFloats(s.batch * s.length * s.width, seed: 6)
        func run(_ threads: Int) -> [Float] {
            ComputeThreads.set(threads)
            defer { ComputeThreads.set(1) }
            var probs = [Float](repeating: 0, count: s.batch * s.heads * s.length * s.length), scratch = probs
            var out = [Float](repeating: 0, count: dout.count), dqkv = [Float](repeating: 0, count: qkv.count)
            Attention.forward(qkv: qkv, out: &out, probs: &probs, s)
            Attention.backward(qkv: qkv, probs: probs, dout: dout, dqkv: &dqkv, scratch: &scratch, s)
            return out + dqkv
        }
        #expect(run(1) == run(2))
    }

    @Test func threadSettingAndOpenBLASInfo() {
        ComputeThreads.set(2)
        #expect(ComputeThreads.count == 2)
        ComputeThreads.set(0)
        #expect(ComputeThreads.count == 1, "clamped to at least one thread")
        #expect(!ComputeThreads.openBLASCoreName.isEmpty && ComputeThreads.openBLASCoreName != "unknown")
        #expect(ComputeThreads.openBLASConfig.contains("OpenBLAS"))
    }
}

/// A description that would overflow the layout arithmetic or exceed `Model.maxParameters` is
/// refused with an error before anything is allocated (the coordinator builds models from what
/// workers report, so these must never trap).
struct ModelSizeLimitTests {
    func refusal(_ description: ModelDescription) -> String? {
        do {
            _ = try Model(description, seed: 1)
            return nil
        } catch {
            #expect(throws: ComputeError.self) { try Model.parameterTable(for: description) }
            return "\(error)"
        }
    }

    @Test func oversizedModelsAreRefusedNotBuilt() {
        // 2^62 inputs: one dimension beyond the limit (and 2^62 · 4 would overflow).
        #expect(refusal(.mlp(.init(inputs: 1 << 62, hidden: [4], classes: 2)))?.contains("mlp.inputs is 4611686018427387904") == true)
        // Every dimension allowed, the product not: 2^30 · 2^30 parameters.
        #expect(refusal(.mlp(.init(inputs: 1 << 30, hidden: [1 << 30], classes: 2)))?.contains("more than 2147483648 parameters") == true)
        #expect(refusal(.transformer(.init(vocabulary: 1 << 30, context: 8, width: 1 << 30, layers: 1, heads: 1)))?
            .contains("more than 2147483648 parameters") == true)
        // Many layers of a modest width add up past the limit without any one tensor doing so.
        #expect(refusal(.transformer(.init(vocabulary: 256, context: 64, width: 4096, layers: 20_000, heads: 8)))?
            .contains("more than 2147483648 parameters") == true)
        // A model within the limit is built as before.
        #expect(refusal(.mlp(.init(inputs: 784, hidden: [256, 128], classes: 10))) == nil)
    }
}
