import ArgumentParser
import CohortClient
import CohortSpec
import CohortWire
import Foundation

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Submit a job spec (YAML) to the coordinator.")

    @Argument(help: "The job spec file.") var file: String
    @Option(help: "Makes a retried submit idempotent: the same id never creates a second job. Default: random.")
    var requestId: String = UUID().uuidString
    @OptionGroup var options: ClientOptions

    func run() throws {
        var info = stat()
        guard stat(file, &info) == 0 else { throw ValidationError("cannot read \(file): \(String(cString: strerror(errno)))") }
        guard info.st_mode & S_IFMT != S_IFDIR else { throw ValidationError("\(file) is a directory: give the job spec's YAML file") }
        // Read up to one byte past the limit (a pipe has no size to check first).
        guard let handle = FileHandle(forReadingAtPath: file) else { throw ValidationError("cannot read \(file)") }
        let data = (try? handle.read(upToCount: JobSpec.maxBytes + 1)) ?? Data()
        try? handle.close()
        guard data.count <= JobSpec.maxBytes else {
            throw ValidationError("\(file) is more than \(JobSpec.maxBytes / 1024) KiB; a job spec is at most \(JobSpec.maxBytes / 1024) KiB")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ValidationError("cannot read \(file) as UTF-8 text") }
        // Checked here first, so mistakes are reported with the file's name before any network.
        do { _ = try JobSpec.parse(yaml: text, source: file) } catch let error as SpecError {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            throw ExitCode(2)
        }
        try options.withClient { client in
            let reply = try client.submit(spec: text, requestId: requestId)
            if options.json {
                try options.printJSON(["job": reply.job.id])
            } else {
                print("job \(reply.job.id) \(reply.created ? "submitted" : "was already submitted with this request id"): \(reply.job.state)"
                      + (reply.job.reason.map { " (\($0))" } ?? ""))
            }
        }
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")
    @Option(help: "Only jobs in this state: queued, waiting, running, completed, failed, cancelled.") var state: String?
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client in
            let jobs = try client.jobs(state: state)
            if options.json { return try options.printJSON(JobsReply(jobs: jobs)) }
            var table = Table(header: ["ID", "NAME", "OWNER", "STATE", "STEP", "WORKERS", "REASON"])
            for j in jobs {
                table.rows.append(["\(j.id)", j.name, j.owner, j.state, "\(j.step)/\(j.totalSteps)",
                                   j.workers.isEmpty ? "-" : j.workers.joined(separator: ","), j.reason ?? ""])
            }
            print(table.render())
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show one job: state and why, progress, latest loss and accuracy, throughput, members, recent events.")
    @Argument(help: "The job id.") var job: Int64
    @Flag(help: "Redraw every second until the job ends (like `cohort watch`).") var watch = false
    @OptionGroup var options: ClientOptions

    func run() throws {
        if options.json && watch {
            throw ValidationError("watching redraws a screen; with --json, poll `cohort status JOB --json` instead")
        }
        try options.withClient { client in
            if options.json { return try options.printJSON(try client.status(job: job)) }
            guard watch else { return say(Self.render(try client.status(job: job))) }
            let interactive = isatty(1) != 0
            var lastLines = 0
            var silentSince: Date?
            while true {
                let s: StatusReply
                do { s = try client.status(job: job) } catch ClientError.unreachable where Date().timeIntervalSince(silentSince ?? Date()) < 60 {
                    // A coordinator restarting: keep watching for a minute before giving up.
                    if silentSince == nil {
                        silentSince = Date()
                        FileHandle.standardError.write(Data("the coordinator does not answer; still watching\n".utf8))
                    }
                    Thread.sleep(forTimeInterval: 1)
                    continue
                }
                silentSince = nil
                let text = Self.render(s, events: interactive ? 5 : 0)
                if interactive {
                    if lastLines > 0 { FileHandle.standardOutput.write(Data("\u{1B}[\(lastLines)F\u{1B}[J".utf8)) }
                    say(text)
                    // Screen rows, not lines: a line wider than the terminal wraps, and the next
                    // redraw must move up over all of it.
                    var size = winsize()
                    let columns = ioctl(1, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
                    lastLines = text.split(separator: "\n", omittingEmptySubsequences: false)
                        .reduce(0) { $0 + max(1, ($1.count + columns - 1) / columns) }
                } else {
                    say(text.split(separator: "\n").prefix(4).joined(separator: "\n"))
                }
                if s.job.state == "completed" { return }
                // A script waiting on `watch` learns that the job did not succeed.
                if s.job.state == "failed" || s.job.state == "cancelled" { throw ExitCode(1) }
                Thread.sleep(forTimeInterval: 1)
            }
        }
    }

    static func render(_ s: StatusReply, events: Int = 10) -> String {
        let j = s.job
        var lines: [String] = []
        lines.append("job \(j.id)  \(j.name)  owner \(j.owner)  priority \(j.priority)")
        lines.append("state     \(j.state) since \(Format.time(j.stateChangedAt))" + (j.reason.map { ": \($0)" } ?? ""))
        let fraction = j.totalSteps > 0 ? Double(j.step) / Double(j.totalSteps) : 0
        let width = 30, filled = Int(fraction * Double(width))
        lines.append("progress  [" + String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled) + "] "
                     + "step \(j.step)/\(j.totalSteps) (\(Int(fraction * 100))%)")
        var stats: [String] = []
        if let loss = s.live?.trainLoss { stats.append(String(format: "train loss %.4f", loss)) }
        if let m = s.metrics?["test_loss"] { stats.append(String(format: "test loss %.4f", m.value)) }
        if let m = s.metrics?["test_accuracy"] { stats.append(String(format: "test accuracy %.2f%% (step %d)", 100 * m.value, m.step)) }
        if let live = s.live {
            stats.append(String(format: "%.0f samples/s", live.samplesPerSecond))
            stats.append(String(format: "%.1f MB in, %.1f MB out", Double(live.bytesIn) / 1e6, Double(live.bytesOut) / 1e6))
        }
        if !stats.isEmpty { lines.append("metrics   " + stats.joined(separator: ", ")) }
        if let links = s.live?.links, !links.isEmpty {
            lines.append("links     per institution: bytes to / from the coordinator, heartbeat round trip (queueing at both ends included), measured bandwidth")
            for institution in Set(links.map(\.institution)).sorted() {
                let l = links.filter { $0.institution == institution }
                let rtts = l.compactMap(\.rttMs), bws = l.compactMap(\.bandwidthMBps)
                lines.append(String(format: "  %@  %.1f MB up, %.1f MB down", institution, Double(l.reduce(0) { $0 + $1.bytesIn }) / 1e6,
                                    Double(l.reduce(0) { $0 + $1.bytesOut }) / 1e6)
                             + (rtts.isEmpty ? "" : String(format: ", rtt %.2f ms", rtts.reduce(0, +) / Double(rtts.count)))
                             + (bws.isEmpty ? "" : String(format: ", %.0f MB/s", bws.min()!)))
            }
        }
        if let members = s.members, !members.isEmpty {
            lines.append("members   (min \(j.minWorkers), max \(j.maxWorkers))")
            for (rank, w) in members.enumerated() {
                lines.append("  rank \(rank)  \(w.name)  \(w.institution)  \(w.state)  heartbeat \(Format.ago(w.lastHeartbeat))")
            }
        } else {
            lines.append("members   none (min \(j.minWorkers), max \(j.maxWorkers))")
        }
        if events > 0 {
            lines.append("events")
            for e in s.events.suffix(events) { lines.append("  \(Format.time(e.at))  \(e.kind)  \(e.actor)  \(e.detail)") }
        }
        return lines.joined(separator: "\n")
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Redraw a job's status every second until it ends.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var options: ClientOptions

    func run() throws {
        var status = Status()
        status.job = job
        status.watch = true
        status.options = options
        try status.run()
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a job; its workers are released.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client in
            let j = try client.cancel(job: job)
            if options.json { return try options.printJSON(j) }
            print("job \(j.id) cancelled")
        }
    }
}

