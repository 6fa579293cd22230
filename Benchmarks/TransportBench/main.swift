// Transport benchmark: one-way throughput of Cohort's transport against raw libzmq, side by side
// in one run. Run it in release mode:
//
//     swift build -c release --product cohort-bench-transport && .build/release/cohort-bench-transport
//
// Both sides: a DEALER sends COUNT messages of SIZE bytes zero-copy from one buffer, every one
// in flight (high-water marks unlimited), to a ROUTER over tcp loopback that receives and
// releases each; sender and receiver have a context and an I/O thread each. The raw side is
// Benchmarks/raw/raw_zmq.c, compiled here with `cc -O2` and run with the same malloc settings
// as Cohort's daemons (mallopt M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB, M_ARENA_MAX 1: "tuned"). Each cell is the
// best of ROUNDS alternating runs, so both sides see the same machine noise.
import CohortTransport
import Foundation

let sizes = [64 << 10, 1 << 20, 16 << 20, 64 << 20]
let arguments = CommandLine.arguments
let rounds = arguments.firstIndex(of: "--rounds").flatMap { Int(arguments[$0 + 1]) } ?? 3
let plainBytes = 1 << 30        // bytes moved per plaintext run
let curveBytes = 256 << 20      // CURVE is ~5× slower: fewer bytes keep the run short

Allocator.avoidPerMessageMapping(trimThreshold: 1 << 30)

// MARK: raw libzmq

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let rawSource = root.appendingPathComponent("Benchmarks/raw/raw_zmq.c").path
let rawBinary = FileManager.default.temporaryDirectory.appendingPathComponent("cohort-raw-zmq-bench-\(getpid())").path

func run(_ path: String, _ args: [String]) -> String? {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    do { try p.run() } catch { return nil }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { return nil }
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

guard run("/usr/bin/cc", ["-O2", "-o", rawBinary, rawSource, "-lzmq", "-lpthread"]) != nil else {
    print("error: could not compile \(rawSource) with cc; run deploy/setup.sh (needs gcc and libzmq3-dev)")
    exit(1)
}
defer { unlink(rawBinary) }

func raw(size: Int, count: Int, malloc: String, curve: Bool) -> Double {
    guard let text = run(rawBinary, ["\(size)", "\(count)", malloc, curve ? "1" : "0"]), let v = Double(text) else {
        print("error: the raw libzmq benchmark failed (size \(size))")
        exit(1)
    }
    return v
}

// MARK: Cohort

final class Buffer: @unchecked Sendable { // written once before the sends, then only read
    let bytes: UnsafeMutableRawBufferPointer
    init(size: Int) {
        bytes = .allocate(byteCount: size, alignment: 64)
        for i in 0..<size { bytes[i] = UInt8(truncatingIfNeeded: i &* 31) }
    }
    deinit { bytes.deallocate() }
}

/// Allows every test client; the benchmark measures the data path, not authentication.
struct AdmitAll: Authenticator {
    func authenticate(_ request: ZAPRequest) -> ZAPDecision { .accept(userId: "bench") }
}

func cohort(size: Int, count: Int, curve: Bool) throws -> Double {
    let serverKeys = try CurveKeyPair.generate(), clientKeys = try CurveKeyPair.generate()
    let bound = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)
    let shared = Shared()
    let receiver = Thread {
        do {
            let context = try Context()
            let zap = curve ? try ZAPHandler(context: context, authenticator: AdmitAll()) : nil
            let router = try Socket(context, .router)
            try router.setHighWaterMarks(send: 0, receive: 0)
            if let zap { try router.makeCurveServer(keys: serverKeys, zap: zap) }
            try router.bind("tcp://127.0.0.1:0")
            shared.endpoint = try router.lastEndpoint
            bound.signal()
            _ = try router.receive() // warm-up
            for _ in 0..<count {
                let frames = try router.receive()
                precondition(frames.count == 2 && frames[1].count == size)
            }
            shared.end = ContinuousClock.now
            zap?.stop()
        } catch {
            print("error: receiver: \(error)")
            exit(1)
        }
        done.signal()
    }
    receiver.start()
    bound.wait()
    let context = try Context()
    let dealer = try Socket(context, .dealer)
    try dealer.setHighWaterMarks(send: 0, receive: 0)
    if curve { try dealer.makeCurveClient(keys: clientKeys, serverKey: serverKeys.publicKey) }
    try dealer.connect(shared.endpoint)
    let buffer = Buffer(size: size)
    let payload = UnsafeRawBufferPointer(buffer.bytes)
    try dealer.send([.bytes([1])])
    Thread.sleep(forTimeInterval: 0.1)
    let start = ContinuousClock.now
    for _ in 0..<count {
        try dealer.send([.zeroCopy(payload, owner: buffer)])
    }
    done.wait()
    let seconds = (shared.end - start) / .seconds(1)
    return Double(size * count) / seconds
}

final class Shared: @unchecked Sendable { // handed between two threads through semaphores
    var endpoint = ""
    var end = ContinuousClock.now
}

// MARK: report

func gbps(_ v: Double) -> String { String(format: "%6.2f", v / 1e9) }
func label(_ size: Int) -> String { size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB" }

print("Cohort transport benchmark: one-way tcp loopback, GB/s, best of \(rounds) alternating rounds")
print("libzmq \(Transport.libzmqVersion), CURVE \(Transport.hasCurve ? "available" : "missing"); raw = Benchmarks/raw/raw_zmq.c")
print("malloc: tuned = mallopt M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB, M_ARENA_MAX 1 (Cohort's setting); plain = glibc defaults")
print("")
print("size     | raw plain | raw tuned | cohort tuned | cohort/raw tuned | raw CURVE | cohort CURVE | ratio")
print("---------|-----------|-----------|--------------|------------------|-----------|--------------|------")
var worst = Double.infinity
for size in sizes {
    var best = [String: Double]()
    func keep(_ k: String, _ v: Double) { best[k] = max(best[k] ?? 0, v) }
    let plainCount = max(plainBytes / size, 8)
    let curveCount = max(curveBytes / size, 4)
    for _ in 0..<rounds {
        keep("rawPlain", raw(size: size, count: plainCount, malloc: "plain", curve: false))
        keep("raw", raw(size: size, count: plainCount, malloc: "tuned", curve: false))
        keep("cohort", try cohort(size: size, count: plainCount, curve: false))
        keep("rawCurve", raw(size: size, count: curveCount, malloc: "tuned", curve: true))
        keep("cohortCurve", try cohort(size: size, count: curveCount, curve: true))
    }
    let ratio = best["cohort"]! / best["raw"]!
    let curveRatio = best["cohortCurve"]! / best["rawCurve"]!
    worst = min(worst, ratio)
    print(label(size).padding(toLength: 9, withPad: " ", startingAt: 0) +
          "|    \(gbps(best["rawPlain"]!)) |    \(gbps(best["raw"]!)) |       \(gbps(best["cohort"]!)) |" +
          String(format: "            %5.2f× |", ratio) +
          "    \(gbps(best["rawCurve"]!)) |       \(gbps(best["cohortCurve"]!)) |" + String(format: " %4.2f×", curveRatio))
}
print("")
print(String(format: "worst cohort/raw ratio (plaintext): %.2f× (goal ≥ 0.95×)", worst))
