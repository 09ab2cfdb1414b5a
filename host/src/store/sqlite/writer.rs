//! The SQLite store's side of the writer ([`crate::store::writer`]): a chunk committed in one
//! transaction on the writer's own connection, and SQLite's result codes read as causes.
//!
//! - A chunk's task changes are appended to the journal as one row: each task it accepts as
//!   its whole row (an [`Image`]), each change of another's life as its event. Nothing else of
//!   a task is written in that transaction but its idempotency key: a commit dirties the
//!   journal's last page or two, not a page per task spread over `tasks` and its indexes.
//!   Once committed, the events are folded into the tasks' images held in [`Unwritten`].
//! - Between commits (`housekeep`), the tasks due are written to their rows a slice at a time,
//!   and the journal rows no task needs any more are deleted in the same transaction
//!   ([`Unwritten`] says which and when).
//! - At start, what the journal holds is written to the rows (`replay`).
//! - Only SQLite's own refusals of a value (a constraint, a string or blob too big, a type
//!   mismatch) are the content's fault; every other failure (a full disk, an I/O error, a busy
//!   or locked file, a file made read-only, no memory, a corrupt page) is the environment's.
//! - A commit SQLite answers is settled: a failed `COMMIT` rolls the transaction back, so no
//!   answer here is ambiguous.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use super::super::backlog::Chunk;
use super::super::columns::{attempts_json, checkpoint_meta, nanos};
use super::super::teller::Flush;
use super::super::writer::{Backend, Failure, Fault, Outcome};
use super::super::{Change, IdempotencyKey, ScheduleChange};
use super::journal::{self, Entry, Image};
use super::key;
use super::read::{RECORD_COLUMN_COUNT, RECORD_COLUMNS, SPEC_COLUMNS, record_of, spec_of};
use super::unwritten::{SLICE, Unwritten};
use crate::model::{JsonText, Pid, PidMap, TaskEvent, TaskRecord, TaskSpec};

/// Ended tasks deleted per prune, so a large prune never holds the writer long.
pub(super) const PRUNE_BATCH: i64 = 1000;

/// Tasks only journaled past which the store refuses new tasks: their rows are not being
/// written (a failing disk, a refused value), and each holds memory until they are.
const MAX_HELD: usize = 4 * super::unwritten::MAX_TASKS;

/// The first pause after a failed write of tasks' rows; it doubles up to [`MAX_RETRY`].
const RETRY_WAIT: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How often the writer looks for tasks due to be written to `tasks` while any wait.
const HOUSEKEEP_EVERY: Duration = Duration::from_millis(250);

/// The writer's connection, and the tasks it has journaled and not yet written to `tasks`.
pub(super) struct SqliteBackend {
    pub(super) connection: Connection,
    /// The flush of the log its teller runs before telling, with `full` (see `group_commit`).
    pub(super) flush: Option<Flush>,
    pub(super) unwritten: Arc<Unwritten>,
    /// Set while more than [`MAX_HELD`] tasks are only journaled: the store is then unhealthy.
    pub(super) behind: Arc<AtomicBool>,
    /// Writes of tasks' rows failed in a row, and when to try again.
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    /// `--store-commit-spacing`: with `full`, each commit waits for the disk, and on a virtual
    /// machine the flush costs the writer more CPU than everything else a small commit does.
    pub(super) commit_spacing: Duration,
}

impl Backend for SqliteBackend {
    fn commit(&mut self, chunk: &Chunk) -> Result<Outcome, Failure> {
        commit(&mut self.connection, &self.unwritten, chunk).map_err(|error| Failure {
            fault: fault(&error),
            message: error.to_string(),
            ambiguous: false,
        })
    }

    fn housekeep(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if let Some(at) = self.retry_at.filter(|at| now < *at) {
            return Some(at - now);
        }
        let mut full = false;
        match write_due(&mut self.connection, &self.unwritten, false) {
            Ok(written) => {
                if self.failures > 0 {
                    tracing::info!("journaled tasks are written to their rows again");
                }
                (self.failures, self.retry_at) = (0, None);
                full = written >= SLICE;
            }
            Err(error) => {
                self.failures += 1;
                let wait = (RETRY_WAIT * 2u32.saturating_pow(self.failures.min(5))).min(MAX_RETRY);
                self.retry_at = Some(now + wait);
                // Said once, then every twentieth failure in a row.
                if self.failures % 20 == 1 {
                    tracing::warn!(%error, failures = self.failures,
                        "writing journaled tasks to their rows failed; they stay journaled \
                         and are tried again");
                }
            }
        }
        // Too many tasks only journaled: new tasks are refused until their rows are written.
        let held = self.unwritten.len();
        self.behind.store(held > MAX_HELD, Ordering::Release);
        if held == 0 {
            None
        } else if full {
            Some(Duration::ZERO)
        } else {
            Some(HOUSEKEEP_EVERY)
        }
    }

