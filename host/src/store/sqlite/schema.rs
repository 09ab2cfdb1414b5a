//! The SQLite store's schema, versioned in `PRAGMA user_version`: created and migrated forward
//! at start, in one transaction; a store of a newer schema than this host's is refused.

use std::path::Path;

use rusqlite::{Connection, Transaction, params};

use super::super::columns::{lines_blob, source_of, time};
use super::OpenError;
use crate::model::LogLine;

/// The schema this host writes: version 1 ([`SCHEMA`]) and every migration after it.
pub(super) const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Version 1 of the schema. A new store is created at version 1 and migrated forward like an
/// old one, so that every store of a version is laid out the same.
pub(super) const SCHEMA: &str = "
CREATE TABLE tasks (
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    spawned_at INTEGER NOT NULL,
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
    started_at INTEGER,
    ended_at INTEGER,
    fuel INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 1,
    attempts TEXT NOT NULL DEFAULT '[]',
    logs_dropped_bytes INTEGER NOT NULL DEFAULT 0,
    ready_at INTEGER,
    PRIMARY KEY (boot, seq)
);
CREATE INDEX tasks_by_time ON tasks (spawned_at, boot, seq);
CREATE INDEX tasks_by_status ON tasks (status, spawned_at, boot, seq);
CREATE INDEX tasks_by_name ON tasks (name, spawned_at, boot, seq);
CREATE INDEX tasks_by_worker ON tasks (worker, spawned_at, boot, seq);
CREATE INDEX tasks_by_end ON tasks (ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE logs (
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX logs_by_task ON logs (boot, seq);
CREATE TABLE modules (
    sha256 TEXT PRIMARY KEY,
    bytes BLOB NOT NULL
);
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    current TEXT NOT NULL,
    current_source TEXT NOT NULL,
    current_installed_at INTEGER NOT NULL,
    previous TEXT,
    previous_source TEXT,
    previous_installed_at INTEGER,
    file_sha256 TEXT NOT NULL
);
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
";

/// `MIGRATIONS[i]` takes the schema from version `i + 1` to `i + 2`. Each runs in the
/// transaction that sets the new version, so a store is migrated whole or not at all.
const MIGRATIONS: [fn(&Transaction<'_>) -> rusqlite::Result<()>; 7] = [
    // 2: the task that spawned each task (`NULL` for one submitted over HTTP, as every task
    // of version 1 was), and its children listed newest first. Most tasks have no parent, so
    // the index leaves them out.
    |tx| {
        tx.execute_batch(
            "
ALTER TABLE tasks ADD COLUMN parent_boot INTEGER;
ALTER TABLE tasks ADD COLUMN parent_seq INTEGER;
CREATE INDEX tasks_by_parent ON tasks (parent_boot, parent_seq, spawned_at, boot, seq)
    WHERE parent_boot IS NOT NULL;
",
        )
    },
    to_version_3,
    // 4 (issue #23): the journal. Each commit appends its tasks' changes as one row, and the
    // tasks' rows are written later, many at a time (see `journal` and `unwritten`); a row
    // keeps the journal row of the last entry written into it, so that reading the journal
    // back after a crash passes over what was written. The newest journal row is never
    // deleted, so that a row's number (its rowid) is never used again.
    |tx| {
        tx.execute_batch(
            "
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    changes BLOB NOT NULL
);
ALTER TABLE tasks ADD COLUMN journal_seq INTEGER;
",
        )
    },
    // 5 (issue #24): what a task returned, JSON text; `NULL` when it returned nothing, as
    // every task before did.
    |tx| tx.execute_batch("ALTER TABLE tasks ADD COLUMN result TEXT;"),
    // 6 (issue #25): when a task accepted to run later may start, its priority, the task it
    // retries, the schedule and tick that created it and its concurrency key (none, 5, none,
    // none and none for every task before); the schedules; the paused workers.
    |tx| {
        tx.execute_batch(
            "
ALTER TABLE tasks ADD COLUMN run_at INTEGER;
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
ALTER TABLE tasks ADD COLUMN retry_of_boot INTEGER;
ALTER TABLE tasks ADD COLUMN retry_of_seq INTEGER;
ALTER TABLE tasks ADD COLUMN schedule TEXT;
ALTER TABLE tasks ADD COLUMN schedule_tick INTEGER;
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    paused INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_tick INTEGER,
    last_boot INTEGER,
    last_seq INTEGER
);
CREATE TABLE paused_workers (name TEXT PRIMARY KEY);
",
        )
    },
    // 7 (issue #25): workers' limits set over the API (`PUT /api/workers/{name}/limits`), as
    // JSON; a worker without a row has its registry file's.
    |tx| {
        tx.execute_batch(
            "CREATE TABLE worker_limits (name TEXT PRIMARY KEY, limits TEXT NOT NULL);",
        )
    },
    // 8 (issue #26): each task's checkpoint row, written over whole: its own policy, its
    // latest image between two steps (dropped at its end), its resumptions. `meta` is JSON
    // (`columns::checkpoint_meta`).
    |tx| {
        tx.execute_batch(
            "CREATE TABLE checkpoints (
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    meta TEXT NOT NULL,
    image BLOB,
    PRIMARY KEY (boot, seq)
);",
        )
    },
];

