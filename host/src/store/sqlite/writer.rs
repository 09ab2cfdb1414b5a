//! The SQLite store's side of the writer ([`crate::store::writer`]): a chunk committed in one
//! transaction on the writer's own connection, and SQLite's result codes read as causes.
//!
//! - Only SQLite's own refusals of a value (a constraint, a string or blob too big, a type
//!   mismatch) are the content's fault; every other failure (a full disk, an I/O error, a busy
//!   or locked file, a file made read-only, no memory, a corrupt page) is the environment's.
//! - A commit SQLite answers is settled: a failed `COMMIT` rolls the transaction back, so no
//!   answer here is ambiguous.

use std::collections::HashMap;
use std::time::SystemTime;

use rusqlite::{Connection, params};

use super::super::backlog::Chunk;
use super::super::columns::{attempt_json, attempts_json, lines_blob, nanos};
use super::super::writer::{Backend, Failure, Fault, Outcome};
use super::super::{Change, IdempotencyKey};
use super::key;
use crate::model::{LogLine, Pid, TaskEvent, TaskRecord, TaskSpec};

/// Ended tasks deleted per prune, so a large prune never holds the writer long.
pub(super) const PRUNE_BATCH: i64 = 1000;

/// The writer's connection.
pub(super) struct SqliteBackend {
    pub(super) connection: Connection,
}

impl Backend for SqliteBackend {
    fn commit(&mut self, chunk: &Chunk) -> Result<Outcome, Failure> {
        commit(&mut self.connection, chunk).map_err(|error| Failure {
            fault: fault(&error),
            message: error.to_string(),
            ambiguous: false,
        })
    }
}

/// What a failure tells of its cause.
fn fault(error: &rusqlite::Error) -> Fault {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
            Fault::Content
        }
        _ => Fault::Environment,
    }
}

/// Writes `chunk` in one transaction. When a prune in it left more due than it deleted, the
/// prune to write next.
///
/// A task's changes of one chunk are written together ([`TaskWrites`]): one row for a task
/// accepted in it, with everything that happened to it since; one row of log lines per task;
/// its last progress with its end.
fn commit(connection: &mut Connection, chunk: &Chunk) -> rusqlite::Result<Outcome> {
    let tx = connection.transaction()?;
    let mut more = None;
    let mut tasks: Vec<TaskWrites<'_>> = Vec::new();
    let mut index: HashMap<Pid, usize> = HashMap::new();
    let mut of = |pid: Pid, tasks: &mut Vec<TaskWrites<'_>>| -> usize {
        *index.entry(pid).or_insert_with(|| {
            tasks.push(TaskWrites::new(pid));
            tasks.len() - 1
        })
    };
    for (_, change) in chunk.changes() {
        match change {
            Change::Accepted {
                record, spec, key, ..
            } => {
                let at = of(record.pid, &mut tasks);
                tasks[at].accepted = Some((record, spec, key.as_ref()));
            }
            Change::Event(pid, event) => {
                let at = of(*pid, &mut tasks);
                tasks[at].events.push(event);
            }
            other => {
                if write_other(&tx, other)? {
                    more = Some(other);
                }
            }
        }
    }
    for task in &tasks {
        task.write(&tx)?;
    }
    for (pid, (step, fuel)) in &chunk.progress {
        let (boot, seq) = key(*pid);
        tx.prepare_cached(
            "UPDATE tasks SET step = ?3, fuel = ?4
             WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL",
        )?
        .execute(params![boot, seq, step, *fuel as i64])?;
    }
    tx.commit()?;
    let prune_more = more.and_then(Change::prune_again);
    Ok(Outcome {
        prune_more,
        ..Outcome::default()
    })
}

