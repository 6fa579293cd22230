// Aggregation benchmark: the time of one synchronous round of the data plane (every worker
// sends its gradient as shards, the hub fuses each shard as it lands with the coordinator's
// StepAggregator, applies SGD to that parameter shard, or not ("mean"), and sends it back
// zero-copy; the round ends when every worker holds every new shard), beside torch.distributed
// gloo all_reduce (and all_reduce + SGD, a DDP step) of the same sizes, timed right before and
// after every case. Workers and hub are threads of this process, each with its own ZeroMQ
// context, on loopback. Release mode:
//
//     swift build -c release && .build/release/cohort-bench-aggregation   (it also runs the cohort binary)
//     [--quick] [--passes N] [--rounds N] [--only SIZE_M[,WORKERS]] [--case NAME [--mean-only]] [--io-threads N]
import CohortCompute
import CohortCoordinator
import CohortSpec
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
/// Each case of the table is measured this many times, interleaved; its median is printed.
let passes = args.firstIndex(of: "--passes").flatMap { i in i + 1 < args.count ? Int(args[i + 1]) : nil } ?? (quick ? 1 : 3)
let rounds = args.firstIndex(of: "--rounds").flatMap { i in i + 1 < args.count ? Int(args[i + 1]) : nil } ?? (quick ? 5 : 12)
/// `--shard-elements N`: elements per shard. By default a job's: 1 MiB of what goes up (2^18
/// fp32 elements, 2^19 bf16 ones; `JobSpec.Training.defaultShardSizeKiB`).
let shardElementsOption = args.firstIndex(of: "--shard-elements").flatMap { i in i + 1 < args.count ? Int(args[i + 1]) : nil }
func shardElements(_ uplink: ShardEncoding) -> Int {
    shardElementsOption ?? 256 * JobSpec.Training.defaultShardSizeKiB(for: uplink == .bf16 ? .bf16 : .fp32)
}
/// `--mean-only` (with `--case`): send the fused mean back instead of stepping an optimizer.
let meanOnlyCase = args.contains("--mean-only")
/// `--io-threads N`: the hub's libzmq I/O threads; by default as many as the coordinator starts
/// with on this host (`Context.defaultDataIOThreads`).
let hubIOThreads = min(max(args.firstIndex(of: "--io-threads").flatMap { i in i + 1 < args.count ? Int(args[i + 1]) : nil }
    ?? Context.defaultDataIOThreads, 1), CoordinatorSettings.ioThreadRange.upperBound)

Allocator.avoidPerMessageMapping()
signal(SIGPIPE, SIG_IGN) // a gloo rank that died mid-row ends its figures, not this run

final class Owner: @unchecked Sendable { // buffers written before sends, read by libzmq after
    let raw: UnsafeMutableRawBufferPointer
    init(bytes: Int) { raw = .allocate(byteCount: bytes, alignment: 64); raw.initializeMemory(as: UInt8.self, repeating: 0) }
    deinit { raw.deallocate() }
}

/// Keeps what a --mean-only round sends zero-copy (the frame the mean was fused into, or the
/// aggregator's accumulator) alive for libzmq; it is only read after the send, and overwritten
/// only once every worker has everything.
final class Retained: @unchecked Sendable {
    let object: AnyObject
    init(_ object: AnyObject) { self.object = object }
}

struct AdmitAll: Authenticator { func authenticate(_ r: ZAPRequest) -> ZAPDecision { .accept(userId: "bench") } }

final class Box<T>: @unchecked Sendable { var value: T; init(_ v: T) { value = v } }

