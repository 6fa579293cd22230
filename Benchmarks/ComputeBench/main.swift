// cohort-bench-compute: ms per training step (forward + backward + optimizer step) of Cohort's
// compute core next to PyTorch on CPU, same models, same threads, in one run.
//   swift build -c release --product cohort-bench-compute && .build/release/cohort-bench-compute
// Options: --threads 1,2   --mlp-steps 50   --tf-steps 10   --no-torch   --only mlp|transformer
//          --cpu (time with process CPU time: less noise on a busy machine)
//          --gemm (GFLOP/s of the transformer's GEMM shapes)   --kernels (element-wise kernel timings)
@_spi(Benchmarks) import CohortCompute
import Foundation

struct Options {
    var threads = [1, 2]
    var mlpSteps = 50
    var transformerSteps = 10
    var torch = true
    var only: String?

    init(_ args: [String]) {
        var i = 1
        func value() -> String { i += 1; return i < args.count ? args[i] : "" }
        while i < args.count {
            switch args[i] {
            case "--threads": threads = value().split(separator: ",").compactMap { Int($0) }
            case "--mlp-steps": mlpSteps = Int(value()) ?? mlpSteps
            case "--tf-steps": transformerSteps = Int(value()) ?? transformerSteps
            case "--no-torch": torch = false
            case "--only": only = value()
            case "--gemm", "--kernels", "--cpu": break
            default: print("unknown option \(args[i])"); exit(2)
            }
            i += 1
        }
    }
}

/// `--cpu` times with process CPU time instead of wall time: on a shared, busy machine it shows a
/// change's effect without the other tenants' noise (it hides waiting, so report wall time).
let cpuClock = CommandLine.arguments.contains("--cpu")

func now() -> Double {
    if cpuClock {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) * 1e3 + Double(ts.tv_nsec) / 1e6
    }
    return Double(DispatchTime.now().uptimeNanoseconds) / 1e6
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Times `steps` calls of `step` after at least `warmup` calls and 300 ms of warm-up (OpenBLAS's
/// idle thread spins for ~0.1 s after start-up); returns the median in ms.
func timed(warmup: Int, steps: Int, _ step: () throws -> Void) rethrows -> Double {
    let start = Double(DispatchTime.now().uptimeNanoseconds) / 1e6
    var done = 0
    while done < warmup || Double(DispatchTime.now().uptimeNanoseconds) / 1e6 - start < 300 {
        try step()
        done += 1
    }
    var times: [Double] = []
    for _ in 0..<steps {
        let t0 = now()
        try step()
        times.append(now() - t0)
    }
    return median(times)
}

func benchMLP(steps: Int) throws -> Double {
    let model = try Model(.mlp(.init(inputs: 784, hidden: [256, 256], classes: 10)), seed: 0)
    let opt = Optimizer.sgd(.init(momentum: 0.9))
    let state = opt.makeState(parameterCount: model.parameterCount)
    var rng = Xoshiro256(seed: 1)
    let features = (0..<(128 * 784)).map { _ in Float(rng.nextNormal()) }
    let labels = (0..<128).map { _ in Int32(rng.next() % 10) }
    let batch = Batch.classification(features: features, width: 784, labels: labels)
    var t = 0
    return try timed(warmup: 5, steps: steps) {
        t += 1
        model.zeroGradients()
        _ = try model.forwardBackward(batch)
        opt.step(parameters: model.parameters, gradients: model.gradients, state: state, learningRate: 0.01, t: t)
    }
}

func benchTransformer(steps: Int) throws -> Double {
    let model = try Model(.transformer(.init(vocabulary: 256, context: 128, width: 128, layers: 4, heads: 4)), seed: 0)
    let opt = Optimizer.adamW(.init(weightDecay: 0.01))
    let state = opt.makeState(parameterCount: model.parameterCount)
    var rng = Xoshiro256(seed: 1)
    let tokens = (0..<(32 * 129)).map { _ in Int32(rng.next() % 256) }
    let batch = Batch.sequences(tokens: tokens, length: 128)
    var t = 0
    return try timed(warmup: 2, steps: steps) {
        t += 1
        model.zeroGradients()
        _ = try model.forwardBackward(batch, dropoutSeed: UInt64(t))
        opt.step(parameters: model.parameters, gradients: model.gradients, state: state, learningRate: 3e-4, t: t)
    }
}

/// Runs Benchmarks/torch_bench.py; returns [model: [threads: ms]] or nil with the reason printed.
func runTorch(_ o: Options) -> [String: [Int: Double]]? {
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import torch"]
    probe.standardOutput = FileHandle.nullDevice
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { print("python3 not found: torch reference skipped"); return nil }
    probe.waitUntilExit()
    guard probe.terminationStatus == 0 else {
        print("torch not importable: skipped (pip install torch==2.13.0)")
        return nil
    }
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("torch_bench.py").path
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script, "--threads", o.threads.map(String.init).joined(separator: ","),
                   "--mlp-steps", String(o.mlpSteps), "--tf-steps", String(o.transformerSteps)]
    let pipe = Pipe()
    p.standardOutput = pipe
    do { try p.run() } catch { print("torch reference failed to start: \(error)"); return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    var out: [String: [Int: Double]] = [:]
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let m = obj["model"] as? String, let n = obj["threads"] as? Int, let ms = obj["ms"] as? Double else { continue }
        out[m, default: [:]][n] = ms
    }
    return out
}

