// Coordinator benchmark: submit throughput, `status` latency with 10,000 jobs in the database,
// and the coordinator's CPU share while 1,000 simulated workers heartbeat once a second.
// Run in release mode (it starts the release `cohort coordinator` beside this binary):
//
//     swift build -c release && .build/release/cohort-bench-coordinator
//
// Latencies are an in-process client's round trip over tcp loopback with CURVE on (what a
// script or the CLI pays after its start-up), not process start-up.
import CohortClient
import CohortTransport
import CohortWire
import Foundation

let args = CommandLine.arguments
func option(_ name: String, _ fallback: Int) -> Int { args.firstIndex(of: name).flatMap { Int(args[$0 + 1]) } ?? fallback }
let jobCount = option("--jobs", 10_000)
let workerCount = option("--workers", 1_000)
let statusSamples = option("--status-samples", 2_000)

let binary = URL(fileURLWithPath: args[0]).deletingLastPathComponent().appendingPathComponent("cohort").path
guard FileManager.default.isExecutableFile(atPath: binary) else {
    print("error: \(binary) is missing; build it with `swift build -c release --product cohort`")
    exit(1)
}
let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("cohort-bench-\(getpid())").path
let port = 30_000 + Int(getpid() % 20_000)
let coordinator = Process()
coordinator.executableURL = URL(fileURLWithPath: binary)
coordinator.arguments = ["coordinator", "--data-dir", dataDir, "--listen", "127.0.0.1:\(port)", "--heartbeat-interval", "1",
                         "--missed-heartbeats", "5"]
let logPath = dataDir + ".log"
_ = FileManager.default.createFile(atPath: logPath, contents: nil)
coordinator.standardError = FileHandle(forWritingAtPath: logPath)
try coordinator.run()
defer {
    coordinator.terminate()
    coordinator.waitUntilExit()
    try? FileManager.default.removeItem(atPath: dataDir)
    if CommandLine.arguments.contains("--keep-log") { print("coordinator log: \(logPath)") } else { try? FileManager.default.removeItem(atPath: logPath) }
}

// Wait for the keys and a hello; the benchmark acts as the first admin.
var client: Client?
for _ in 0..<200 {
    if let key = try? CurveKeyPair.loadPublicKey(from: dataDir + "/coordinator.key.pub"),
       let userKeys = try? CurveKeyPair.load(from: dataDir + "/admin.key"),
       let c = try? Client(address: CoordinatorAddress(host: "127.0.0.1", port: port), credentials: .curve(keys: userKeys, serverKey: key)),
       (try? c.hello()) != nil {
        client = c
        break
    }
    Thread.sleep(forTimeInterval: 0.05)
}
guard let client, let serverKey = try? CurveKeyPair.loadPublicKey(from: dataDir + "/coordinator.key.pub") else {
    print("error: the coordinator did not start")
    exit(1)
}

func percentile(_ sorted: [Double], _ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0) // utime, stime
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

print("Cohort coordinator benchmark (release, CURVE on, tcp loopback, SQLite synchronous=FULL)")
print("")

// 1. submit throughput
let spec = "name: bench\nmodel: {kind: mlp}\ndata: {dataset: digits}\ntraining: {steps: 10}\n"
let submitStart = Date()
var chunkStart = Date()
var chunkRates: [String] = []
let chunk = max(jobCount / 5, 1)
for i in 0..<jobCount {
    _ = try client.submit(spec: spec, requestId: "bench-\(i)")
    if (i + 1) % chunk == 0 {
        chunkRates.append(String(format: "%.0f", Double(chunk) / Date().timeIntervalSince(chunkStart)))
        chunkStart = Date()
    }
}
let submitSeconds = Date().timeIntervalSince(submitStart)
print(String(format: "submit:  %d jobs in %.2f s = %.0f jobs/s (each acknowledged after its transaction is durable)",
             jobCount, submitSeconds, Double(jobCount) / submitSeconds))
print("         jobs/s per fifth of the run: \(chunkRates.joined(separator: ", "))")