/// A change that is not of one task's life. True when it was a prune that left more due
/// than it deleted.
fn write_other(tx: &rusqlite::Transaction<'_>, change: &Change) -> rusqlite::Result<bool> {
    match change {
        Change::Prune {
            max_history,
            ended_before,
            keys_before,
        } => return prune(tx, *max_history, *ended_before, *keys_before),
        Change::Module { sha256, bytes } => {
            tx.prepare_cached("INSERT OR IGNORE INTO modules (sha256, bytes) VALUES (?1, ?2)")?
                .execute(params![sha256, bytes])?;
        }
        Change::Worker { name, versions } => {
            let previous = versions.previous.as_ref();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO workers (name, current, current_source,
                    current_installed_at, previous, previous_source, previous_installed_at,
                    file_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                name,
                versions.current.sha256,
                versions.current.source,
                nanos(versions.current.installed_at),
                previous.map(|v| &v.sha256),
                previous.map(|v| &v.source),
                previous.map(|v| nanos(v.installed_at)),
                versions.file_sha256,
            ])?;
        }
        // One host, no other to forward to: a forward is never made for this store. Tasks'
        // changes are written by `TaskWrites`.
        Change::Forward { .. } | Change::Accepted { .. } | Change::Event(..) => {}
    }
    Ok(false)
}

/// One task's changes in a chunk, in order.
struct TaskWrites<'a> {
    pid: Pid,
    accepted: Option<(&'a TaskRecord, &'a TaskSpec, Option<&'a IdempotencyKey>)>,
    events: Vec<&'a TaskEvent>,
}

impl<'a> TaskWrites<'a> {
    fn new(pid: Pid) -> Self {
        Self {
            pid,
            accepted: None,
            events: Vec::new(),
        }
    }

    fn write(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        match self.accepted {
            Some((record, spec, idempotency)) => self.insert(tx, record, spec, idempotency),
            None => self.update(tx),
        }
    }

    /// A task accepted in this chunk: one row, as it stands after the chunk's events.
    fn insert(
        &self,
        tx: &rusqlite::Transaction<'_>,
        accepted: &TaskRecord,
        spec: &TaskSpec,
        idempotency: Option<&IdempotencyKey>,
    ) -> rusqlite::Result<()> {
        let mut record = accepted.clone();
        let mut ready_at = None;
        let mut lines: Vec<&LogLine> = Vec::new();
        let mut dropped_bytes = 0;
        for event in &self.events {
            let attempt = record.attempt;
            match event {
                // Nothing is added to an ended task's log.
                TaskEvent::Logs {
                    lines: more,
                    dropped_bytes: dropped,
                } => {
                    if !record.status.is_terminal() {
                        lines.extend(more);
                        dropped_bytes = *dropped;
                    }
                }
                TaskEvent::Restarting {
                    ready_at: ready, ..
                } => {
                    record.apply(event);
                    if record.attempt != attempt {
                        ready_at = Some(nanos(*ready));
                    }
                }
                _ => {
                    let ended = record.status.is_terminal();
                    record.apply(event);
                    if !ended
                        && matches!(event, TaskEvent::Started { .. } | TaskEvent::Ended { .. })
                    {
                        ready_at = None;
                    }
                }
            }
        }
        let (boot, seq) = key(self.pid);
        let parent = record.parent.map(key);
        // An end rewrites nothing here: the lines of a task that ended go in its row.
        let log = (record.status.is_terminal() && !lines.is_empty())
            .then(|| lines_blob(lines.iter().copied()));
        tx.prepare_cached(
            "INSERT INTO tasks (boot, seq, spawned_at, name, worker, version, module_sha256,
                duration, payload, deadline_secs, max_attempts, on_host_loss, status, attempt,
                parent_boot, parent_seq, step, steps, exit_code, outcome, error, started_at,
                ended_at, fuel, attempts, logs_dropped_bytes, ready_at, log)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
        )?
        .execute(params![
            boot,
            seq,
            nanos(record.spawned_at),
            record.name,
            &*record.worker,
            &*record.version,
            spec.module_sha256,
            record.duration,
            spec.payload,
            spec.deadline_secs,
            spec.max_attempts,
            spec.on_host_loss.as_str(),
            record.status.as_str(),
            record.attempt,
            parent.map(|(boot, _)| boot),
            parent.map(|(_, seq)| seq),
            record.step,
            record.steps,
            record.exit_code,
            record.outcome.map(|outcome| outcome.as_str()),
            record.error,
            record.started_at.map(nanos),
            record.ended_at.map(nanos),
            record.fuel_consumed as i64,
            attempts_json(&record.attempts),
            dropped_bytes as i64,
            ready_at,
            log,
        ])?;
        if let Some(idempotency) = idempotency {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO idempotency (key, body_sha256, boot, seq, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                idempotency.key,
                idempotency.body_sha256,
                boot,
                seq,
                nanos(record.spawned_at)
            ])?;
        }
        if !lines.is_empty() && log.is_none() {
            tx.prepare_cached("INSERT INTO log_parts (boot, seq, lines) VALUES (?1, ?2, ?3)")?
                .execute(params![boot, seq, lines_blob(lines.iter().copied())])?;
        }
        Ok(())
    }

    /// A task accepted in an earlier chunk: each event in order, its lines of one stretch
    /// between ends in one row, its progress folded into its end. The record's status and
    /// fields that only the current attempt may change are written only while the task has not
    /// ended (`ended_at IS NULL`), so a late write never reopens an end, and no line is added
    /// to an ended task's log.
    fn update(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let (boot, seq) = key(self.pid);
        let mut lines: Vec<&LogLine> = Vec::new();
        let mut dropped_bytes = 0;
        let mut progress = None;
        for event in &self.events {
            match event {
                TaskEvent::Progress { step, fuel, .. } => progress = Some((*step, *fuel)),
                TaskEvent::Logs {
                    lines: more,
                    dropped_bytes: dropped,
                } => {
                    lines.extend(more);
                    dropped_bytes = *dropped;
                }
                TaskEvent::Ended { .. } => {
                    let dropped_bytes = std::mem::take(&mut dropped_bytes);
                    let ended = write_end(tx, boot, seq, event, progress.take(), &lines)?;
                    if ended {
                        lines.clear();
                    } else {
                        // A stale end, or a task that had ended: the lines go as they would
                        // have without it.
                        write_lines(tx, boot, seq, &mut lines, dropped_bytes)?;
                    }
                    if ended && dropped_bytes > 0 {
                        tx.prepare_cached(
                            "UPDATE tasks SET logs_dropped_bytes = ?3 WHERE boot = ?1 AND seq = ?2",
                        )?
                        .execute(params![
                            boot,
                            seq,
                            dropped_bytes as i64
                        ])?;
                    }
                }
                _ => {
                    if let Some((step, fuel)) = progress.take() {
                        write_progress(tx, boot, seq, step, fuel)?;
                    }
                    write_event(tx, boot, seq, event)?;
                }
            }
        }
        write_lines(tx, boot, seq, &mut lines, dropped_bytes)?;
        if let Some((step, fuel)) = progress {
            write_progress(tx, boot, seq, step, fuel)?;
        }
        Ok(())
    }
}

