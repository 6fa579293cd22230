import Foundation
import GRDB

/// The coordinator's durable state: one SQLite file in WAL mode, one writer. Every change is one
/// transaction together with its event, so a coordinator killed at any instant restarts from a
/// consistent database.
public final class Store: Sendable {
    let pool: DatabasePool
    public let path: String

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    public init(path: String) throws(StoreError) {
        self.path = path
        do {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            var config = Configuration()
            config.busyMode = .timeout(5)
            config.prepareDatabase { db in
                try db.execute(sql: "PRAGMA synchronous = FULL") // an acknowledged submit survives power loss
            }
            pool = try DatabasePool(path: path, configuration: config)
            try Schema.migrator.migrate(pool)
        } catch {
            throw .database("cannot open \(path): \(error)")
        }
    }

    func write<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try pool.write(body) } catch let e as StoreError { throw e } catch {
            throw .database("\(error)")
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try pool.read(body) } catch let e as StoreError { throw e } catch {
            throw .database("\(error)")
        }
    }

    /// A consistent online copy of the whole database (while the coordinator keeps writing).
    public func backup(to destination: String) throws(StoreError) {
        do {
            if FileManager.default.fileExists(atPath: destination) {
                throw StoreError.conflict("\(destination) already exists; choose a new file for the backup")
            }
            let target = try DatabaseQueue(path: destination)
            try pool.backup(to: target)
        } catch let e as StoreError { throw e } catch {
            throw .database("backup to \(destination) failed: \(error)")
        }
    }

    /// `PRAGMA integrity_check`: "ok" for a healthy database.
    public func integrityCheck() throws(StoreError) -> String {
        try read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "no answer" }
    }

    /// The journal mode in force ("wal").
    public func journalMode() throws(StoreError) -> String {
        try read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "" }
    }
}

// MARK: - Events

extension Store {
    static func appendEvent(_ db: Database, at: Date, actor: String, kind: String, job: Job.ID? = nil,
                            worker: Worker.ID? = nil, detail: String = "") throws {
        try db.execute(sql: "INSERT INTO events (at, actor, kind, job_id, worker_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       arguments: [at.timeIntervalSince1970, actor, kind, job, worker, detail])
    }

    /// Appends one event on its own (a denial, a daemon start).
    public func recordEvent(actor: String, kind: String, job: Job.ID? = nil, worker: Worker.ID? = nil,
                            detail: String = "", at: Date = Date()) throws(StoreError) {
        try write { db in try Self.appendEvent(db, at: at, actor: actor, kind: kind, job: job, worker: worker, detail: detail) }
    }

    /// The newest `count` events of a job, oldest first.
    public func latestEvents(job: Job.ID, count: Int) throws(StoreError) -> [Event] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?", arguments: [job, count])
                .reversed().map(Self.event(from:))
        }
    }

    static func event(from row: Row) -> Event {
        Event(id: row["id"], at: Date(timeIntervalSince1970: row["at"]), actor: row["actor"], kind: row["kind"],
              jobId: row["job_id"], workerId: row["worker_id"], detail: row["detail"])
    }

    /// Events after `afterId`, oldest first, at most `limit` (of one job, of one actor, when
    /// given: filtered before the limit): the first `limit` of them, or with `newest` the last
    /// `limit` (still oldest first), which is what a look at the log wants.
    public func events(job: Job.ID? = nil, actor: String? = nil, afterId: Int64 = 0, limit: Int = 1000,
                       newest: Bool = false) throws(StoreError) -> [Event] {
        try read { db in
            var sql = "SELECT * FROM events WHERE id > ?"
            var args: [any DatabaseValueConvertible] = [afterId]
            if let job { sql += " AND job_id = ?"; args.append(job) }
            if let actor { sql += " AND actor = ?"; args.append(actor) }
            sql += newest ? " ORDER BY id DESC LIMIT ?" : " ORDER BY id LIMIT ?"
            args.append(limit)
            let rows = try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).map(Self.event(from:))
            return newest ? rows.reversed() : rows
        }
    }
}