// 2. status latency with jobCount jobs in the database
var latencies: [Double] = []
var rng = SystemRandomNumberGenerator()
for _ in 0..<statusSamples {
    let id = Int64.random(in: 1...Int64(jobCount), using: &rng)
    let t = DispatchTime.now().uptimeNanoseconds
    _ = try client.status(job: id)
    latencies.append(Double(DispatchTime.now().uptimeNanoseconds - t) / 1e6)
}
latencies.sort()
print(String(format: "status:  p50 %.3f ms, p99 %.3f ms over %d calls with %d jobs in the database (goal: p99 < 5 ms)",
             percentile(latencies, 0.5), percentile(latencies, 0.99), statusSamples, jobCount))

// 3. CPU share while workerCount simulated workers heartbeat once a second
let context = try Context(ioThreads: 1, maxSockets: 2 * workerCount + 64)
var workers: [Socket] = []
let enrolStart = Date()
var workerKeys: [CurveKeyPair] = []
for i in 0..<workerCount { // each worker enrols with its own single-use token, as sites do
    let token = try JoinToken(text: try client.call(ApiMethod.token, TokenRequest(institution: "inst-\(i % 10)", role: "worker", ttlSeconds: 600),
                                                   as: TokenReply.self).token)
    let keys = try CurveKeyPair.generate()
    let enrollee = try Client(address: CoordinatorAddress(host: "127.0.0.1", port: port), credentials: .curve(keys: keys, serverKey: serverKey),
                              context: context)
    _ = try enrollee.call(ApiMethod.enroll, EnrollRequest(secret: token.secret, name: "sim-\(i)"), as: PrincipalView.self)
    workerKeys.append(keys)
}
print(String(format: "enrol:   %d workers enrolled with join tokens in %.1f s", workerCount, Date().timeIntervalSince(enrolStart)))
for i in 0..<workerCount {
    let s = try Socket(context, .dealer)
    try s.setLinger(milliseconds: 0)
    try s.makeCurveClient(keys: workerKeys[i], serverKey: serverKey)
    try s.connect(CoordinatorAddress(host: "127.0.0.1", port: port).endpoints.control)
    let request = try ApiRequest(requestId: 1, method: ApiMethod.register,
                                 json: RegisterRequest(name: "sim-\(i)", institution: "inst-\(i % 10)", cores: 8, memoryBytes: 16 << 30))
    try s.send(Message.apiRequest(request).encode())
    workers.append(s)
}
let poller = Poller()
for w in workers { poller.add(w) }
@MainActor func drainReplies(until deadline: Date) throws -> Int {
    var got = 0
    while Date() < deadline {
        let ready = try poller.poll(timeoutMilliseconds: max(1, Int(deadline.timeIntervalSinceNow * 1000)))
        for i in ready { while (try? workers[i].receive(dontWait: true)) != nil { got += 1 } }
    }
    return got
}
// Real workers heartbeat from the moment they register; so do these while the rest register.
var sequence: UInt64 = 0
@MainActor func beatAll() throws {
    for w in workers {
        sequence += 1
        try w.send(Message.heartbeat(Heartbeat(sequence: sequence, sentAtNanos: 0)).encode())
    }
}
var registered = 0
for _ in 0..<5 {
    registered += try drainReplies(until: Date().addingTimeInterval(1))
    try beatAll()
}
registered = try client.workers().count
_ = try drainReplies(until: Date().addingTimeInterval(1))
let seconds = 10
let cpuBefore = cpuSeconds(coordinator.processIdentifier)
let wallStart = Date()
var echoes = 0
for second in 0..<seconds {
    // Spread each second's heartbeats over ten slices, as real workers' clocks are spread.
    for slice in 0..<10 {
        for i in stride(from: slice, to: workers.count, by: 10) {
            sequence += 1
            try workers[i].send(Message.heartbeat(Heartbeat(sequence: sequence, sentAtNanos: 0)).encode())
        }
        echoes += try drainReplies(until: wallStart.addingTimeInterval(Double(second) + Double(slice + 1) / 10))
    }
}
let wall = Date().timeIntervalSince(wallStart)
let cpu = cpuSeconds(coordinator.processIdentifier) - cpuBefore
print(String(format: "workers: %d registered, %d heartbeats/s for %d s, %d echoed: coordinator CPU %.1f%% of one core (goal < 10%%)",
             registered, workers.count, seconds, echoes, 100 * cpu / wall))