/// GFLOP/s of the transformer's GEMM shapes (with --gemm): shows whether time goes to BLAS.
func benchGEMM() {
    let N = 4096, C = 128, V = 256
    let shapes: [(String, Bool, Bool, Int, Int, Int)] = [
        ("qkv fwd nt", false, true, N, 3 * C, C), ("proj fwd nt", false, true, N, C, C),
        ("fc fwd nt", false, true, N, 4 * C, C), ("fc2 fwd nt", false, true, N, C, 4 * C),
        ("head fwd nt", false, true, N, V, C),
        ("head dW tn", true, false, V, C, N), ("fc2 dW tn", true, false, C, 4 * C, N),
        ("fc dW tn", true, false, 4 * C, C, N), ("qkv dW tn", true, false, 3 * C, C, N),
        ("fc dx nn", false, false, N, C, 4 * C), ("fc2 dx nn", false, false, N, 4 * C, C),
        ("qkv dx nn", false, false, N, C, 3 * C), ("att qk nt", false, true, 128, 128, 32),
        ("att pv nn", false, false, 128, 32, 128),
    ]
    let a = FlatBuffer(count: 4096 * 512), b = FlatBuffer(count: 4096 * 512), c = FlatBuffer(count: 4096 * 512)
    for (name, ta, tb, m, n, k) in shapes {
        let reps = max(1, 200_000_000 / (m * n * k))
        let ms = timed(warmup: 2, steps: 5) {
            for _ in 0..<reps {
                BenchGEMM.run(ta, tb, m, n, k, a.baseAddress, b.baseAddress, c.baseAddress)
            }
        } / Double(reps)
        print("\(name.padding(toLength: 12, withPad: " ", startingAt: 0)) M=\(m) N=\(n) K=\(k): \(String(format: "%.3f", ms)) ms, \(String(format: "%.1f", 2.0 * Double(m * n * k) / ms / 1e6)) GFLOP/s")
    }
}

let o = Options(CommandLine.arguments)
if CommandLine.arguments.contains("--kernels") {
    for n in o.threads {
        ComputeThreads.set(n)
        print("threads \(n)")
        for (name, ms) in KernelBench.run(clock: now) {
            print("  \(name.padding(toLength: 30, withPad: " ", startingAt: 0)) \(String(format: "%7.3f", ms)) ms")
        }
    }
    exit(0)
}
if CommandLine.arguments.contains("--gemm") {
    for n in o.threads { ComputeThreads.set(n); print("threads \(n)"); benchGEMM() }
    exit(0)
}
print("OpenBLAS core: \(ComputeThreads.openBLASCoreName)   config: \(ComputeThreads.openBLASConfig)")
print("OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)")")
var cohort: [String: [Int: Double]] = [:]
for n in o.threads {
    ComputeThreads.set(n)
    if o.only == nil || o.only == "mlp" { cohort["mlp", default: [:]][n] = try benchMLP(steps: o.mlpSteps) }
    if o.only == nil || o.only == "transformer" {
        cohort["transformer", default: [:]][n] = try benchTransformer(steps: o.transformerSteps)
    }
}
let torch = o.torch ? runTorch(o) : nil
let names = ["mlp": "MLP 784-256-256-10, b128, SGD-momentum", "transformer": "GPT v256 T128 C128 L4 H4, b32, AdamW"]
print("")
print("model                                      threads   cohort ms   torch ms   cohort/torch")
for m in ["mlp", "transformer"] {
    for n in o.threads {
        guard let c = cohort[m]?[n] else { continue }
        let t = torch?[m]?[n]
        let ts = t.map { String(format: "%9.2f", $0) } ?? "        -"
        let r = t.map { String(format: "%10.2fx", c / $0) } ?? "          -"
        print("\(names[m]!.padding(toLength: 42, withPad: " ", startingAt: 0)) \(String(format: "%7d", n))   \(String(format: "%9.2f", c))  \(ts)   \(r)")
    }
}
