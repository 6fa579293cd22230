import GRDB

/// Versioned migrations. A migration, once released, never changes: add a new one.
enum Schema {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1: institutions, workers, jobs, assignments, metrics, checkpoints, events") { db in
            try db.execute(sql: """
                CREATE TABLE institutions (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    created_at REAL NOT NULL
                );
                CREATE TABLE workers (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    institution_id INTEGER NOT NULL REFERENCES institutions(id),
                    cores INTEGER NOT NULL,
                    memory_bytes INTEGER NOT NULL,
                    accelerators TEXT NOT NULL DEFAULT '',
                    state TEXT NOT NULL CHECK (state IN ('idle','busy','lost','gone')),
                    last_heartbeat REAL NOT NULL,
                    registered_at REAL NOT NULL
                );
                CREATE TABLE jobs (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    owner TEXT NOT NULL,
                    spec TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('queued','waiting','running','completed','failed','cancelled')),
                    reason TEXT,
                    priority INTEGER NOT NULL DEFAULT 0,
                    min_workers INTEGER NOT NULL,
                    max_workers INTEGER NOT NULL,
                    institutions TEXT NOT NULL DEFAULT '',
                    min_cores INTEGER NOT NULL DEFAULT 1,
                    min_memory_bytes INTEGER NOT NULL DEFAULT 0,
                    request_key TEXT UNIQUE,
                    submitted_at REAL NOT NULL,
                    state_changed_at REAL NOT NULL,
                    queued_at REAL, waiting_at REAL, running_at REAL,
                    completed_at REAL, failed_at REAL, cancelled_at REAL,
                    step INTEGER NOT NULL DEFAULT 0,
                    total_steps INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX jobs_by_state ON jobs(state, priority DESC, id);
                CREATE TABLE assignments (
                    job_id INTEGER NOT NULL REFERENCES jobs(id),
                    worker_id INTEGER NOT NULL REFERENCES workers(id),
                    rank INTEGER NOT NULL,
                    assigned_at REAL NOT NULL,
                    released_at REAL
                );
                CREATE INDEX assignments_open ON assignments(job_id) WHERE released_at IS NULL;
                CREATE UNIQUE INDEX one_open_assignment_per_worker ON assignments(worker_id) WHERE released_at IS NULL;
                CREATE TABLE metrics (
                    job_id INTEGER NOT NULL REFERENCES jobs(id),
                    step INTEGER NOT NULL,
                    name TEXT NOT NULL,
                    value REAL NOT NULL,
                    at REAL NOT NULL,
                    PRIMARY KEY (job_id, step, name)
                );
                CREATE TABLE checkpoints (
                    id INTEGER PRIMARY KEY,
                    job_id INTEGER NOT NULL REFERENCES jobs(id),
                    step INTEGER NOT NULL,
                    path TEXT NOT NULL,
                    bytes INTEGER NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE TABLE events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at REAL NOT NULL,
                    actor TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    job_id INTEGER,
                    worker_id INTEGER,
                    detail TEXT NOT NULL DEFAULT ''
                );
                CREATE INDEX events_by_job ON events(job_id, id);
                -- The audit trail is append-only.
                CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
                CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
                """)
        }
        m.registerMigration("v2: principals and join tokens") { db in
            try db.execute(sql: """
                CREATE TABLE principals (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    institution TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('admin','researcher','operator','worker')),
                    public_key TEXT NOT NULL UNIQUE,
                    created_at REAL NOT NULL,
                    revoked_at REAL
                );
                CREATE TABLE join_tokens (
                    id INTEGER PRIMARY KEY,
                    secret_hash TEXT NOT NULL UNIQUE,
                    institution TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('researcher','operator','worker')),
                    created_by TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    expires_at REAL NOT NULL,
                    used_at REAL,
                    used_by INTEGER REFERENCES principals(id)
                );
                """)
        }
        return m
    }
}