    fn commit_spacing(&self) -> Duration {
        self.commit_spacing
    }

    fn flush(&mut self) -> Option<Flush> {
        self.flush.take()
    }

    fn closing(&mut self) {
        #[cfg(test)]
        if self
            .unwritten
            .left_at_close
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        loop {
            match write_due(&mut self.connection, &self.unwritten, true) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "the store closes with journaled tasks not written to \
                        their rows; they are read back from the journal at the next start");
                    return;
                }
            }
        }
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

/// Writes `chunk` in one transaction: its tasks' changes as one journal row, the rest in
/// place. Once committed, the tasks' changes are folded into their images in [`Unwritten`],
/// which shows them until they are written to `tasks`.
fn commit(
    connection: &mut Connection,
    unwritten: &Unwritten,
    chunk: &Chunk,
) -> rusqlite::Result<Outcome> {
    let tx = connection.transaction()?;
    let mut more = None;
    let mut value = journal::begin();
    let mut journaled: Vec<Journaled<'_>> = Vec::new();
    let mut tasks = Tasks::default();
    for (_, change) in chunk.changes() {
        match change {
            Change::Accepted {
                record, spec, key, ..
            } => {
                journal::put_accepted(&mut value, record, spec, &[]);
                tasks.known.insert(record.pid, true);
                journaled.push(Journaled::Accepted(record, spec));
                if let Some(key) = key {
                    remember(&tx, key, record)?;
                }
            }
            Change::Event(pid, event) => {
                if tasks.holds(&tx, unwritten, *pid)? {
                    let lines = journal::put_event(&mut value, *pid, event);
                    journaled.push(Journaled::Event(*pid, event, lines));
                }
            }
            other => {
                if write_other(&tx, other)? {
                    more = Some(other);
                }
            }
        }
    }
    for (pid, &(step, fuel)) in &chunk.progress {
        if tasks.holds(&tx, unwritten, *pid)? {
            let progress = TaskEvent::Progress {
                step,
                steps: 0,
                fuel,
            };
            journal::put_event(&mut value, *pid, &progress);
            journaled.push(Journaled::Progress(*pid, progress));
        }
    }
    let seq = if journaled.is_empty() {
        0
    } else {
        tx.prepare_cached("INSERT INTO journal (changes) VALUES (?1)")?
            .execute(params![value])?;
        tx.last_insert_rowid()
    };
    tx.commit()?;
    if !journaled.is_empty() {
        unwritten.journaled(seq, journaled, tasks.rows, &value);
    }
    let prune_more = more.and_then(Change::prune_again);
    Ok(Outcome {
        prune_more,
        ..Outcome::default()
    })
}

/// A change journaled, to fold into [`Unwritten`] once committed.
pub(super) enum Journaled<'c> {
    /// A task accepted: its whole row.
    Accepted(&'c TaskRecord, &'c TaskSpec),
    /// A change of a task's life, and where the lines it added are in the journal's value.
    Event(Pid, &'c TaskEvent, Range<usize>),
    /// A task's progress, folded from the chunk's.
    Progress(Pid, TaskEvent),
}

/// Which tasks of a commit's events the store holds, and the rows of those it holds only in
/// `tasks`, read once each.
#[derive(Default)]
struct Tasks {
    known: PidMap<bool>,
    rows: PidMap<Image>,
}

impl Tasks {
    /// Whether the store holds `pid`: in [`Unwritten`], accepted in this commit, or in
    /// `tasks` (its row then read, to fold the commit's changes into).
    fn holds(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        unwritten: &Unwritten,
        pid: Pid,
    ) -> rusqlite::Result<bool> {
        if let Some(&known) = self.known.get(&pid) {
            return Ok(known);
        }
        let held = unwritten.holds(pid)
            || match row(tx, pid)? {
                Some(image) => {
                    self.rows.insert(pid, image);
                    true
                }
                None => false,
            };
        self.known.insert(pid, held);
        Ok(held)
    }
}

