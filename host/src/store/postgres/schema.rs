//! The shared store's schema, versioned in `http_spawn_meta`: created and migrated forward at
//! start, under an advisory lock so that hosts starting together migrate once; a database whose
//! schema is newer than this host's is refused.
//!
//! Two tables carry tasks. `tasks` holds every task's record until it is pruned, and is read by
//! the API; `runs` holds one small row per task not yet ended: which host holds it (`owner`,
//! `NULL` while it waits in the shared queue) and which attempt runs. Claims, leases and fences
//! touch only `runs`, which stays as small as the number of live tasks and is vacuumed
//! eagerly; a task's end deletes its row there.

use tokio_postgres::Client;

/// The schema this host writes: version 1 ([`SCHEMA`]) and every migration after it.
pub(super) const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Taken while the schema is created or migrated: one host at a time.
const MIGRATION_LOCK: i64 = 0x6874_7470_7370_776e; // "httpspwn"

/// Version 1 of the schema.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS http_spawn_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE nodes (
    id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    live INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 0,
    -- up, left (shut down) or lost (its lease expired)
    state TEXT NOT NULL DEFAULT 'up',
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ NOT NULL
);
CREATE INDEX nodes_up ON nodes (lease_until) WHERE state = 'up';
CREATE TABLE tasks (
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    spawned_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    worker TEXT NOT NULL,
    version TEXT NOT NULL,
    module_sha256 TEXT NOT NULL,
    duration INTEGER NOT NULL,
    payload TEXT,
    deadline_secs INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    on_host_loss TEXT NOT NULL,
    status TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    outcome TEXT,
    error TEXT,
    started_at BIGINT,
    ended_at BIGINT,
    fuel BIGINT NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 1,
    attempts JSONB NOT NULL DEFAULT '[]',
    logs_dropped_bytes BIGINT NOT NULL DEFAULT 0,
    ready_at BIGINT,
    parent_boot INTEGER,
    parent_seq BIGINT,
    PRIMARY KEY (boot, seq)
) WITH (fillfactor = 80);
CREATE INDEX tasks_by_time ON tasks (spawned_at, boot, seq);
CREATE INDEX tasks_by_status ON tasks (status, spawned_at, boot, seq);
CREATE INDEX tasks_by_name ON tasks (name, spawned_at, boot, seq);
CREATE INDEX tasks_by_worker ON tasks (worker, spawned_at, boot, seq);
CREATE INDEX tasks_by_end ON tasks (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX tasks_by_parent ON tasks (parent_boot, parent_seq, spawned_at, boot, seq)
    WHERE parent_boot IS NOT NULL;
CREATE TABLE runs (
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    owner INTEGER,
    attempt INTEGER NOT NULL,
    spawned_at BIGINT NOT NULL,
    ready_at BIGINT,
    PRIMARY KEY (boot, seq)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0,
        autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX runs_queue ON runs (spawned_at, boot, seq) WHERE owner IS NULL;
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE TABLE logs (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX logs_by_task ON logs (boot, seq, id);
CREATE TABLE modules (
    sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    current TEXT NOT NULL,
    current_source TEXT NOT NULL,
    current_installed_at BIGINT NOT NULL,
    previous TEXT,
    previous_source TEXT,
    previous_installed_at BIGINT,
    file_sha256 TEXT NOT NULL
);
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
-- What one host asks of a task another may hold (a kill, a message, an exit signal), by
-- task: taken by whichever host holds the task when it looks (or claims it), so that a host
-- lost meanwhile strands nothing.
CREATE TABLE commands (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    sender_boot INTEGER,
    sender_seq BIGINT,
    body BYTEA,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
CREATE INDEX commands_by_task ON commands (boot, seq, id);
CREATE INDEX commands_by_age ON commands (created_at);
-- Names registered by tasks, for the whole cluster. A name whose task has no row in `runs`
-- (it ended) is free: taken over by the next task that registers it, pruned meanwhile.
CREATE TABLE names (
    name TEXT PRIMARY KEY,
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX names_by_task ON names (boot, seq);
";

/// `MIGRATIONS[i]` takes the schema from version `i + 1` to `i + 2`, in the transaction that
/// records the new version.
const MIGRATIONS: [&str; 7] = [
    // 2 (issue #23): fewer indexes on `tasks`, as in the SQLite store. Every acceptance wrote
    // each of these, and a start and an end changed `status`, so that neither could be a
    // heap-only update: each wrote a new entry into every index of the table. Lists filtered
    // by status, name or worker read the time index instead (history is bounded by
    // `--max-history`); a task's start is now a heap-only update.
    "
DROP INDEX IF EXISTS tasks_by_status;
DROP INDEX IF EXISTS tasks_by_name;
DROP INDEX IF EXISTS tasks_by_worker;
",
    // 3 (issue #23): a task's log lines as a few values instead of a row each, in the form
    // the SQLite store keeps them (`columns::lines_blob`). Those written with its first start
    // go into its row (`log_head`), and so do those written with its end (`log_tail`): both
    // writes rewrite the row anyway. The others, one row per task and commit in `log_parts`.
    // A task's lines read: the head, the rows of `logs` (written before this version), those
    // of `log_parts`, the tail.
    "
ALTER TABLE tasks ADD COLUMN log_head BYTEA, ADD COLUMN log_tail BYTEA;
CREATE TABLE log_parts (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    lines BYTEA NOT NULL
);
CREATE INDEX log_parts_by_task ON log_parts (boot, seq, id);
",
    // 4 (issue #24): what a task returned, JSON text as it came (not `jsonb`, which would
    // parse and rewrite it at every write); `NULL` when it returned nothing.
    "ALTER TABLE tasks ADD COLUMN result TEXT;",
    // 5 (issue #25): when a task accepted to run later may start, its priority (also in
    // `runs`, where the shared queue is taken highest first), the task it retries, and the
    // schedule and tick that created it; the schedules; the paused workers. The shared queue's
    // index leaves out what waits for a time (scheduled tasks, restarts in their backoff),
    // which has an index by that time: a claim never walks past what is not yet due.
    "
ALTER TABLE tasks ADD COLUMN run_at BIGINT, ADD COLUMN priority SMALLINT NOT NULL DEFAULT 5,
    ADD COLUMN retry_of_boot INTEGER, ADD COLUMN retry_of_seq BIGINT, ADD COLUMN schedule TEXT,
    ADD COLUMN schedule_tick BIGINT, ADD COLUMN concurrency_key TEXT;
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    paused BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    last_tick BIGINT,
    last_boot INTEGER,
    last_seq BIGINT
);
CREATE TABLE paused_workers (name TEXT PRIMARY KEY);
ALTER TABLE runs ADD COLUMN priority SMALLINT NOT NULL DEFAULT 5;
DROP INDEX IF EXISTS runs_queue;
CREATE INDEX runs_queue ON runs (priority DESC, spawned_at, boot, seq)
    WHERE owner IS NULL AND ready_at IS NULL;
CREATE INDEX runs_due ON runs (ready_at) WHERE owner IS NULL AND ready_at IS NOT NULL;
",
    // 6 (issue #25): limits counted across the cluster. A task of a worker with limits is
    // `limited` in `runs`, with its worker and its concurrency key ('' for none) there: it waits
    // in a queue of its own, by worker and key, and is claimed only under its worker's limits,
    // counted from the limited rows that hosts hold. `limit_keys` keeps, by worker and key,
    // when one last started (keys take turns) and its rate's tokens. The shared queue's
    // indexes leave the limited tasks out.
    "
ALTER TABLE runs ADD COLUMN limited BOOLEAN NOT NULL DEFAULT false, ADD COLUMN worker TEXT,
    ADD COLUMN concurrency_key TEXT;
DROP INDEX IF EXISTS runs_queue;
CREATE INDEX runs_queue ON runs (priority DESC, spawned_at, boot, seq)
    WHERE owner IS NULL AND ready_at IS NULL AND NOT limited;
DROP INDEX IF EXISTS runs_due;
CREATE INDEX runs_due ON runs (ready_at)
    WHERE owner IS NULL AND ready_at IS NOT NULL AND NOT limited;
CREATE INDEX runs_limited_queue ON runs (worker, concurrency_key, priority DESC, spawned_at,
    boot, seq) WHERE owner IS NULL AND limited AND ready_at IS NULL;
CREATE INDEX runs_limited_due ON runs (ready_at)
    WHERE owner IS NULL AND limited AND ready_at IS NOT NULL;
CREATE INDEX runs_limited_running ON runs (worker, concurrency_key)
    WHERE owner IS NOT NULL AND limited;
CREATE TABLE limit_keys (
    worker TEXT NOT NULL,
    key TEXT NOT NULL,
    last_start BIGINT NOT NULL,
    tokens DOUBLE PRECISION,
    PRIMARY KEY (worker, key)
);
CREATE INDEX limit_keys_by_age ON limit_keys (last_start);
",
    // 7 (issue #25): workers' limits set over the API (`PUT /api/workers/{name}/limits`), as
    // JSON, for every host; a worker without a row has its registry file's.
    "CREATE TABLE worker_limits (name TEXT PRIMARY KEY, limits TEXT NOT NULL);",
    // 8 (issue #26): each task's checkpoint row, written over whole: its own policy, its
    // latest image between two steps (dropped at its end), its resumptions. `meta` is JSON
    // (`columns::checkpoint_meta`).
    "CREATE TABLE checkpoints (
    boot INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    meta TEXT NOT NULL,
    image BYTEA,
    PRIMARY KEY (boot, seq)
);",
];

/// Why the schema could not be brought to this host's version.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database's http-spawn schema is version {found}, newer than this host's \
         {SCHEMA_VERSION}: it was written by a newer http-spawn; run that version here too"
    )]
    Newer { found: i64 },
    #[error("reading or migrating the schema: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("the schema version {0:?} in http_spawn_meta is not a number")]
    Unreadable(String),
}

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) async fn migrate(client: &mut Client) -> Result<(), SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('http_spawn_meta') IS NOT NULL", &[])
        .await?
        .get(0);
    let found = if exists {
        let row = tx
            .query_opt(
                "SELECT value FROM http_spawn_meta WHERE key = 'schema_version'",
                &[],
            )
            .await?;
        match row {
            Some(row) => {
                let text: String = row.get(0);
                text.parse::<i64>()
                    .map_err(|_| SchemaError::Unreadable(text))?
            }
            None => 0,
        }
    } else {
        0
    };
    if found > SCHEMA_VERSION {
        return Err(SchemaError::Newer { found });
    }
    if found == SCHEMA_VERSION {
        tx.commit().await?;
        return Ok(());
    }
    if found < 1 {
        tx.batch_execute(SCHEMA).await?;
    }
    let from = usize::try_from(found.max(1) - 1).unwrap_or(0);
    for migration in &MIGRATIONS[from..] {
        tx.batch_execute(migration).await?;
    }
    tx.execute(
        "INSERT INTO http_spawn_meta (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&SCHEMA_VERSION.to_string()],
    )
    .await?;
    tx.commit().await?;
    if found < 1 {
        tracing::info!(version = SCHEMA_VERSION, "shared task store created");
    } else {
        tracing::info!(
            from = found,
            version = SCHEMA_VERSION,
            "shared task store migrated"
        );
    }
    Ok(())
}