/// `lines`, taken, as one row of a task that has not ended; and the cap's count of dropped
/// bytes, if any.
fn write_lines(
    tx: &rusqlite::Transaction<'_>,
    boot: i64,
    seq: i64,
    lines: &mut Vec<&LogLine>,
    dropped_bytes: u64,
) -> rusqlite::Result<()> {
    if !lines.is_empty() {
        tx.prepare_cached(
            "INSERT INTO log_parts (boot, seq, lines)
             SELECT ?1, ?2, ?3 WHERE EXISTS
                (SELECT 1 FROM tasks WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL)",
        )?
        .execute(params![boot, seq, lines_blob(lines.drain(..))])?;
    }
    if dropped_bytes > 0 {
        tx.prepare_cached(
            "UPDATE tasks SET logs_dropped_bytes = ?3
             WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL",
        )?
        .execute(params![boot, seq, dropped_bytes as i64])?;
    }
    Ok(())
}

fn write_progress(
    tx: &rusqlite::Transaction<'_>,
    boot: i64,
    seq: i64,
    step: u32,
    fuel: u64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE tasks SET step = ?3, fuel = ?4
         WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL",
    )?
    .execute(params![boot, seq, step, fuel as i64])?;
    Ok(())
}

/// A start or a restart of a task accepted in an earlier chunk. (`update` writes its ends,
/// progress and lines.)
fn write_event(
    tx: &rusqlite::Transaction<'_>,
    boot: i64,
    seq: i64,
    event: &TaskEvent,
) -> rusqlite::Result<()> {
    match event {
        TaskEvent::Started { at, steps, fuel } => {
            tx.prepare_cached(
                "UPDATE tasks SET status = 'running', started_at = ?3, steps = ?4, fuel = ?5,
                    ready_at = NULL
                 WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL",
            )?
            .execute(params![boot, seq, nanos(*at), steps, *fuel as i64])?;
        }
        TaskEvent::Restarting {
            at,
            fuel,
            end,
            next_attempt,
            ready_at,
        } => {
            let attempt = next_attempt.saturating_sub(1);
            let entry = attempt_json(attempt, end, *at);
            tx.prepare_cached(
                "UPDATE tasks SET status = 'spawned', step = 0, fuel = ?3, attempt = ?4,
                    attempts = json_insert(attempts, '$[#]', json(?5)), ready_at = ?6
                 WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL AND attempt = ?7",
            )?
            .execute(params![
                boot,
                seq,
                *fuel as i64,
                next_attempt,
                entry,
                nanos(*ready_at),
                attempt
            ])?;
        }
        TaskEvent::Ended { .. } | TaskEvent::Progress { .. } | TaskEvent::Logs { .. } => {}
    }
    Ok(())
}

