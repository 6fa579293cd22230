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
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
            throw ValidationError("cannot read \(file): \(error.localizedDescription)")
        }
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
    static let configuration = CommandConfiguration(abstract: "Show one job: its state, why, its workers and recent events.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client in
            let s = try client.status(job: job)
            if options.json { return try options.printJSON(s) }
            let j = s.job
            print("job \(j.id)  \(j.name)  owner \(j.owner)  priority \(j.priority)")
            print("state    \(j.state) since \(Format.time(j.stateChangedAt))")
            if let reason = j.reason { print("reason   \(reason)") }
            print("workers  \(j.workers.isEmpty ? "none" : j.workers.joined(separator: ", ")) (min \(j.minWorkers), max \(j.maxWorkers))")
            print("progress step \(j.step) of \(j.totalSteps)")
            print("events")
            for e in s.events { print("  \(Format.time(e.at))  \(e.kind)  \(e.actor)  \(e.detail)") }
        }
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
