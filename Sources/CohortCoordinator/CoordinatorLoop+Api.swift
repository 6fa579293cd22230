import CohortStore
import CohortTransport
import CohortWire
import Foundation

extension CoordinatorLoop {
    func handleApi(_ socket: Socket, _ frames: [InboundFrame]) throws {
        let identity = frames[0].bytes
        let message: Message
        do { message = try decode(frames) } catch { return refuseMalformed(socket, identity, error) }
        guard case let .apiRequest(request) = message else {
            return refuseMalformed(socket, identity, .invalidValue(field: "envelope.type", reason: "is \(message.type), not an api request"))
        }
        stats.requests.add(1, ordering: .relaxed)
        let principal = frames[1].property("User-Id") ?? "anonymous"
        do {
            try answer(socket, identity, request, principal: principal)
        } catch let error as StoreError {
            let status: ApiReply.Status = switch error {
            case .notFound: .notFound
            case .illegalTransition, .conflict: .conflict
            case .database: .internalError
            }
            fail(socket, identity, request, status, error.description)
        } catch let error as DecodingError {
            fail(socket, identity, request, .badRequest, "the body of `\(request.method)` is not what it expects: \(Self.describe(error))")
        } catch {
            fail(socket, identity, request, .internalError, "\(error)")
        }
    }

    private func answer(_ socket: Socket, _ identity: [UInt8], _ request: ApiRequest, principal: String) throws {
        func body<T: Decodable>(_ type: T.Type) throws -> T {
            try JSONDecoder().decode(T.self, from: Data(request.body.isEmpty ? Array("{}".utf8) : request.body))
        }
        switch request.method {
        case ApiMethod.hello:
            reply(socket, identity, request, HelloReply(endpoints: settings.address.endpoints, publicKey: publicKey?.z85,
                                                        software: "cohort \(CohortCoordinator.version)"))
        case ApiMethod.submit:
            let submit = try body(SubmitRequest.self)
            guard !submit.requestId.isEmpty, submit.requestId.count <= 128 else {
                return fail(socket, identity, request, .badRequest, "requestId must be 1 to 128 characters")
            }
            let newJob: NewJob
            do { newJob = try settings.parseSpec(submit.spec, principal) } catch let rejected as SpecRejected {
                return fail(socket, identity, request, .badRequest, rejected.description)
            }
            // When no worker changed since the last full pass, only the new job needs a look; if it
            // cannot be placed it is stored straight as waiting, with its reason, in one transaction.
            let now = Date()
            let reason = workersChanged ? nil
                : Scheduler.plan(jobs: [Job.provisional(newJob, at: now)], workers: try store.workers(), now: now).reasons[0]
            // The key is per principal: another user's request id can never return their job.
            let (job, created) = try store.submit(newJob, requestKey: principal + "\u{1F}" + submit.requestId,
                                                  waitingReason: reason, at: now)
            if created {
                logger.info("job submitted", metadata: ["job.id": "\(job.id)", "owner": "\(principal)"])
                if reason == nil { scheduleNewJob(job, now: now) }
            }
            reply(socket, identity, request, SubmitReply(job: try view(job.id), created: created))
        case ApiMethod.jobs:
            let query = try body(JobsRequest.self)
            var state: Job.State?
            if let text = query.state {
                guard let s = Job.State(rawValue: text) else {
                    return fail(socket, identity, request, .badRequest,
                                "unknown state `\(text)`; one of: \(Job.State.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                state = s
            }
            let names = try store.assignedWorkerNames()
            let jobs = try store.jobs(state: state, limit: min(max(query.limit ?? 1000, 1), 10_000))
            reply(socket, identity, request, JobsReply(jobs: jobs.map { JobView($0, workers: names[$0.id] ?? []) }))
        case ApiMethod.status:
            let id = try body(JobRequest.self).job
            let job = try view(id)
            let events = try store.latestEvents(job: id, count: 20).map(EventView.init)
            reply(socket, identity, request, StatusReply(job: job, events: events))
        case ApiMethod.cancel:
            let id = try body(JobRequest.self).job
            try store.transition(id, to: .cancelled, reason: "cancelled by \(principal)", actor: principal)
            logger.info("job cancelled", metadata: ["job.id": "\(id)", "by": "\(principal)"])
            workersChanged = true // its workers are free for others
            schedule(now: Date())
            reply(socket, identity, request, try view(id))
        case ApiMethod.workers:
            reply(socket, identity, request, WorkersReply(workers: try store.workers().map(WorkerView.init)))
        case ApiMethod.events:
            let query = try body(EventsRequest.self)
            let events = try store.events(job: query.job, afterId: query.after ?? 0, limit: min(max(query.limit ?? 1000, 1), 10_000))
            reply(socket, identity, request, EventsReply(events: events.map(EventView.init)))
        default:
            fail(socket, identity, request, .badRequest,
                 "unknown method `\(request.method)`; this coordinator knows: hello, submit, jobs, status, cancel, workers, events")
        }
    }

    func view(_ id: Job.ID) throws -> JobView {
        JobView(try store.job(id), workers: try store.assignedWorkerNames(of: id))
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case let .keyNotFound(key, _): return "missing field `\(key.stringValue)`"
        case let .typeMismatch(_, c), let .valueNotFound(_, c):
            return "field `\(c.codingPath.map(\.stringValue).joined(separator: "."))` has the wrong type"
        case .dataCorrupted: return "not valid JSON"
        @unknown default: return "\(error)"
        }
    }
}

/// The coordinator's software version, reported by `hello`.
public enum CohortCoordinator {
    public static let version = "0.1.0"
}
