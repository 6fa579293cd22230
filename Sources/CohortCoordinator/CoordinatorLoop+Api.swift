import CohortCompute
import CohortSpec
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
        let caller = caller(of: frames[1])
        if let denial = Access.denial(caller, request.method, on: .api) {
            return deny(socket, identity, request, caller, denial)
        }
        do {
            try answer(socket, identity, request, caller: caller)
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

    private func answer(_ socket: Socket, _ identity: [UInt8], _ request: ApiRequest, caller: Caller) throws {
        let principal = caller.name
        /// Researchers see and cancel only their own jobs.
        func ownJob(_ id: Job.ID) throws -> Bool {
            guard caller.role == .researcher else { return true }
            let job = try store.job(id)
            if job.owner == principal { return true }
            deny(socket, identity, request, caller, "job \(id) belongs to \(job.owner); researchers see and cancel only their own jobs")
            return false
        }
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
            // Every waiting job's spec is read on each scheduling pass: a spec is a page of YAML.
            guard submit.spec.utf8.count <= JobSpec.maxBytes else {
                return fail(socket, identity, request, .badRequest, "the job spec is \(submit.spec.utf8.count) bytes; at most \(JobSpec.maxBytes / 1024) KiB")
            }
            let newJob: NewJob
            do { newJob = try settings.parseSpec(submit.spec, principal) } catch let rejected as SpecRejected {
                return fail(socket, identity, request, .badRequest, rejected.description)
            }
            // When no worker changed since the last full pass, only the new job needs a look; if it
            // cannot be placed it is stored straight as waiting, with its reason, in one transaction.
            let now = Date()
            let reason = workersChanged ? nil
                : Scheduler.plan(jobs: [Job.provisional(newJob, at: now)], workers: try placeableWorkers(), now: now).reasons[0]
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
            // A researcher sees their own jobs: filtered before the limit, so that others' newer
            // jobs cannot push theirs out of the page.
            let jobs = try store.jobs(state: state, owner: caller.role == .researcher ? principal : nil,
                                      limit: min(max(query.limit ?? 1000, 1), 10_000))
            reply(socket, identity, request, JobsReply(jobs: jobs.map { JobView($0, workers: names[$0.id] ?? []) }))
        case ApiMethod.status:
            let id = try body(JobRequest.self).job
            guard try ownJob(id) else { return }
            var job = try view(id)
            let events = try store.latestEvents(job: id, count: 20).map(EventView.init)
            let byName = Dictionary(try store.workers().map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            let members = job.workers.compactMap { byName[$0].map(WorkerView.init) }
            let metrics = try store.latestMetrics(job: id).mapValues { MetricView(step: $0.step, value: $0.value) }
            var live: LiveView?
            if let run = runs[id], let state = run.state {
                job.step = state.step
                let losses = run.losses.values.map(\.loss)
                let links = run.members.map { m in
                    LinkView(member: m, institution: byName[m]?.institution ?? "?", bytesIn: run.memberBytesIn[m] ?? 0,
                             bytesOut: run.memberBytesOut[m] ?? 0, rttMs: run.rttMs[m], bandwidthMBps: run.bandwidth[m])
                }
                live = LiveView(step: state.step, trainLoss: losses.isEmpty ? nil : losses.reduce(0, +) / Double(losses.count),
                                samplesPerSecond: run.samplesPerSecond, bytesIn: run.bytesIn, bytesOut: run.bytesOut, links: links)
            }
            reply(socket, identity, request, StatusReply(job: job, events: events, members: members, metrics: metrics, live: live))
        case ApiMethod.cancel:
            let id = try body(JobRequest.self).job
            guard try ownJob(id) else { return }
            try store.transition(id, to: .cancelled, reason: "cancelled by \(principal)", actor: principal)
            endRun(id, reason: "cancelled by \(principal)")
            persistSuspended(id)
            logger.info("job cancelled", metadata: ["job.id": "\(id)", "by": "\(principal)"])
            workersChanged = true // its workers are free for others
            schedule(now: Date())
            reply(socket, identity, request, try view(id))
        case ApiMethod.resume:
            let id = try body(JobRequest.self).job
            guard try ownJob(id) else { return }
            let job = try store.job(id)
            guard job.state == .failed || job.state == .cancelled else {
                return fail(socket, identity, request, .conflict, "job \(id) is \(job.state.rawValue); only a failed or cancelled job can be resumed")
            }
            let from = try suspended[id].map { "step \($0.step)" } ?? store.latestCheckpoint(job: id).map { "its checkpoint at step \($0.step)" } ?? "the start"
            try store.transition(id, to: .queued, reason: "resumed by \(principal); continues from \(from)", actor: principal)
            workersChanged = true
            schedule(now: Date())
            reply(socket, identity, request, try view(id))
        case ApiMethod.download:
            let d = try body(DownloadRequest.self)
            guard try ownJob(d.job) else { return }
            let checkpoint = try d.step.map { step in try store.checkpoints(job: d.job).first { $0.step == step } } ?? store.latestCheckpoint(job: d.job)
            guard let (_, path) = checkpoint, let file = FileHandle(forReadingAtPath: path) else {
                if let step = d.step {
                    return fail(socket, identity, request, .notFound,
                                "job \(d.job)'s checkpoint at step \(step) is gone (newer ones were written meanwhile): download again")
                }
                return fail(socket, identity, request, .notFound, "job \(d.job) has no checkpoint yet")
            }
            defer { try? file.close() }
            guard d.offset >= 0, (1...(8 << 20)).contains(d.length) else {
                return fail(socket, identity, request, .badRequest, "offset must be ≥ 0 and length from 1 to 8 MiB")
            }
            try file.seek(toOffset: UInt64(d.offset))
            let chunk = try file.read(upToCount: d.length) ?? Data()
            send(socket, to: identity, .apiReply(ApiReply(requestId: request.requestId, status: .ok, body: Array(chunk))))
        case ApiMethod.workers:
            reply(socket, identity, request, WorkersReply(workers: try store.workers().map(WorkerView.init)))
        case ApiMethod.events:
            let query = try body(EventsRequest.self)
            if let job = query.job { guard try ownJob(job) else { return } }
            // Without a job, a researcher sees their own events, filtered before the limit.
            // Without `after`, the newest events (a look at the log); with it, the next page.
            let events = try store.events(job: query.job, actor: caller.role == .researcher && query.job == nil ? principal : nil,
                                          afterId: query.after ?? 0, limit: min(max(query.limit ?? 1000, 1), 10_000),
                                          newest: query.after == nil)
            reply(socket, identity, request, EventsReply(events: events.map(EventView.init)))
        case ApiMethod.enroll:
            let enroll = try body(EnrollRequest.self)
            guard case let .enrollee(key) = caller else { return fail(socket, identity, request, .conflict, "this key is already enrolled") }
            // Names are shown in operators' terminals: no spaces, and no control characters (an
            // escape sequence in a name would run in whoever lists it).
            if let name = enroll.name, name.isEmpty || name.count > 64 || name.contains(where: { $0.isWhitespace || Self.isControl($0) }) {
                return fail(socket, identity, request, .badRequest, "name must be 1 to 64 characters without spaces or control characters")
            }
            let p = try store.redeem(secretHash: Self.hash(enroll.secret), publicKey: key, name: enroll.name)
            principalCache[key] = nil
            logger.notice("enrolled", metadata: ["principal": "\(p.name)", "role": "\(p.role.rawValue)", "institution": "\(p.institution)"])
            reply(socket, identity, request, PrincipalView(p))
        case ApiMethod.token:
            let t = try body(TokenRequest.self)
            guard let role = Principal.Role(rawValue: t.role), role != .admin else {
                return fail(socket, identity, request, .badRequest, "role must be worker, researcher or operator, got `\(t.role)`")
            }
            guard !t.institution.isEmpty, t.institution.count <= 64, !t.institution.contains(where: { $0.isWhitespace || $0 == "," || Self.isControl($0) }) else {
                return fail(socket, identity, request, .badRequest, "institution must be 1 to 64 characters without spaces, commas or control characters")
            }
            guard t.ttlSeconds > 0, t.ttlSeconds <= 30 * 86_400 else {
                return fail(socket, identity, request, .badRequest, "ttl must be more than 0 and at most 30 days")
            }
            var secret = [UInt8](repeating: 0, count: 32)
            var rng = SystemRandomNumberGenerator() // getrandom(2) on Linux
            for i in secret.indices { secret[i] = UInt8.random(in: 0...255, using: &rng) }
            let secretHex = secret.map { String(format: "%02x", $0) }.joined()
            let expires = Date().addingTimeInterval(t.ttlSeconds)
            try store.createToken(secretHash: Self.hash(secretHex), institution: t.institution, role: role, expiresAt: expires, createdBy: principal)
            let token = JoinToken(address: settings.address.description, publicKey: publicKey?.z85 ?? "", institution: t.institution,
                                  role: role.rawValue, expiresAt: expires.timeIntervalSince1970, secret: secretHex)
            reply(socket, identity, request, TokenReply(token: token.text, expiresAt: expires.timeIntervalSince1970))
        case ApiMethod.revoke:
            let name = try body(RevokeRequest.self).principal
            let p = try store.revoke(name, actor: principal)
            principalCache = [:]
            logger.notice("revoked", metadata: ["principal": "\(name)", "by": "\(principal)"])
            reply(socket, identity, request, PrincipalView(p))
        case ApiMethod.principals:
            reply(socket, identity, request, PrincipalsReply(principals: try store.principals().map(PrincipalView.init)))
        default:
            fail(socket, identity, request, .badRequest,
                 "unknown method `\(request.method)`; this coordinator knows: hello, submit, jobs, status, cancel, workers, events, enroll, token, revoke, principals")
        }
    }

    func view(_ id: Job.ID) throws -> JobView {
        JobView(try store.job(id), workers: try store.assignedWorkerNames(of: id))
    }

    /// Join-token secrets are kept only as their SHA-256.
    static func hash(_ secret: String) -> String {
        var h = SHA256()
        h.update(Array(secret.utf8))
        return SHA256.hex(h.finish())
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

extension CoordinatorLoop {
    /// A control or format character (ESC, BEL, a bidi override…): never part of a name.
    static func isControl(_ c: Character) -> Bool {
        c.unicodeScalars.contains { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format }
    }

    /// Peer text made safe for one line of a terminal: control characters become spaces.
    static func oneLine(_ text: some StringProtocol, limit: Int = 2000) -> String {
        String(String(text.prefix(limit)).map { isControl($0) || $0.isNewline ? " " : $0 })
    }
}