/// The end of a task accepted in an earlier chunk, with the last step it reached and the
/// lines it logged since its log was last written, if they came in the same chunk: the row
/// is rewritten by the end anyway, and most tasks' whole log is these lines. True when it
/// ended the task; false for an end of another attempt than the current one, or of a task
/// that had ended.
fn write_end(
    tx: &rusqlite::Transaction<'_>,
    boot: i64,
    seq: i64,
    event: &TaskEvent,
    step: Option<(u32, u64)>,
    lines: &[&LogLine],
) -> rusqlite::Result<bool> {
    let TaskEvent::Ended {
        at,
        fuel,
        end,
        attempt,
    } = event
    else {
        return Ok(false);
    };
    let log = (!lines.is_empty()).then(|| lines_blob(lines.iter().copied()));
    // The attempts before this one are listed only for a task that restarted; this one then
    // joins them.
    let changed = tx
        .prepare_cached(
            "UPDATE tasks SET status = ?3, outcome = ?4, exit_code = ?5, error = ?6,
                ended_at = ?7, fuel = ?8, ready_at = NULL, step = COALESCE(?10, step), log = ?11,
                attempts = CASE WHEN attempts = '[]' THEN attempts
                    ELSE json_insert(attempts, '$[#]', json_object('attempt', attempt,
                        'status', ?3, 'outcome', ?4, 'exit_code', ?5, 'error', ?6,
                        'ended_at', ?7)) END
             WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL AND attempt = ?9",
        )?
        .execute(params![
            boot,
            seq,
            end.status.as_str(),
            end.outcome.as_str(),
            end.exit_code,
            end.error,
            nanos(*at),
            *fuel as i64,
            attempt,
            step.map(|(step, _)| step),
            log,
        ])?;
    Ok(changed > 0)
}

/// Deletes the oldest ended tasks past `max_history`, and those that ended before
/// `ended_before`, a batch at a time, and the idempotency keys created before `keys_before`.
/// True when the batch was full: more may be due.
fn prune(
    tx: &rusqlite::Transaction<'_>,
    max_history: usize,
    ended_before: SystemTime,
    keys_before: SystemTime,
) -> rusqlite::Result<bool> {
    let ended: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM tasks WHERE ended_at IS NOT NULL")?
        .query_row([], |row| row.get(0))?;
    let excess = (ended - i64::try_from(max_history).unwrap_or(i64::MAX)).clamp(0, PRUNE_BATCH);
    tx.prepare_cached("CREATE TEMP TABLE IF NOT EXISTS doomed (boot INTEGER, seq INTEGER)")?
        .execute([])?;
    let doomed = tx
        .prepare_cached(
            "INSERT INTO doomed SELECT boot, seq FROM tasks WHERE ended_at IS NOT NULL
         AND (rowid IN (SELECT rowid FROM tasks WHERE ended_at IS NOT NULL
                        ORDER BY ended_at LIMIT ?1)
              OR ended_at < ?2)
         LIMIT ?3",
        )?
        .execute(params![excess, nanos(ended_before), PRUNE_BATCH])?;
    tx.prepare_cached("DELETE FROM log_parts WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)")?
        .execute([])?;
    tx.prepare_cached("DELETE FROM tasks WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)")?
        .execute([])?;
    tx.prepare_cached("DELETE FROM doomed")?.execute([])?;
    tx.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute(params![nanos(keys_before)])?;
    Ok(i64::try_from(doomed).is_ok_and(|doomed| doomed >= PRUNE_BATCH))
}