/// A task's row as an image, if the store holds it.
pub(super) fn row(connection: &Connection, pid: Pid) -> rusqlite::Result<Option<Image>> {
    let (boot, seq) = key(pid);
    connection
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS}, {SPEC_COLUMNS} FROM tasks WHERE boot = ?1 AND seq = ?2"
        ))?
        .query_row(params![boot, seq], |row| {
            Ok(Image {
                record: record_of(row)?,
                spec: spec_of(row, RECORD_COLUMN_COUNT)?,
            })
        })
        .optional()
}

/// Remembers the idempotency key `record`'s request carried.
fn remember(
    tx: &rusqlite::Transaction<'_>,
    key: &IdempotencyKey,
    record: &TaskRecord,
) -> rusqlite::Result<()> {
    let (boot, seq) = super::key(record.pid);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, body_sha256, boot, seq, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        key.key,
        key.body_sha256,
        boot,
        seq,
        nanos(record.spawned_at)
    ])?;
    Ok(())
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
        Change::Schedule(change) => write_schedule(tx, change)?,
        Change::WorkerPaused { name, paused: true } => {
            tx.prepare_cached("INSERT OR IGNORE INTO paused_workers (name) VALUES (?1)")?
                .execute(params![name])?;
        }
        Change::WorkerPaused {
            name,
            paused: false,
        } => {
            tx.prepare_cached("DELETE FROM paused_workers WHERE name = ?1")?
                .execute(params![name])?;
        }
        Change::WorkerLimits {
            name,
            limits: Some(limits),
        } => {
            tx.prepare_cached(
                "INSERT INTO worker_limits (name, limits) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET limits = excluded.limits",
            )?
            .execute(params![name, limits.to_json()])?;
        }
        Change::WorkerLimits { name, limits: None } => {
            tx.prepare_cached("DELETE FROM worker_limits WHERE name = ?1")?
                .execute(params![name])?;
        }
        Change::Checkpoint(row) => {
            let (boot, seq) = key(row.pid);
            let image = row.taken.as_ref().and_then(|taken| taken.image.as_deref());
            tx.prepare_cached(
                "INSERT INTO checkpoints (boot, seq, meta, image) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (boot, seq) DO UPDATE SET meta = excluded.meta,
                     image = excluded.image",
            )?
            .execute(params![boot, seq, checkpoint_meta(row), image])?;
        }
        // One host, no other to forward to: a forward is never made for this store. Tasks'
        // changes are journaled by `commit`.
        Change::Forward { .. } | Change::Accepted { .. } | Change::Event(..) => {}
    }
    Ok(false)
}

/// A schedule's change: see [`ScheduleChange`].
fn write_schedule(tx: &rusqlite::Transaction<'_>, change: &ScheduleChange) -> rusqlite::Result<()> {
    match change {
        ScheduleChange::Put(schedule) => {
            tx.prepare_cached(
                "INSERT INTO schedules (name, definition, paused, created_at, last_tick)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                    paused = excluded.paused",
            )?
            .execute(params![
                schedule.name,
                schedule.definition,
                schedule.paused,
                nanos(schedule.created_at),
                schedule.last_tick.map(nanos),
            ])?;
        }
        ScheduleChange::Delete(name) => {
            tx.prepare_cached("DELETE FROM schedules WHERE name = ?1")?
                .execute(params![name])?;
        }
        ScheduleChange::Pause { name, paused, from } => {
            tx.prepare_cached(
                "UPDATE schedules SET paused = ?2,
                    last_tick = CASE WHEN ?3 IS NULL THEN last_tick
                        ELSE max(coalesce(last_tick, ?3), ?3) END
                 WHERE name = ?1",
            )?
            .execute(params![name, paused, from.map(nanos)])?;
        }
        ScheduleChange::Ticked { name, tick, pid } => {
            let pid = pid.map(key);
            tx.prepare_cached(
                "UPDATE schedules SET last_tick = ?2,
                    last_boot = coalesce(?3, last_boot), last_seq = coalesce(?4, last_seq)
                 WHERE name = ?1 AND (last_tick IS NULL OR last_tick < ?2
                    OR (last_tick = ?2 AND ?3 IS NOT NULL))",
            )?
            .execute(params![
                name,
                nanos(*tick),
                pid.map(|(boot, _)| boot),
                pid.map(|(_, seq)| seq)
            ])?;
        }
    }
    Ok(())
}