/// Milliseconds per round (median after one warm-up round).
/// `downlink`: bf16 sends θ − θ̃ encoded (the coordinator's replica θ̃ gets the same decoded
/// difference the workers add), as `training.downlink-encoding: bf16` does.
/// `meanOnly`: the hub sends the fused mean back instead of stepping an optimizer (what
/// all_reduce leaves on every rank).
/// `shared`: over ipc, the shards' elements through shared-memory segments (one the hub writes
/// the parameters to, one per worker for its gradient) and only headers on the socket, as the
/// coordinator does with workers on its host.
func measure(workers: Int, elements: Int, ipc: Bool, encoding: ShardEncoding, curve: Bool, downlink: ShardEncoding = .fp32,
             meanOnly: Bool = false, shared: Bool = false) throws -> Double {
    let layout = ShardLayout(parameterCount: elements, shardElements: shardElements(encoding))
    let segmentPrefix = "\(SharedSegment.directory)/cohort-bench-\(getpid())-\(workers)-\(elements)"
    let parameterSegment = shared ? try SharedSegment(creating: segmentPrefix + "-parameters", elements: elements, shards: layout.shardCount) : nil
    let gradientSegments = shared ? try (0..<workers).map { try SharedSegment(creating: segmentPrefix + "-\($0)", elements: elements, shards: 0) } : []
    // Removed when this returns (the threads may hold their mappings a moment longer).
    defer { for segment in gradientSegments + [parameterSegment].compactMap({ $0 }) { unlink(segment.path) } }
    let serverKeys = try CurveKeyPair.generate()
    let endpoint = Box("")
    let bound = DispatchSemaphore(value: 0)
    let hubDone = DispatchSemaphore(value: 0)
    let failure = Box<String?>(nil)
    let total = rounds + 1

    Thread {
        defer { hubDone.signal() }
        do {
            // As the coordinator's data endpoint: I/O thread 0 is its api and control endpoints'.
            let context = try Context(ioThreads: 1 + hubIOThreads)
            let zap = curve ? try ZAPHandler(context: context, authenticator: AdmitAll()) : nil
            let hub = try Socket(context, .router)
            try hub.setIOThreadAffinity(1..<(1 + hubIOThreads))
            try hub.setHighWaterMarks(send: 0, receive: 0)
            if let zap { try hub.makeCurveServer(keys: serverKeys, zap: zap) }
            try hub.bind(ipc ? "ipc://\(NSTemporaryDirectory())cohort-agg-\(getpid())-\(workers)-\(elements)" : "tcp://127.0.0.1:0")
            endpoint.value = try hub.lastEndpoint
            bound.signal()
            let params = FlatBuffer(count: elements)
            let state = FlatBuffer(count: elements)
            let sgd = Optimizer.sgd(.init(momentum: 0.9))
            let aggregator = StepAggregator(job: 1, layout: layout, encoding: encoding)
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
                    let outcome: Result<StepAggregator.Outcome, Rejection>
                    switch try Message.decode(frames[1].unsafeBytes) {
                    case let .shard(h):
                        outcome = withExtendedLifetime(frames) {
                            aggregator.contribute(from: name, header: h, payload: frames[2].unsafeBytes, owner: frames[2], writable: true)
                        }
                    case let .sharedShard(h):
                        let segment = gradientSegments[Int(name.dropFirst())!]
                        outcome = aggregator.contribute(from: name, header: h,
                                                        payload: UnsafeRawBufferPointer(start: segment.floats + Int(h.elementOffset), count: Int(h.elementCount) * 4),
                                                        owner: segment)
                    default: continue
                    }
                    guard case let .success(.complete(k)) = outcome else {
                        if case let .failure(r) = outcome { failure.value = "\(r)" }
                        continue
                    }
                    complete += 1
                    let r = layout.range(k)
                    if !meanOnly {
                        sgd.step(range: r, parameters: params.buffer, gradientOfRange: aggregator.gradient(shard: k), state: state.buffer,
                                 learningRate: 0.01, t: step + 1)
                        aggregator.release(shard: k)
                    }
                    // A mean round with a lossy downlink sends the mean encoded, as a compressed
                    // all_reduce does (θ̃ tracks parameters, which a mean round does not send).
                    let out = ShardHeader(job: 1, step: UInt64(step + 1), kind: lossyDown && !meanOnly ? .delta : .parameters, encoding: downlink, shard: UInt32(k),
                                          shardCount: UInt32(layout.shardCount), elementOffset: UInt64(r.lowerBound),
                                          elementCount: UInt32(r.count), sampleCount: 0)
                    let envelope = Message.shard(out).encode()
                    if let downbox {
                        let payload = meanOnly
                            ? downbox.encode(shard: k, elements: aggregator.gradient(shard: k).baseAddress!)
                            : downbox.encodeDifference(shard: k, target: params.baseAddress, replica: replica.baseAddress,
                                                       scratch: difference.baseAddress)
                        // The mean is in the payload now: its buffer goes back to the aggregator's pool.
                        if meanOnly { aggregator.release(shard: k) }
                        for id in identities.values { try hub.send([.bytes(id), .bytes(envelope), .zeroCopy(payload, owner: downbox)]) }
                        continue
                    }
                    // The mean where the aggregator built it (a frame, or its accumulator), or the new parameters.
                    let source = meanOnly ? UnsafeRawPointer(aggregator.gradient(shard: k).baseAddress!) : UnsafeRawPointer(params.baseAddress + r.lowerBound)
                    if let parameterSegment {
                        parameterSegment.publish(shard: k, step: step + 1, from: source.assumingMemoryBound(to: Float.self),
                                                 offset: r.lowerBound, count: r.count)
                        let header = Message.sharedShard(out).encode()
                        for id in identities.values { try hub.send([.bytes(id), .bytes(header)]) }
                        continue
                    }
                    let payload = UnsafeRawBufferPointer(start: source, count: r.count * 4)
                    let owner: any AnyObject & Sendable = meanOnly ? Retained(aggregator.gradientOwner(shard: k)) : params
                    for id in identities.values { try hub.send([.bytes(id), .bytes(envelope), .zeroCopy(payload, owner: owner)]) }
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
                let streams = ReplicaCopy.streams(parameterCount: elements)
                for step in 0..<total {
                    let start = DispatchTime.now().uptimeNanoseconds
                    for k in 0..<layout.shardCount {
                        let r = layout.range(k)
                        let h = ShardHeader(job: 1, step: UInt64(step), kind: .gradient, encoding: encoding, shard: UInt32(k),
                                            shardCount: UInt32(layout.shardCount), elementOffset: UInt64(r.lowerBound),
                                            elementCount: UInt32(r.count), sampleCount: 32)
                        if shared {
                            let segment = gradientSegments[w]
                            (segment.floats + r.lowerBound).update(from: gradient.raw.baseAddress!.assumingMemoryBound(to: Float.self) + r.lowerBound, count: r.count)
                            try socket.send([.bytes(Message.sharedShard(h).encode())])
                            continue
                        }
                        let payload = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(gradient.raw)[(r.lowerBound * bytesPer)..<(r.upperBound * bytesPer)])
                        try socket.send([.bytes(Message.shard(h).encode()), .zeroCopy(payload, owner: gradient)])
                    }
                    var got = 0
                    while got < layout.shardCount {
                        let frames = try socket.receive()
                        let message = try Message.decode(frames[0].unsafeBytes)
                        if case let .sharedShard(h) = message, let parameterSegment {
                            guard parameterSegment.read(shard: Int(h.shard), step: Int(h.step), offset: Int(h.elementOffset), count: Int(h.elementCount),
                                                        into: params.baseAddress + Int(h.elementOffset), streaming: streams) else { throw TransportError.misconfigured("torn shard \(h.shard)") }
                            got += 1
                            continue
                        }
                        guard case let .shard(h) = message else { continue }
                        if h.kind == .delta {
                            ShardCodec(h.encoding).add(frames[1].unsafeBytes, count: Int(h.elementCount), into: params.baseAddress + Int(h.elementOffset))
                        } else if h.encoding != .fp32 {
                            ShardCodec(h.encoding).decode(frames[1].unsafeBytes, count: Int(h.elementCount), into: params.baseAddress + Int(h.elementOffset), streaming: streams)
                        } else {
                            // As a worker copies parameters into its replica.
                            frames[1].withUnsafeBytes { src in
                                ReplicaCopy.copy(src.baseAddress!, to: params.baseAddress + Int(h.elementOffset), byteCount: src.count, streaming: streams)
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

/// `--case tcp|bf16|bf16x|ipc|shm|curve|floor|floor16` with `--only SIZE,WORKERS`: that one column, printed alone
/// (for profiling one configuration; `--rounds N` runs more rounds).
if let i = args.firstIndex(of: "--case"), i + 1 < args.count, let n = sizes.first, let w = workerCounts.first {
    let ms: Double
    var before = rusage(), after = rusage()
    getrusage(RUSAGE_SELF.rawValue, &before)
    switch args[i + 1] {
    case "tcp": ms = try measure(workers: w, elements: n, ipc: false, encoding: .fp32, curve: false, meanOnly: meanOnlyCase)
    case "bf16": ms = try measure(workers: w, elements: n, ipc: false, encoding: .bf16, curve: false, meanOnly: meanOnlyCase)
    case "bf16x": ms = try measure(workers: w, elements: n, ipc: false, encoding: .bf16, curve: false, downlink: .bf16, meanOnly: meanOnlyCase)
    case "ipc": ms = try measure(workers: w, elements: n, ipc: true, encoding: .fp32, curve: false, meanOnly: meanOnlyCase)
    case "shm": ms = try measure(workers: w, elements: n, ipc: true, encoding: .fp32, curve: false, meanOnly: meanOnlyCase, shared: true)
    case "curve": ms = try measure(workers: w, elements: n, ipc: false, encoding: .fp32, curve: true, meanOnly: meanOnlyCase)
    case "floor": ms = try floorRound(workers: w, elements: n, encoding: .fp32)
    case "floor16": ms = try floorRound(workers: w, elements: n, encoding: .bf16)
    default: fatalError("--case is one of tcp, bf16, bf16x, ipc, shm, curve, floor, floor16")
    }
    getrusage(RUSAGE_SELF.rawValue, &after)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    let user = seconds(after.ru_utime) - seconds(before.ru_utime), system = seconds(after.ru_stime) - seconds(before.ru_stime)
    print(String(format: "%@ %dM %d workers: %.1f ms; CPU per round %.1f ms user + %.1f ms system", args[i + 1], n >> 20, w, ms,
                 user * 1000 / Double(rounds + 1), system * 1000 / Double(rounds + 1)))
    exit(0)
}

// torch.distributed gloo all_reduce of the same size and ranks, timed right before and right
// after every Cohort case (this host is shared and its speed drifts by tens of percent within a
// minute: each ratio compares against the gloo runs on either side of it), when torch is
// importable. The ranks start once per row and wait for each `go`.
let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("gloo_allreduce.py").path
var glooNote = ""

/// `gloo_allreduce.py --serve` for one size and rank count.
@MainActor final class GlooServer {
    private let python = Process()
    private let input = Pipe(), output = Pipe()
    private var pending = Data()

    /// Nil, with glooNote saying why, when python or torch is missing or the ranks do not start.
    init?(elements: Int, ranks: Int) {
        guard glooNote.isEmpty else { return nil }
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        python.arguments = ["python3", script, "--serve", "--ranks", "\(ranks)", "\(elements)"]
        python.standardInput = input
        python.standardOutput = output
        python.standardError = FileHandle.nullDevice
        do { try python.run() } catch {
            glooNote = "skip: python3 not found"
            return nil
        }
        let first = line()
        guard first == "ready" else {
            glooNote = first.flatMap { $0.hasPrefix("skip") ? $0 : nil } ?? "skip: gloo_allreduce.py --serve did not start (\(first ?? "no output"))"
            stop()
            return nil
        }
    }

    /// gloo's (all_reduce, all_reduce + SGD) medians in ms, now.
    func measure() -> (plain: Double, sgd: Double)? {
        guard (try? input.fileHandleForWriting.write(contentsOf: Data("go\n".utf8))) != nil,
              let f = line()?.split(separator: " "), f.count == 2, let plain = Double(f[0]), let sgd = Double(f[1]) else { return nil }
        return (plain, sgd)
    }

    func stop() {
        try? input.fileHandleForWriting.close()
        python.waitUntilExit()
    }

    private func line() -> String? {
        while true {
            if let i = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let text = String(decoding: pending[pending.startIndex..<i], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...i)
                return text
            }
            let more = output.fileHandleForReading.availableData
            if more.isEmpty { return nil }
            pending.append(more)
        }
    }
}

func label(_ n: Int) -> String { "\(n >> 20)M" }
func fmt(_ x: Double?, _ spec: String = "%.1f") -> String { x.map { String(format: spec, $0) } ?? "-" }
func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }

print("Cohort aggregation round: every worker sends its gradient as 1 MiB shards (2^18 fp32 or 2^19 bf16 elements, a job's default),")
print("the hub fuses them as they land and sends every worker the new shards, ms: the median of \(rounds) rounds, then of \(passes) interleaved passes; hub and workers")
print("are threads on one \(ProcessInfo.processInfo.activeProcessorCount)-core host (loopback), the hub with \(hubIOThreads) I/O thread(s) as a coordinator here starts with,")
print("plaintext unless the case says CURVE. Beside it, torch.distributed gloo (Benchmarks/gloo_allreduce.py),")
print("timed right before and right after every case; a ratio is the median over the passes of the case against the mean of the")
print("gloo runs on either side of it. Like for like:")
print("  mean    the hub sends the fused mean back              vs gloo all_reduce (every rank ends with the mean)")
print("  +SGD    the hub steps SGD momentum, sends parameters   vs gloo all_reduce + SGD momentum step on each rank (a DDP step)")
print("  shm: ipc carries the headers, the elements go through /dev/shm segments (what --ipc does for fp32 jobs); ipc: every byte on the socket")
print("  bf16 up: bf16 gradients, fp32 parameters down; bf16⇅: bf16 both ways (+SGD: θ − θ̃ down, as training.downlink-encoding:")
print("  bf16 does; mean: the mean in bf16, as a bf16-compressed all_reduce does)")
print("  floor: the same bytes as tcp fp32 / bf16⇅ over bare blocking sockets, a thread per direction and connection, no ZeroMQ,")
print("  no arithmetic (BareStar.swift): what the kernel alone costs a hub on this host, set against all_reduce")
struct Case {
    let name: String; let ipc: Bool; let encoding: ShardEncoding; let downlink: ShardEncoding; let curve: Bool; let meanOnly: Bool
    var shared = false
    /// The bare-socket floor (BareStar): this case's bytes over plain tcp sockets, no work.
    var floor = false
}
let cases = [
    Case(name: "tcp fp32 mean", ipc: false, encoding: .fp32, downlink: .fp32, curve: false, meanOnly: true),
    Case(name: "tcp fp32 +SGD", ipc: false, encoding: .fp32, downlink: .fp32, curve: false, meanOnly: false),
    Case(name: "ipc fp32 mean", ipc: true, encoding: .fp32, downlink: .fp32, curve: false, meanOnly: true),
    Case(name: "ipc fp32 +SGD", ipc: true, encoding: .fp32, downlink: .fp32, curve: false, meanOnly: false),
    Case(name: "shm fp32 mean", ipc: true, encoding: .fp32, downlink: .fp32, curve: false, meanOnly: true, shared: true),
    Case(name: "shm fp32 +SGD", ipc: true, encoding: .fp32, downlink: .fp32, curve: false, meanOnly: false, shared: true),
    Case(name: "tcp bf16 up +SGD", ipc: false, encoding: .bf16, downlink: .fp32, curve: false, meanOnly: false),
    Case(name: "tcp bf16⇅ mean", ipc: false, encoding: .bf16, downlink: .bf16, curve: false, meanOnly: true),
    Case(name: "tcp bf16⇅ +SGD", ipc: false, encoding: .bf16, downlink: .bf16, curve: false, meanOnly: false),
    Case(name: "tcp fp32 CURVE +SGD", ipc: false, encoding: .fp32, downlink: .fp32, curve: true, meanOnly: false),
    Case(name: "floor: fp32 bytes", ipc: false, encoding: .fp32, downlink: .fp32, curve: false, meanOnly: true, floor: true),
    Case(name: "floor: bf16 bytes", ipc: false, encoding: .bf16, downlink: .bf16, curve: false, meanOnly: true, floor: true),
]
/// A floor row's milliseconds: the round's bytes, in the same 1 MiB shards, over bare sockets.
func floorRound(workers: Int, elements: Int, encoding: ShardEncoding) throws -> Double {
    let bytesPer = encoding == .bf16 ? 2 : 4
    return try BareStar.round(workers: workers, bytes: elements * bytesPer, chunk: shardElements(encoding) * bytesPer, rounds: rounds)
}
func median(_ xs: [Double]) -> Double? { xs.isEmpty ? nil : xs.sorted()[xs.count / 2] }
for n in sizes {
    for w in workerCounts {
        let server = GlooServer(elements: n, ranks: w)
        // Every case `passes` times, the passes interleaved, and gloo timed between every two
        // cases: each case's ratio in a pass is against the mean of the gloo runs right before
        // and right after it; the table shows each case's median time, median reference and
        // median ratio.
        var runs = Array(repeating: [Double](), count: cases.count)
        var references = Array(repeating: [Double](), count: cases.count)
        var ratios = Array(repeating: [Double](), count: cases.count)
        var glooRuns: [(plain: Double, sgd: Double)] = []
        for _ in 0..<passes {
            var before = server?.measure()
            if let before { glooRuns.append(before) }
            for (i, c) in cases.enumerated() {
                let x = c.floor ? try floorRound(workers: w, elements: n, encoding: c.encoding)
                                : try measure(workers: w, elements: n, ipc: c.ipc, encoding: c.encoding, curve: c.curve,
                                              downlink: c.downlink, meanOnly: c.meanOnly, shared: c.shared)
                runs[i].append(x)
                let after = server?.measure()
                if let after { glooRuns.append(after) }
                if let b = before, let a = after {
                    let reference = c.meanOnly ? (b.plain + a.plain) / 2 : (b.sgd + a.sgd) / 2
                    references[i].append(reference)
                    ratios[i].append(x / reference)
                }
                before = after
            }
        }
        server?.stop()
        print("")
        let plain = glooRuns.map(\.plain), sgd = glooRuns.map(\.sgd)
        print("\(label(n)) floats, \(w) workers. " + (glooRuns.isEmpty ? glooNote
            : "gloo, \(glooRuns.count) runs between the cases: all_reduce \(fmt(median(plain))) (\(fmt(plain.min()))–\(fmt(plain.max()))),"
              + " + SGD \(fmt(median(sgd))) (\(fmt(sgd.min()))–\(fmt(sgd.max())))"))
        print("  case                 | Cohort ms | gloo ms (like for like) | ratio")
        for (i, c) in cases.enumerated() {
            print("  " + c.name.padding(toLength: 20, withPad: " ", startingAt: 0) + " | " + pad(fmt(median(runs[i])), 9) + " | "
                  + pad(fmt(median(references[i])), 23) + " | " + pad(median(ratios[i]).map { String(format: "%.2f×", $0) } ?? "-", 5))
        }
    }
}
print("")
print("plaintext rows are plaintext (no CURVE); the CURVE row encrypts every byte")

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
    var distributedRate: Double?, trainingRate: Double?
    // One `cohort watch` until the job ends (it asks once a second over its connection): a
    // `cohort status` process every quarter second cost the two cores about 6% of their time
    // in process start-up alone, while `cohort train` beside it is not watched at all. The
    // rates come from the job's own timestamps, not from when this notices the end.
    let (watch, _) = try cohort(["watch", "\(id)"], environment: env)
    if watch.terminationStatus == 0 {
        let (_, text) = try cohort(["status", "\(id)", "--json"], environment: env)
        if let s = try? JSONDecoder().decode(StatusReply.self, from: Data(text.utf8)), s.job.state == "completed",
           let running = s.job.stateTimes["running"], let done = s.job.stateTimes["completed"] {
            distributedRate = Double(steps * batch) / (done - running)
            // The steps alone: no data loading (which `cohort train` does not count either) and no
            // evaluation (which it does count: 10,000 test examples once, a few ms).
            trainingRate = s.metrics?["train_seconds"].map { Double(steps * batch) / $0.value }
        }
    }
    print("")
    print("end-to-end training, Fashion-MNIST MLP 784-256-128-10, batch \(batch), \(steps) steps (samples/s; distributed includes the workers' data loading):")
    print(String(format: "  1 process × 2 threads (cohort train):            %8.0f", singleRate ?? .nan))
    print(String(format: "  2 workers × 1 thread (coordinator + ipc, CURVE): %8.0f   ratio %.2f×", distributedRate ?? .nan,
                 (distributedRate ?? .nan) / (singleRate ?? .nan)))
    print(String(format: "    its steps alone (the job's train_seconds):    %8.0f   ratio %.2f×", trainingRate ?? .nan,
                 (trainingRate ?? .nan) / (singleRate ?? .nan)))
}

if only == nil { try endToEnd() }