struct Workers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the consortium's workers.")
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client in
            let workers = try client.workers()
            if options.json { return try options.printJSON(WorkersReply(workers: workers)) }
            var table = Table(header: ["ID", "NAME", "INSTITUTION", "STATE", "JOB", "CORES", "MEMORY", "LAST HEARTBEAT"])
            for w in workers {
                table.rows.append(["\(w.id)", w.name, w.institution, w.state, w.job.map(String.init) ?? "-", "\(w.cores)",
                                   Format.gib(w.memoryBytes), Format.ago(w.lastHeartbeat)])
            }
            print(table.render())
        }
    }
}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the audit trail, of one job or of everything.")
    @Argument(help: "Only events of this job.") var job: Int64?
    @Option(help: "Only events after this event id.") var after: Int64?
    @Option(help: "At most this many events.") var limit: Int = 1000
    @OptionGroup var options: ClientOptions

    func run() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 10000, got \(limit)") }
        try options.withClient { client in
            let events = try client.events(job: job, after: after, limit: limit)
            if options.json { return try options.printJSON(EventsReply(events: events)) }
            var table = Table(header: ["ID", "TIME", "ACTOR", "EVENT", "JOB", "DETAIL"])
            for e in events {
                table.rows.append(["\(e.id)", Format.time(e.at), e.actor, e.kind, e.job.map(String.init) ?? "-", e.detail])
            }
            print(table.render())
        }
    }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put a failed or cancelled job back in the queue; it continues from its last checkpoint.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client in
            let j = try client.resume(job: job)
            if options.json { return try options.printJSON(j) }
            print("job \(j.id) \(j.state)" + (j.reason.map { ": \($0)" } ?? ""))
        }
    }
}

