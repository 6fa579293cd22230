// Aggregation benchmark: the time of one synchronous round of the data plane (every worker
// sends its gradient as shards, the hub fuses each shard as it lands with the coordinator's
// StepAggregator, applies SGD to that parameter shard and sends it back zero-copy; the round ends
// when every worker holds every new shard), beside torch.distributed gloo all_reduce of the same
// sizes in the same run. Workers and hub are threads of this process, each with its own ZeroMQ
// context, on loopback. Release mode:
//
//     swift build -c release && .build/release/cohort-bench-aggregation   (it also runs the cohort binary)
import CohortCompute
import CohortCoordinator
import CohortTransport
import CohortWire
import Foundation

let args = CommandLine.arguments
let quick = args.contains("--quick")
/// `--only SIZE_M[,WORKERS]` (e.g. `--only 16,3`): one size (and worker count), no end-to-end run:
/// for looking at one row.
let only: [Int]? = args.firstIndex(of: "--only").flatMap { i in i + 1 < args.count ? args[i + 1].split(separator: ",").compactMap { Int($0) } : nil }
let sizes = only.map { [$0[0] << 20] } ?? (quick ? [1 << 20] : [1 << 20, 4 << 20, 16 << 20])
let workerCounts = only.flatMap { $0.count > 1 ? [$0[1]] : nil } ?? [2, 3]
let rounds = args.firstIndex(of: "--rounds").flatMap { i in i + 1 < args.count ? Int(args[i + 1]) : nil } ?? (quick ? 5 : 12)
/// `--mean-only`: send the fused mean back instead of stepping an optimizer: what all_reduce does.
let meanOnly = args.contains("--mean-only")

Allocator.avoidPerMessageMapping()

final class Owner: @unchecked Sendable { // buffers written before sends, read by libzmq after
    let raw: UnsafeMutableRawBufferPointer
    init(bytes: Int) { raw = .allocate(byteCount: bytes, alignment: 64); raw.initializeMemory(as: UInt8.self, repeating: 0) }
    deinit { raw.deallocate() }
}

/// Keeps the aggregator (whose accumulator is sent zero-copy in --mean-only) alive for libzmq;
/// it is only read after the send, and overwritten only once every worker has everything.
final class Retained: @unchecked Sendable {
    let object: AnyObject
    init(_ object: AnyObject) { self.object = object }
}

struct AdmitAll: Authenticator { func authenticate(_ r: ZAPRequest) -> ZAPDecision { .accept(userId: "bench") } }

final class Box<T>: @unchecked Sendable { var value: T; init(_ v: T) { value = v } }