/// Writes a task's row as `image` holds it, with the lines journaled since it was last
/// written (`lines`, in `lines_blob` form) and the journal row of its last entry (`last`): an
/// ended task's lines in its row, which the end rewrites anyway; a running one's as a row of
/// `log_parts`.
pub(super) fn write_row(
    tx: &rusqlite::Transaction<'_>,
    image: &Image,
    lines: &[u8],
    last: i64,
) -> rusqlite::Result<()> {
    let Image { record, spec } = image;
    let (boot, seq) = key(record.pid);
    let parent = record.parent.map(key);
    let retry_of = record.retry_of.map(key);
    let ended = record.status.is_terminal();
    let log = (ended && !lines.is_empty()).then_some(lines);
    tx.prepare_cached(
        "INSERT INTO tasks (boot, seq, spawned_at, name, worker, version, module_sha256,
            duration, payload, deadline_secs, max_attempts, on_host_loss, status, attempt,
            parent_boot, parent_seq, step, steps, exit_code, outcome, error, started_at,
            ended_at, fuel, attempts, logs_dropped_bytes, ready_at, log, journal_seq, result,
            run_at, priority, retry_of_boot, retry_of_seq, schedule, schedule_tick,
            concurrency_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33,
            ?34, ?35, ?36, ?37)
         ON CONFLICT (boot, seq) DO UPDATE SET status = excluded.status,
            attempt = excluded.attempt, step = excluded.step, steps = excluded.steps,
            exit_code = excluded.exit_code, outcome = excluded.outcome, error = excluded.error,
            started_at = excluded.started_at, ended_at = excluded.ended_at,
            fuel = excluded.fuel, attempts = excluded.attempts,
            logs_dropped_bytes = excluded.logs_dropped_bytes, ready_at = excluded.ready_at,
            log = excluded.log, journal_seq = excluded.journal_seq, result = excluded.result",
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
        record.logs_dropped_bytes as i64,
        spec.ready_at.map(nanos),
        log,
        last,
        record.result.as_ref().map(JsonText::as_str),
        record.run_at.map(nanos),
        spec.priority,
        retry_of.map(|(boot, _)| boot),
        retry_of.map(|(_, seq)| seq),
        record.schedule,
        record.schedule_tick.map(nanos),
        record.concurrency_key,
    ])?;
    if !ended && !lines.is_empty() {
        tx.prepare_cached("INSERT INTO log_parts (boot, seq, lines) VALUES (?1, ?2, ?3)")?
            .execute(params![boot, seq, lines])?;
    }
    Ok(())
}

/// Writes to `tasks` the tasks of [`Unwritten`] due now (all of them when `all`), a slice at
/// a time, and cuts the journal rows no task needs any more; how many it wrote. Tasks it could
/// not write stay in [`Unwritten`], due again.
fn write_due(
    connection: &mut Connection,
    unwritten: &Unwritten,
    all: bool,
) -> rusqlite::Result<usize> {
    let due = unwritten.due(Instant::now(), all);
    if due.is_empty() {
        return Ok(0);
    }
    let cut = unwritten.cut_before(&due);
    let written = (|| {
        let tx = connection.transaction()?;
        for held in &due {
            write_row(&tx, &held.image, &held.lines, held.last)?;
        }
        match cut {
            Some(first) => {
                tx.prepare_cached("DELETE FROM journal WHERE seq < ?1")?
                    .execute(params![first])?;
            }
            None => empty_journal(&tx)?,
        }
        let moving = unwritten.moving();
        tx.commit()?;
        unwritten.written(&due);
        drop(moving);
        Ok(due.len())
    })();
    if written.is_err() {
        unwritten.due_again(&due);
    }
    written
}

/// Empties the journal once every task with an entry in it is written: all its rows go but
/// the newest, which stays with no entry, so that its number is never used again
/// (`journal_seq` counts on it).
fn empty_journal(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM journal WHERE seq < (SELECT MAX(seq) FROM journal)")?
        .execute([])?;
    tx.prepare_cached(
        "UPDATE journal SET changes = ?1 WHERE seq = (SELECT MAX(seq) FROM journal)",
    )?
    .execute(params![journal::begin()])?;
    Ok(())
}