struct Download: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a job's model (its final or latest checkpoint, safetensors) in chunks.")
    @Argument(help: "The job id.") var job: Int64
    @Option(help: "Where to write the file (written to FILE.cohort-download, then renamed over FILE); a directory gets DIR/job-JOB.safetensors.")
    var out: String
    @OptionGroup var options: ClientOptions

    func run() throws {
        guard !self.out.isEmpty else { throw ValidationError("--out is empty: give a file or a directory") }
        var isDirectory: ObjCBool = false
        let out = FileManager.default.fileExists(atPath: self.out, isDirectory: &isDirectory) && isDirectory.boolValue
            ? (self.out as NSString).appendingPathComponent("job-\(job).safetensors") : self.out
        if FileManager.default.fileExists(atPath: out, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ValidationError("\(out) is a directory; give a file name")
        }
        // Only a regular file is replaced (not a device such as /dev/null, a pipe or a socket).
        var existing = stat()
        if stat(out, &existing) == 0, existing.st_mode & S_IFMT != S_IFREG {
            throw ValidationError("\(out) exists and is not a regular file; give another name")
        }
        // A file of ours beside it, named so that no one else's is taken for it (a plain
        // FILE.part may be a user's); an interrupted download's is reused.
        let part = out + ".cohort-download"
        let fd = open(part, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CommandFailure("cannot create \(part): \(String(cString: strerror(errno)))") }
        let file = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var size = 0
        do {
            try options.withClient { client in
                size = try client.download(job: job) { bytes in try file.write(contentsOf: bytes) }
            }
            try file.synchronize()
            try file.close()
            // rename(2) replaces a file at `out` atomically: readers see the old model or the new one.
            guard rename(part, out) == 0 else { throw CommandFailure("cannot rename \(part) to \(out): \(String(cString: strerror(errno)))") }
            let parent = open((out as NSString).deletingLastPathComponent.isEmpty ? "." : (out as NSString).deletingLastPathComponent, O_RDONLY)
            if parent >= 0 {
                fsync(parent)
                close(parent)
            }
        } catch {
            try? file.close()
            try? FileManager.default.removeItem(atPath: part)
            throw error
        }
        print("wrote \(out) (\(size) bytes)")
    }
}