/// Milliseconds per round (median after one warm-up round).
/// `downlink`: bf16 sends θ − θ̃ encoded (the coordinator's replica θ̃ gets the same decoded
/// difference the workers add), as `training.downlink-encoding: bf16` does.
func measure(workers: Int, elements: Int, ipc: Bool, encoding: ShardEncoding, curve: Bool, downlink: ShardEncoding = .fp32) throws -> Double {
    let layout = ShardLayout(parameterCount: elements, shardElements: 1 << 18)
    let serverKeys = try CurveKeyPair.generate()
    let endpoint = Box("")
    let bound = DispatchSemaphore(value: 0)
    let hubDone = DispatchSemaphore(value: 0)
    let failure = Box<String?>(nil)
    let total = rounds + 1

    Thread {
        defer { hubDone.signal() }
        do {
            let context = try Context()
            let zap = curve ? try ZAPHandler(context: context, authenticator: AdmitAll()) : nil
            let hub = try Socket(context, .router)
            try hub.setHighWaterMarks(send: 0, receive: 0)
            if let zap { try hub.makeCurveServer(keys: serverKeys, zap: zap) }
            try hub.bind(ipc ? "ipc://\(NSTemporaryDirectory())cohort-agg-\(getpid())-\(workers)-\(elements)" : "tcp://127.0.0.1:0")
            endpoint.value = try hub.lastEndpoint
            bound.signal()
            let params = FlatBuffer(count: elements)
            let state = FlatBuffer(count: elements)
            let sgd = Optimizer.sgd(.init(momentum: 0.9))
            let aggregator = StepAggregator(job: 1, layout: layout, encoding: encoding)
            let accumulatorOwner = Retained(aggregator)
            let lossyDown = downlink != .fp32
            let codec = ShardCodec(downlink)
            let replica = FlatBuffer(count: lossyDown ? elements : 0), difference = FlatBuffer(count: lossyDown ? elements : 0)
            let downbox = lossyDown ? EncodedShards(codec: codec, parameterCount: elements, shardElements: layout.shardElements) : nil
            var identities: [String: [UInt8]] = [:]
            for step in 0..<total {
                aggregator.begin(step: UInt64(step), members: Set((0..<workers).map { "w\($0)" }))
                var complete = 0
                while complete < layout.shardCount {
                    let frames = try hub.receive()
                    let name = String(decoding: frames[0].bytes, as: UTF8.self)
                    identities[name] = frames[0].bytes
                    guard case let .shard(h) = try Message.decode(frames[1].unsafeBytes) else { continue }
                    let outcome = withExtendedLifetime(frames) {
                        aggregator.contribute(from: name, header: h, payload: frames[2].unsafeBytes, owner: frames[2])
                    }
                    guard case let .success(.complete(k)) = outcome else {
                        if case let .failure(r) = outcome { failure.value = "\(r)" }
                        continue
                    }
                    complete += 1
                    let r = layout.range(k)
                    if !meanOnly {
                        sgd.step(range: r, parameters: params.buffer, gradients: aggregator.accumulatorBuffer, state: state.buffer,
                                 learningRate: 0.01, t: step + 1)
                    }
                    let out = ShardHeader(job: 1, step: UInt64(step + 1), kind: lossyDown ? .delta : .parameters, encoding: downlink, shard: UInt32(k),
                                          shardCount: UInt32(layout.shardCount), elementOffset: UInt64(r.lowerBound),
                                          elementCount: UInt32(r.count), sampleCount: 0)
                    let envelope = Message.shard(out).encode()
                    if let downbox {
                        let source = meanOnly ? UnsafePointer(aggregator.accumulatorBuffer.baseAddress!) : UnsafePointer(params.baseAddress)
                        let payload = downbox.encodeDifference(shard: k, target: source, replica: replica.baseAddress,
                                                               scratch: difference.baseAddress)
                        for id in identities.values { try hub.send([.bytes(id), .bytes(envelope), .zeroCopy(payload, owner: downbox)]) }
                        continue
                    }
                    let source = meanOnly ? UnsafeRawPointer(aggregator.accumulatorBuffer.baseAddress!) : UnsafeRawPointer(params.baseAddress)
                    let payload = UnsafeRawBufferPointer(start: source + r.lowerBound * 4, count: r.count * 4)
                    for id in identities.values { try hub.send([.bytes(id), .bytes(envelope), .zeroCopy(payload, owner: meanOnly ? accumulatorOwner : params)]) }
                }
            }
            zap?.stop()
        } catch {
            failure.value = "hub: \(error)"
            bound.signal()
        }
    }.start()
    bound.wait()
    if let f = failure.value { throw TransportError.misconfigured(f) }

    let times = Box([Double]())
    let group = DispatchGroup()
    for w in 0..<workers {
        group.enter()
        Thread {
            defer { group.leave() }
            do {
                let context = try Context()
                let socket = try Socket(context, .dealer)
                try socket.setRoutingId(Array("w\(w)".utf8))
                try socket.setHighWaterMarks(send: 0, receive: 0)
                if curve { try socket.makeCurveClient(keys: try CurveKeyPair.generate(), serverKey: serverKeys.publicKey) }
                try socket.connect(endpoint.value)
                let bytesPer = encoding == .bf16 ? 2 : 4
                let gradient = Owner(bytes: elements * bytesPer)
                let params = FlatBuffer(count: elements)
                for step in 0..<total {
                    let start = DispatchTime.now().uptimeNanoseconds
                    for k in 0..<layout.shardCount {
                        let r = layout.range(k)
                        let h = ShardHeader(job: 1, step: UInt64(step), kind: .gradient, encoding: encoding, shard: UInt32(k),
                                            shardCount: UInt32(layout.shardCount), elementOffset: UInt64(r.lowerBound),
                                            elementCount: UInt32(r.count), sampleCount: 32)
                        let payload = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(gradient.raw)[(r.lowerBound * bytesPer)..<(r.upperBound * bytesPer)])
                        try socket.send([.bytes(Message.shard(h).encode()), .zeroCopy(payload, owner: gradient)])
                    }
                    var got = 0
                    while got < layout.shardCount {
                        let frames = try socket.receive()
                        guard case let .shard(h) = try Message.decode(frames[0].unsafeBytes) else { continue }
                        if h.kind == .delta {
                            ShardCodec(h.encoding).add(frames[1].unsafeBytes, count: Int(h.elementCount), into: params.baseAddress + Int(h.elementOffset))
                        } else {
                            frames[1].withUnsafeBytes { src in
                                UnsafeMutableRawPointer(params.baseAddress + Int(h.elementOffset)).copyMemory(from: src.baseAddress!, byteCount: src.count)
                            }
                        }
                        got += 1
                    }
                    if w == 0 && step > 0 { times.value.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6) }
                }
            } catch {
                failure.value = "worker \(w): \(error)"
            }
        }.start()
    }
    group.wait()
    hubDone.wait()
    if let f = failure.value { throw TransportError.misconfigured(f) }
    let sorted = times.value.sorted()
    return sorted[sorted.count / 2]
}