/// Brings the journal's changes into `tasks` at start, after a crash (or a host that stopped
/// with tasks not yet written), and empties it; the number of tasks written. An entry already
/// written (its journal row is at most the row's `journal_seq`) is passed over.
pub(super) fn replay(connection: &mut Connection) -> Result<usize, Replay> {
    let tx = connection.transaction()?;
    let mut tasks: HashMap<Pid, (Image, Vec<u8>, i64)> = HashMap::new();
    {
        let mut through: HashMap<Pid, i64> = HashMap::new();
        let mut statement = tx.prepare("SELECT seq, changes FROM journal ORDER BY seq")?;
        let mut rows = statement.query([])?;
        while let Some(entries) = rows.next()? {
            let seq: i64 = entries.get(0)?;
            let value = entries
                .get_ref(1)?
                .as_blob()
                .map_err(rusqlite::Error::from)?;
            for entry in
                journal::entries(value).map_err(|reason| Replay::Corrupt { seq, reason })?
            {
                let pid = match &entry {
                    Entry::Image { image, .. } => image.record.pid,
                    Entry::Event { pid, .. } => *pid,
                };
                let written = match through.get(&pid) {
                    Some(&written) => written,
                    None => {
                        let (boot, task_seq) = key(pid);
                        let written = tx
                            .prepare_cached(
                                "SELECT journal_seq FROM tasks WHERE boot = ?1 AND seq = ?2",
                            )?
                            .query_row(params![boot, task_seq], |row| row.get::<_, Option<i64>>(0))
                            .optional()?
                            .flatten()
                            .unwrap_or(0);
                        through.insert(pid, written);
                        written
                    }
                };
                if seq <= written {
                    continue;
                }
                match entry {
                    Entry::Image { image, lines } => match tasks.get_mut(&pid) {
                        Some((held, all, last)) => {
                            *held = *image;
                            all.extend_from_slice(&lines);
                            *last = seq;
                        }
                        None => {
                            tasks.insert(pid, (*image, lines, seq));
                        }
                    },
                    Entry::Event { event, lines, .. } => match tasks.get_mut(&pid) {
                        Some((image, all, last)) => {
                            if journal::fold(image, all, &event, &lines) {
                                *last = seq;
                            }
                        }
                        // Its row holds what came before. It is written again only if the
                        // event changes it: an ended task's row keeps its log.
                        None => {
                            if let Some(mut image) = row(&tx, pid)? {
                                let mut all = Vec::new();
                                if journal::fold(&mut image, &mut all, &event, &lines) {
                                    tasks.insert(pid, (image, all, seq));
                                }
                            }
                        }
                    },
                }
            }
        }
    }
    let mut tasks: Vec<_> = tasks.into_values().collect();
    tasks.sort_by_key(|(image, _, _)| image.record.pid);
    for (image, lines, last) in &tasks {
        write_row(&tx, image, lines, *last)?;
    }
    empty_journal(&tx)?;
    tx.commit()?;
    Ok(tasks.len())
}

/// Why the journal could not be read back.
#[derive(Debug, thiserror::Error)]
pub(super) enum Replay {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("journal row {seq} cannot be read: {reason}")]
    Corrupt { seq: i64, reason: String },
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
    // A task with an entry in a journal row still kept is not deleted: read back after a
    // crash, that entry would bring it back.
    let doomed = tx
        .prepare_cached(
            "INSERT INTO doomed SELECT boot, seq FROM tasks WHERE ended_at IS NOT NULL
         AND (rowid IN (SELECT rowid FROM tasks WHERE ended_at IS NOT NULL
                        ORDER BY ended_at LIMIT ?1)
              OR ended_at < ?2)
         AND COALESCE(journal_seq, 0) < COALESCE(
             (SELECT MIN(seq) FROM journal WHERE length(changes) > 1), 9223372036854775807)
         LIMIT ?3",
        )?
        .execute(params![excess, nanos(ended_before), PRUNE_BATCH])?;
    tx.prepare_cached("DELETE FROM log_parts WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)")?
        .execute([])?;
    tx.prepare_cached(
        "DELETE FROM checkpoints WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)",
    )?
    .execute([])?;
    tx.prepare_cached("DELETE FROM tasks WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)")?
        .execute([])?;
    tx.prepare_cached("DELETE FROM doomed")?.execute([])?;
    tx.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute(params![nanos(keys_before)])?;
    Ok(i64::try_from(doomed).is_ok_and(|doomed| doomed >= PRUNE_BATCH))
}