/// 3 (issue #23): fewer B-trees written per task.
///
/// - The indexes by status, name and worker go: every acceptance wrote each, and a start and an
///   end moved the status one, at places spread over the whole index, each a page more for
///   every commit to write. Lists filtered by them read the time index instead (history is
///   bounded by `--max-history`), and the host reads its unfinished tasks once, at start.
/// - A task's log lines are kept as one value per write (in `lines_blob`'s form) instead of
///   one row per line: those written with its end in its own row (`log`), which the end
///   rewrites anyway, the others in `log_parts`. The lines of version 2 are carried over, a
///   task's in one row of `log_parts`.
fn to_version_3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "
DROP INDEX tasks_by_status;
DROP INDEX tasks_by_name;
DROP INDEX tasks_by_worker;
ALTER TABLE tasks ADD COLUMN log BLOB;
CREATE TABLE log_parts (
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    lines BLOB NOT NULL
);
CREATE INDEX log_parts_by_task ON log_parts (boot, seq);
",
    )?;
    let mut insert = tx.prepare("INSERT INTO log_parts (boot, seq, lines) VALUES (?1, ?2, ?3)")?;
    let mut select =
        tx.prepare("SELECT boot, seq, at, source, message FROM logs ORDER BY boot, seq, rowid")?;
    let mut rows = select.query([])?;
    let mut task: Option<(i64, i64)> = None;
    let mut lines = Vec::new();
    let mut flush = |task: Option<(i64, i64)>, lines: &mut Vec<LogLine>| {
        let Some((boot, seq)) = task.filter(|_| !lines.is_empty()) else {
            return Ok(());
        };
        insert.execute(params![boot, seq, lines_blob(lines.iter())])?;
        lines.clear();
        Ok::<_, rusqlite::Error>(())
    };
    while let Some(row) = rows.next()? {
        let key = (row.get::<_, i64>(0)?, row.get::<_, i64>(1)?);
        if task != Some(key) {
            flush(task, &mut lines)?;
            task = Some(key);
        }
        lines.push(LogLine {
            at: time(row.get(2)?),
            source: source_of(&row.get::<_, String>(3)?),
            message: row.get(4)?,
        });
    }
    flush(task, &mut lines)?;
    drop(rows);
    drop(select);
    drop(insert);
    tx.execute_batch("DROP TABLE logs;")
}

pub(super) fn classify_open_error(path: &Path, error: &rusqlite::Error) -> OpenError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path: path.to_owned(),
            reason: error.to_string(),
        },
        _ => OpenError::Unreadable {
            path: path.to_owned(),
            reason: error.to_string(),
        },
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) fn migrate(path: &Path, connection: &mut Connection) -> Result<(), OpenError> {
    let fail = |error: rusqlite::Error| classify_open_error(path, &error);
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(fail)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::Newer {
            path: path.to_owned(),
            found,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = connection.transaction().map_err(fail)?;
    if found < 1 {
        tx.execute_batch(SCHEMA).map_err(fail)?;
    }
    // Version 0 (a new file) has just been made version 1.
    let from = usize::try_from(found.max(1) - 1).unwrap_or(0);
    for migration in &MIGRATIONS[from..] {
        migration(&tx).map_err(fail)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(fail)?;
    tx.commit().map_err(fail)?;
    if found < 1 {
        tracing::info!(path = %path.display(), version = SCHEMA_VERSION, "task store created");
    } else {
        tracing::info!(
            path = %path.display(),
            from = found,
            version = SCHEMA_VERSION,
            "task store migrated"
        );
    }
    Ok(())
}