/// `--case tcp|bf16|bf16x|ipc|curve` with `--only SIZE,WORKERS`: that one column, printed alone
/// (for profiling one configuration; `--rounds N` runs more rounds).
if let i = args.firstIndex(of: "--case"), i + 1 < args.count, let n = sizes.first, let w = workerCounts.first {
    let ms: Double
    var before = rusage(), after = rusage()
    getrusage(RUSAGE_SELF.rawValue, &before)
    switch args[i + 1] {
    case "tcp": ms = try measure(workers: w, elements: n, ipc: false, encoding: .fp32, curve: false)
    case "bf16": ms = try measure(workers: w, elements: n, ipc: false, encoding: .bf16, curve: false)
    case "bf16x": ms = try measure(workers: w, elements: n, ipc: false, encoding: .bf16, curve: false, downlink: .bf16)
    case "ipc": ms = try measure(workers: w, elements: n, ipc: true, encoding: .fp32, curve: false)
    case "curve": ms = try measure(workers: w, elements: n, ipc: false, encoding: .fp32, curve: true)
    default: fatalError("--case is one of tcp, bf16, bf16x, ipc, curve")
    }
    getrusage(RUSAGE_SELF.rawValue, &after)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    let user = seconds(after.ru_utime) - seconds(before.ru_utime), system = seconds(after.ru_stime) - seconds(before.ru_stime)
    print(String(format: "%@ %dM %d workers: %.1f ms; CPU per round %.1f ms user + %.1f ms system", args[i + 1], n >> 20, w, ms,
                 user * 1000 / Double(rounds + 1), system * 1000 / Double(rounds + 1)))
    exit(0)
}

// torch.distributed gloo all_reduce in the same run, when torch is importable.
let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("gloo_allreduce.py").path
var gloo: [String: Double] = [:]
let python = Process()
python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
python.arguments = ["python3", script] + sizes.map(String.init)
let pipe = Pipe()
python.standardOutput = pipe
python.standardError = FileHandle.nullDevice
var glooNote = ""
do {
    try python.run()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    python.waitUntilExit()
    for line in out.split(separator: "\n") {
        let f = line.split(separator: " ")
        if f.count == 3, let ms = Double(f[2]) { gloo["\(f[0])/\(f[1])"] = ms } else if line.hasPrefix("skip") { glooNote = String(line) }
    }
} catch { glooNote = "skip: python3 not found" }

func label(_ n: Int) -> String { "\(n >> 20)M" }
print("Cohort aggregation round (send gradient, receive " + (meanOnly ? "the mean gradient: no optimizer, what all_reduce does" : "new parameters: fused mean + SGD momentum step per shard") + "), ms, median of \(rounds); 1 MiB shards; hub + workers on one 2-core host")
print(glooNote.isEmpty ? "gloo = torch.distributed all_reduce (Benchmarks/gloo_allreduce.py), same sizes, same run" : "gloo: \(glooNote)")
print("")
print("tcp bf16: bf16 up, fp32 parameters down; bf16⇅: bf16 both ways (θ − θ̃ down, training.downlink-encoding: bf16)")
print("params | workers | tcp fp32 | tcp bf16 | tcp bf16⇅ | ipc fp32 | tcp fp32 CURVE | gloo  | tcp fp32/gloo | ipc fp32/gloo | tcp bf16/gloo | bf16⇅/gloo")
print("-------|---------|----------|----------|-----------|----------|----------------|-------|---------------|---------------|---------------|-----------")
for n in sizes {
    for w in workerCounts {
        let tcp = try measure(workers: w, elements: n, ipc: false, encoding: .fp32, curve: false)
        let bf = try measure(workers: w, elements: n, ipc: false, encoding: .bf16, curve: false)
        let bf2 = try measure(workers: w, elements: n, ipc: false, encoding: .bf16, curve: false, downlink: .bf16)
        let ipc = try measure(workers: w, elements: n, ipc: true, encoding: .fp32, curve: false)
        let cur = try measure(workers: w, elements: n, ipc: false, encoding: .fp32, curve: true)
        let g = gloo["\(n)/\(w)"]
        func ratio(_ x: Double) -> String { g.map { String(format: "%.2f×", x / $0) } ?? "-" }
        func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        print(label(n).padding(toLength: 6, withPad: " ", startingAt: 0)
              + String(format: " | %7d | %8.1f | %8.1f | %9.1f | %8.1f | %14.1f | ", w, tcp, bf, bf2, ipc, cur)
              + pad(g.map { String(format: "%.1f", $0) } ?? "-", 5) + " | " + pad(ratio(tcp), 13) + " | " + pad(ratio(ipc), 13)
              + " | " + pad(ratio(bf), 13) + " | " + pad(ratio(bf2), 10))
    }
}
print("plaintext rows are plaintext (no CURVE); the CURVE column encrypts every byte")

// MARK: - End-to-end training: 2 workers × 1 thread against 1 process × 2 threads

/// Runs `cohort` (beside this binary) and returns its standard output.
@discardableResult
func cohort(_ arguments: [String], environment: [String: String] = [:], background: Bool = false) throws -> (Process, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: args[0]).deletingLastPathComponent().appendingPathComponent("cohort")
    p.arguments = arguments
    p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe()
    p.standardOutput = background ? FileHandle.nullDevice : out
    p.standardError = FileHandle.nullDevice
    try p.run()
    if background { return (p, "") }
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p, text)
}

func endToEnd() throws {
    let steps = quick ? 300 : 1500, batch = 128
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cohort-e2e-bench-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let spec = """
        name: throughput
        model: {kind: mlp, hidden: [256, 128]}
        data: {dataset: fashion-mnist}
        optimizer: {kind: adamw, lr: 0.001}
        training: {steps: \(steps), global-batch-size: \(batch)}
        eval-every: 0
        seed: 1
        cluster: {min-workers: 2}
        """
    try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
    // One process, two threads.
    let (_, single) = try cohort(["train", dir + "/spec.yaml", "--threads", "2", "--out", dir + "/single"])
    let singleRate = single.split(separator: "\n").first { $0.hasPrefix("done in") }
        .flatMap { Double($0.split(separator: "(")[1].split(separator: " ")[0]) }
    // A coordinator and two one-thread workers on this host (ipc data plane).
    let port = 40_000 + Int(getpid() % 10_000)
    let env = ["COHORT_KEY": dir + "/coord/admin.key", "COHORT_COORDINATOR": "127.0.0.1:\(port)"]
    let (coordinator, _) = try cohort(["coordinator", "--data-dir", dir + "/coord", "--listen", "127.0.0.1:\(port)", "--ipc"], background: true)
    defer { coordinator.terminate(); coordinator.waitUntilExit() }
    var ready = false
    for _ in 0..<100 where !ready {
        Thread.sleep(forTimeInterval: 0.1)
        ready = FileManager.default.fileExists(atPath: dir + "/coord/admin.key") && (try? cohort(["jobs", "--timeout", "1"], environment: env).0.terminationStatus) == 0
    }
    var workers: [Process] = []
    defer { for w in workers { w.terminate(); w.waitUntilExit() } }
    for name in ["pku-01", "sjtu-01"] {
        let (_, token) = try cohort(["admin", "token", "--institution", String(name.prefix(while: { $0 != "-" })), "--role", "worker"], environment: env)
        workers.append(try cohort(["worker", "--state-dir", dir + "/" + name, "--join", token.trimmingCharacters(in: .whitespacesAndNewlines),
                                   "--name", name, "--threads", "1"], background: true).0)
    }
    Thread.sleep(forTimeInterval: 1)
    let (_, submitted) = try cohort(["submit", "--json", dir + "/spec.yaml"], environment: env)
    guard let id = submitted.split(separator: ":").last.flatMap({ Int($0.filter(\.isNumber)) }) else { return print("end-to-end: submit failed") }
    var distributedRate: Double?
    for _ in 0..<600 {
        Thread.sleep(forTimeInterval: 0.25)
        let (_, text) = try cohort(["status", "\(id)", "--json"], environment: env)
        guard let s = try? JSONDecoder().decode(StatusReply.self, from: Data(text.utf8)), s.job.state == "completed",
              let running = s.job.stateTimes["running"], let done = s.job.stateTimes["completed"] else { continue }
        distributedRate = Double(steps * batch) / (done - running)
        break
    }
    print("")
    print("end-to-end training, Fashion-MNIST MLP 784-256-128-10, batch \(batch), \(steps) steps (samples/s; distributed includes the workers' data loading):")
    print(String(format: "  1 process × 2 threads (cohort train):            %8.0f", singleRate ?? .nan))
    print(String(format: "  2 workers × 1 thread (coordinator + ipc, CURVE): %8.0f   ratio %.2f×", distributedRate ?? .nan,
                 (distributedRate ?? .nan) / (singleRate ?? .nan)))
}

if only == nil { try endToEnd() }
