//! The durable store: one SQLite file in WAL mode, written by one writer thread that commits
//! every pending batch in one transaction (group commit) and then tells each submitter, read
//! through connections of its own by everyone else.
//!
//! - A batch is written whole or not at all. When a commit fails (a full disk, an I/O error),
//!   the acceptances in it are refused (their submitters answer `503`), and the other changes
//!   are kept and tried again until the store takes them: running tasks go on, and the host
//!   recovers by itself.
//! - The file is held by one host at a time, with an exclusive `flock` on `<file>.lock`.
//! - The schema carries its version in `PRAGMA user_version`; an older one is migrated
//!   forward at start, a newer one is refused.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::columns::{
    attempt_json, attempts_of, nanos, source_name, source_of, status_of, time, unavailable,
};
use super::{
    Change, Cursor, Done, ListQuery, Page, Remembered, Store, StoreError, StoreStats,
    StoredVersion, WorkerVersions,
};
use crate::model::{
    LogLine, OnHostLoss, Outcome, Pid, Status, TaskEvent, TaskLogs, TaskRecord, TaskSpec,
};

/// The schema this host writes: version 1 ([`SCHEMA`]) and every migration after it.
const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Version 1 of the schema. A new store is created at version 1 and migrated forward like an
/// old one, so that every store of a version is laid out the same.
const SCHEMA: &str = "
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
const MIGRATIONS: [&str; 1] = [
    // 2: the task that spawned each task (`NULL` for one submitted over HTTP, as every task
    // of version 1 was), and its children listed newest first. Most tasks have no parent, so
    // the index leaves them out.
    "
ALTER TABLE tasks ADD COLUMN parent_boot INTEGER;
ALTER TABLE tasks ADD COLUMN parent_seq INTEGER;
CREATE INDEX tasks_by_parent ON tasks (parent_boot, parent_seq, spawned_at, boot, seq)
    WHERE parent_boot IS NOT NULL;
",
];

/// Connections kept for reading, each behind its own lock.
const READERS: usize = 4;

/// How long a failed commit waits before the writer tries its changes again.
const RETRY_WAIT: Duration = Duration::from_millis(200);

/// Ended tasks deleted per prune, so a large prune never holds the writer long.
const PRUNE_BATCH: i64 = 1000;

/// How much `--store-sync` makes a commit wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreSync {
    /// Every commit reaches the disk before it counts: it survives a power cut.
    Full,
    /// A commit survives a crash of the host, not of the machine.
    Normal,
}

/// Writes waiting for the writer thread.
struct Pending {
    batch: Vec<Change>,
    done: Option<Done>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// False from a failed commit until one succeeds.
    healthy: AtomicBool,
    commits: AtomicU64,
    batches: AtomicU64,
    /// Log lines of running tasks not written because the writer was too far behind.
    lines_shed: AtomicU64,
}

/// The progress of running tasks, kept in memory and written with their next change that
/// matters (a restart, an end) rather than at every step: a task run again after a crash
/// starts from the beginning anyway, and a step a second per task would otherwise be most of
/// what the store writes.
#[derive(Debug, Default)]
struct Progress(Mutex<HashMap<Pid, (u32, u64)>>);

impl Progress {
    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, (u32, u64)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `batch`'s progress here, and writes a task's last progress into the batch just
    /// before its end.
    fn take_from(&self, batch: &mut Vec<Change>) {
        let touches = batch.iter().any(|change| {
            matches!(
                change,
                Change::Event(
                    _,
                    TaskEvent::Progress { .. }
                        | TaskEvent::Ended { .. }
                        | TaskEvent::Restarting { .. }
                )
            )
        });
        if !touches {
            return;
        }
        let mut live = self.lock();
        let mut kept = Vec::with_capacity(batch.len() + 1);
        for change in batch.drain(..) {
            match change {
                Change::Event(pid, TaskEvent::Progress { step, fuel, .. }) => {
                    live.insert(pid, (step, fuel));
                }
                Change::Event(pid, event @ TaskEvent::Ended { .. }) => {
                    if let Some((step, fuel)) = live.remove(&pid) {
                        let progress = TaskEvent::Progress {
                            step,
                            steps: 0,
                            fuel,
                        };
                        kept.push(Change::Event(pid, progress));
                    }
                    kept.push(Change::Event(pid, event));
                }
                Change::Event(pid, event @ TaskEvent::Restarting { .. }) => {
                    live.remove(&pid);
                    kept.push(Change::Event(pid, event));
                }
                change => kept.push(change),
            }
        }
        *batch = kept;
    }

    /// Shows the progress kept here in `records` of tasks still running.
    fn show(&self, records: &mut [TaskRecord]) {
        let live = self.lock();
        if live.is_empty() {
            return;
        }
        for record in records
            .iter_mut()
            .filter(|record| record.status == Status::Running)
        {
            if let Some(&(step, fuel)) = live.get(&record.pid) {
                record.step = step;
                record.fuel_consumed = fuel;
            }
        }
    }
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    progress: Progress,
    shared: Arc<Shared>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Batches waiting past which log lines are shed: [`SHED_LOGS_PAST`] but in tests.
    shed_logs_past: usize,
    /// Held for the life of the store: the file is this host's alone.
    _lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why the store could not be opened; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the store's directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the store {path} is in use by another running host (it holds {lock}); stop that host, \
         or give this one another --store"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot open the store {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "the store {path} is not a SQLite database or is corrupt ({reason}); move it aside to \
         start with an empty store, or restore it from a backup"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the store {path} has schema version {found}, newer than this host's {SCHEMA_VERSION}: \
         it was written by a newer http-spawn; run that version, or give this one another --store"
    )]
    Newer { path: PathBuf, found: i64 },
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`, migrates its schema forward, and starts its
    /// writer.
    pub fn open(path: &Path, sync: StoreSync) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        }
        let lock = lock_file(path)?;
        let unreadable = |error: rusqlite::Error| classify_open_error(path, &error);
        let mut writer = Connection::open(path).map_err(unreadable)?;
        configure(&writer, sync).map_err(unreadable)?;
        migrate(path, &mut writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                reader.busy_timeout(Duration::from_secs(5))?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()
            .map_err(unreadable)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            healthy: AtomicBool::new(true),
            commits: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            lines_shed: AtomicU64::new(0),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_loop(&shared, &mut writer))
                .map_err(|error| OpenError::Unreadable {
                    path: path.to_owned(),
                    reason: format!("starting the writer thread: {error}"),
                })?
        };
        Ok(Self {
            path: path.to_owned(),
            progress: Progress::default(),
            shared,
            readers,
            next_reader: AtomicUsize::new(0),
            writer: Mutex::new(Some(thread)),
            shed_logs_past: SHED_LOGS_PAST,
            _lock: lock,
        })
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.readers.len() {
            if let Ok(reader) = self.readers[(start + offset) % self.readers.len()].try_lock() {
                return reader;
            }
        }
        self.readers[start % self.readers.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            queue.closed = true;
        }
        self.shared.wake.notify_all();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // The last handle may go with a callback the writer runs: it cannot wait for itself.
        if let Some(writer) = writer
            && writer.thread().id() != std::thread::current().id()
        {
            let _ = writer.join();
        }
    }
}

/// Takes `<path>.lock` for this process, or says who holds it.
fn lock_file(path: &Path) -> Result<File, OpenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| OpenError::Unreadable {
            path: lock_path.clone(),
            reason: error.to_string(),
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd as _;
        // SAFETY: flock takes a file descriptor this function owns, open for as long as the
        // call; it neither keeps nor frees it.
        let held = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if held != 0 {
            return Err(OpenError::Locked {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
    }
    Ok(file)
}

fn classify_open_error(path: &Path, error: &rusqlite::Error) -> OpenError {
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

fn configure(connection: &Connection, sync: StoreSync) -> rusqlite::Result<()> {
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match sync {
        StoreSync::Full => "FULL",
        StoreSync::Normal => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", synchronous)?;
    connection.pragma_update(None, "foreign_keys", "OFF")?;
    // The prune's scratch table stays in memory.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a newer one.
fn migrate(path: &Path, connection: &mut Connection) -> Result<(), OpenError> {
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
        tx.execute_batch(migration).map_err(fail)?;
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

/// Batches waiting for the writer past which the log lines of running tasks are shed: they are
/// the one thing a task writes at a rate of its own choosing (a line a step, for every live
/// task), and past this the writer has fallen behind, so keeping them would grow the queue
/// without bound. Their events are still published; every other change is always kept.
const SHED_LOGS_PAST: usize = 10_000;

/// Whether `batch` holds nothing but log lines of a running task.
fn only_log_lines(batch: &[Change]) -> bool {
    batch
        .iter()
        .all(|change| matches!(change, Change::Event(_, TaskEvent::Logs { .. })))
}

impl SqliteStore {
    /// Drops a batch of log lines the writer has no time for, counting them, and tells the
    /// submitter it is done (its events are published: live streams still see the lines).
    fn shed(&self, batch: &[Change], done: Option<Done>) {
        let lines: usize = batch
            .iter()
            .map(|change| match change {
                Change::Event(_, TaskEvent::Logs { lines, .. }) => lines.len(),
                _ => 0,
            })
            .sum();
        let before = self
            .shared
            .lines_shed
            .fetch_add(lines as u64, Ordering::Relaxed);
        if before == 0 {
            tracing::warn!(
                "the task store's writer has fallen behind: log lines of running tasks are \
                 shed (not stored, still streamed) until it catches up; see \
                 http_spawn_store_log_lines_shed_total"
            );
        }
        if let Some(done) = done {
            done(Ok(()));
        }
    }
}

/// The writer thread: takes every pending batch, commits them in one transaction, then tells
/// their submitters; until the store is dropped.
fn write_loop(shared: &Shared, connection: &mut Connection) {
    let mut retry: Vec<Pending> = Vec::new();
    loop {
        let mut taken: Vec<Pending> = std::mem::take(&mut retry);
        let closed = {
            let mut queue = shared
                .queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            while taken.is_empty() && queue.pending.is_empty() && !queue.closed {
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            taken.extend(queue.pending.drain(..));
            if taken.is_empty() && queue.closed {
                return;
            }
            queue.closed
        };
        let error = match commit(connection, &taken) {
            Ok(more) => {
                committed(shared, taken);
                if let Some(prune) = more {
                    // More ended tasks are due than one prune deletes (more end each second
                    // than it takes): the next one goes in the next commit, beside whatever
                    // else is waiting, until retention is met.
                    lock_queue(shared).pending.push_back(Pending {
                        batch: vec![prune],
                        done: None,
                    });
                }
                continue;
            }
            Err(error) => error,
        };
        if !transient(&error) {
            // A change the store refuses for what it is, not for the disk: write each batch
            // alone, so that one bad change cannot hold up the others.
            tracing::error!(%error, "a commit failed; writing its batches one at a time");
            for pending in taken {
                match commit(connection, std::slice::from_ref(&pending)) {
                    Ok(_) => committed(shared, vec![pending]),
                    Err(error) => {
                        tracing::error!(%error, changes = ?pending.batch, "changes refused");
                        finish(pending, Err(unavailable(error)));
                    }
                }
            }
            continue;
        }
        if shared.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(%error, "the task store cannot write; new tasks are refused until \
                it can, and the changes of running tasks are kept and tried again");
        }
        let error = unavailable(error);
        for pending in taken {
            if keeps(&pending) {
                retry.push(pending);
            } else {
                finish(pending, Err(error.clone()));
            }
        }
        if closed {
            tracing::error!(
                kept = retry.len(),
                "the host stops with changes the store could not take"
            );
            return;
        }
        std::thread::sleep(RETRY_WAIT);
    }
}

fn lock_queue(shared: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    shared
        .queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts a commit and tells its submitters.
fn committed(shared: &Shared, taken: Vec<Pending>) {
    shared.commits.fetch_add(1, Ordering::Relaxed);
    shared
        .batches
        .fetch_add(taken.len() as u64, Ordering::Relaxed);
    if !shared.healthy.swap(true, Ordering::AcqRel) {
        tracing::info!("the task store takes writes again");
    }
    for pending in taken {
        finish(pending, Ok(()));
    }
}

/// Tells `pending`'s submitter how its write went.
fn finish(pending: Pending, result: Result<(), StoreError>) {
    super::tell(pending.done, result);
}

/// Whether a failed commit may succeed later as it is: the disk is full, an I/O error, the
/// file busy.
fn transient(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        )
    )
}

/// Whether a batch that could not be written is kept to try again: the changes of a running
/// task's life, which must not be lost. Anything a submitter waits for (an acceptance, a
/// worker version, a prune) fails at once.
fn keeps(pending: &Pending) -> bool {
    pending
        .batch
        .iter()
        .all(|change| matches!(change, Change::Event(..)))
}

/// Writes `taken` in one transaction. When a prune in it left more due than it deleted, the
/// prune to write next.
fn commit(connection: &mut Connection, taken: &[Pending]) -> rusqlite::Result<Option<Change>> {
    let tx = connection.transaction()?;
    let mut more = None;
    for change in taken.iter().flat_map(|pending| &pending.batch) {
        if write(&tx, change)? {
            more = Some(change);
        }
    }
    tx.commit()?;
    Ok(more.and_then(|change| match change {
        &Change::Prune {
            max_history,
            ended_before,
            keys_before,
        } => Some(Change::Prune {
            max_history,
            ended_before,
            keys_before,
        }),
        _ => None,
    }))
}

fn key(pid: Pid) -> (i64, i64) {
    (i64::from(pid.boot()), pid.seq() as i64)
}

/// The record's status and fields that only the current attempt may change are written only
/// while the task has not ended (`ended_at IS NULL`), so a late write never reopens an end.
/// True when the change was a prune that left more due than it deleted.
fn write(tx: &rusqlite::Transaction<'_>, change: &Change) -> rusqlite::Result<bool> {
    match change {
        Change::Accepted {
            record,
            spec,
            key: idempotency,
            ..
        } => {
            let (boot, seq) = key(record.pid);
            let parent = record.parent.map(key);
            tx.prepare_cached(
                "INSERT INTO tasks (boot, seq, spawned_at, name, worker, version, module_sha256,
                    duration, payload, deadline_secs, max_attempts, on_host_loss, status, attempt,
                    parent_boot, parent_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
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
        }
        Change::Event(pid, event) => write_event(tx, *pid, event)?,
        Change::Prune {
            max_history,
            ended_before,
            keys_before,
        } => return prune(tx, *max_history, *ended_before, *keys_before),
        // One host, no other to forward to: a forward is never made for this store.
        Change::Forward { .. } => {}
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
    }
    Ok(false)
}

fn write_event(
    tx: &rusqlite::Transaction<'_>,
    pid: Pid,
    event: &TaskEvent,
) -> rusqlite::Result<()> {
    let (boot, seq) = key(pid);
    match event {
        TaskEvent::Started { at, steps, fuel } => {
            tx.prepare_cached(
                "UPDATE tasks SET status = 'running', started_at = ?3, steps = ?4, fuel = ?5,
                    ready_at = NULL
                 WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL",
            )?
            .execute(params![boot, seq, nanos(*at), steps, *fuel as i64])?;
        }
        TaskEvent::Progress { step, fuel, .. } => {
            tx.prepare_cached(
                "UPDATE tasks SET step = ?3, fuel = ?4
                 WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL",
            )?
            .execute(params![boot, seq, step, *fuel as i64])?;
        }
        TaskEvent::Logs {
            lines,
            dropped_bytes,
        } => {
            // Only while the task has not ended: nothing is added to an ended task's log.
            let mut insert = tx.prepare_cached(
                "INSERT INTO logs (boot, seq, at, source, message)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS
                    (SELECT 1 FROM tasks WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL)",
            )?;
            for line in lines {
                insert.execute(params![
                    boot,
                    seq,
                    nanos(line.at),
                    source_name(line.source),
                    line.message
                ])?;
            }
            if *dropped_bytes > 0 {
                tx.prepare_cached(
                    "UPDATE tasks SET logs_dropped_bytes = ?3
                     WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL",
                )?
                .execute(params![boot, seq, *dropped_bytes as i64])?;
            }
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
        TaskEvent::Ended {
            at,
            fuel,
            end,
            attempt,
        } => {
            let entry = attempt_json(0, end, *at);
            tx.prepare_cached(
                "UPDATE tasks SET status = ?3, outcome = ?4, exit_code = ?5, error = ?6,
                    ended_at = ?7, fuel = ?8, ready_at = NULL,
                    attempts = CASE WHEN json_array_length(attempts) > 0
                        THEN json_insert(attempts, '$[#]',
                            json_set(json(?9), '$.attempt', attempt))
                        ELSE attempts END
                 WHERE boot = ?1 AND seq = ?2 AND ended_at IS NULL AND attempt = ?10",
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
                entry,
                attempt,
            ])?;
        }
    }
    Ok(())
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
    tx.prepare_cached("DELETE FROM logs WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)")?
        .execute([])?;
    tx.prepare_cached("DELETE FROM tasks WHERE (boot, seq) IN (SELECT boot, seq FROM doomed)")?
        .execute([])?;
    tx.prepare_cached("DELETE FROM doomed")?.execute([])?;
    tx.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute(params![nanos(keys_before)])?;
    Ok(i64::try_from(doomed).is_ok_and(|doomed| doomed >= PRUNE_BATCH))
}

const RECORD_COLUMNS: &str = "boot, seq, spawned_at, name, worker, version, status, duration,
    step, steps, exit_code, outcome, error, started_at, ended_at, fuel, attempt, attempts,
    logs_dropped_bytes, parent_boot, parent_seq";

/// How many columns [`RECORD_COLUMNS`] names: where the columns selected after them start.
const RECORD_COLUMN_COUNT: usize = 21;

fn record_of(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let boot: i64 = row.get(0)?;
    let seq: i64 = row.get(1)?;
    let pid = Pid::new(boot as u32, seq as u64);
    let worker: String = row.get(4)?;
    let version: String = row.get(5)?;
    let mut record =
        TaskRecord::spawned(pid, row.get(3)?, row.get(7)?, worker.into(), version.into());
    record.spawned_at = time(row.get(2)?);
    record.status = status_of(&row.get::<_, String>(6)?);
    record.step = row.get(8)?;
    record.steps = row.get(9)?;
    record.exit_code = row.get(10)?;
    record.outcome = row
        .get::<_, Option<String>>(11)?
        .as_deref()
        .and_then(Outcome::parse);
    record.error = row.get(12)?;
    record.started_at = row.get::<_, Option<i64>>(13)?.map(time);
    record.ended_at = row.get::<_, Option<i64>>(14)?.map(time);
    record.fuel_consumed = row.get::<_, i64>(15)? as u64;
    record.attempt = row.get(16)?;
    record.attempts = attempts_of(&row.get::<_, String>(17)?);
    record.logs_dropped_bytes = row.get::<_, i64>(18)? as u64;
    record.parent = match (
        row.get::<_, Option<i64>>(19)?,
        row.get::<_, Option<i64>>(20)?,
    ) {
        (Some(boot), Some(seq)) => Some(Pid::new(boot as u32, seq as u64)),
        _ => None,
    };
    Ok(record)
}

fn spec_of(row: &Row<'_>, offset: usize) -> rusqlite::Result<TaskSpec> {
    Ok(TaskSpec {
        module_sha256: row.get(offset)?,
        payload: row.get(offset + 1)?,
        deadline_secs: row.get(offset + 2)?,
        max_attempts: row.get(offset + 3)?,
        on_host_loss: OnHostLoss::parse(&row.get::<_, String>(offset + 4)?)
            .unwrap_or(OnHostLoss::Restart),
        ready_at: row.get::<_, Option<i64>>(offset + 5)?.map(time),
    })
}

impl Store for SqliteStore {
    fn submit(&self, mut batch: Vec<Change>, done: Option<Done>) {
        self.progress.take_from(&mut batch);
        if batch.is_empty() && done.is_none() {
            return;
        }
        {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if queue.pending.len() >= self.shed_logs_past && only_log_lines(&batch) {
                drop(queue);
                self.shed(&batch, done);
                return;
            }
            queue.pending.push_back(Pending { batch, done });
        }
        self.shared.wake.notify_one();
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            log_lines_shed: self.shared.lines_shed.load(Ordering::Relaxed),
            fenced_writes: 0,
        }
    }

    fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        let (boot, seq) = key(pid);
        let reader = self.reader();
        let sql = format!("SELECT {RECORD_COLUMNS} FROM tasks WHERE boot = ?1 AND seq = ?2");
        let record = reader
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement
                    .query_row(params![boot, seq], record_of)
                    .optional()
            })
            .map_err(unavailable)?;
        Ok(record.map(|mut record| {
            self.progress.show(std::slice::from_mut(&mut record));
            record
        }))
    }

    fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        let (boot, seq) = key(pid);
        let reader = self.reader();
        let read = || -> rusqlite::Result<Option<TaskLogs>> {
            let Some(dropped_bytes) = reader
                .prepare_cached(
                    "SELECT logs_dropped_bytes FROM tasks WHERE boot = ?1 AND seq = ?2",
                )?
                .query_row(params![boot, seq], |row| row.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(None);
            };
            let mut statement = reader.prepare_cached(
                "SELECT at, source, message FROM logs WHERE boot = ?1 AND seq = ?2 ORDER BY rowid",
            )?;
            let lines = statement
                .query_map(params![boot, seq], |row| {
                    Ok(LogLine {
                        at: time(row.get(0)?),
                        source: source_of(&row.get::<_, String>(1)?),
                        message: row.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(TaskLogs {
                lines,
                dropped_bytes: dropped_bytes as u64,
            }))
        };
        read().map_err(unavailable)
    }

    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM tasks WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, value: rusqlite::types::Value| {
            args.push(value);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(status) = query.status {
            arg(
                &mut sql,
                " AND status = ?",
                status.as_str().to_owned().into(),
            );
        }
        if let Some(name) = &query.name {
            arg(&mut sql, " AND name = ?", name.clone().into());
        }
        if let Some(worker) = &query.worker {
            arg(&mut sql, " AND worker = ?", worker.clone().into());
        }
        if let Some(parent) = query.parent {
            let (boot, seq) = key(parent);
            arg(&mut sql, " AND parent_boot = ?", boot.into());
            arg(&mut sql, " AND parent_seq = ?", seq.into());
        }
        if let Some(before) = query.before {
            let (boot, seq) = key(before.pid);
            arg(
                &mut sql,
                " AND (spawned_at, boot, seq) < (?",
                (before.at as i64).into(),
            );
            arg(&mut sql, ", ?", boot.into());
            arg(&mut sql, ", ?)", seq.into());
        }
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        arg(
            &mut sql,
            " ORDER BY spawned_at DESC, boot DESC, seq DESC LIMIT ?",
            (limit.saturating_add(1)).into(),
        );
        let reader = self.reader();
        let mut tasks = reader
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement
                    .query_map(rusqlite::params_from_iter(args), record_of)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(unavailable)?;
        let more = tasks.len() > query.limit;
        tasks.truncate(query.limit);
        self.progress.show(&mut tasks);
        let next = if more {
            tasks.last().map(Cursor::of)
        } else {
            None
        };
        Ok(Page { tasks, next })
    }

    fn unfinished(&self) -> Result<Vec<(TaskRecord, TaskSpec)>, StoreError> {
        let reader = self.reader();
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, module_sha256, payload, deadline_secs, max_attempts,
                on_host_loss, ready_at
             FROM tasks WHERE ended_at IS NULL ORDER BY spawned_at, boot, seq"
        );
        reader
            .prepare(&sql)
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| {
                        Ok((record_of(row)?, spec_of(row, RECORD_COLUMN_COUNT)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(unavailable)
    }

    fn last_seq(&self, boot: u32) -> Result<u64, StoreError> {
        let reader = self.reader();
        reader
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM tasks WHERE boot = ?1",
                params![i64::from(boot)],
                |row| row.get::<_, i64>(0),
            )
            .map(|seq| seq as u64)
            .map_err(unavailable)
    }

    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        let reader = self.reader();
        reader
            .query_row(
                "SELECT body_sha256, boot, seq, created_at FROM idempotency WHERE key = ?1",
                params![key],
                |row| {
                    Ok(Remembered {
                        body_sha256: row.get(0)?,
                        pid: Pid::new(row.get::<_, i64>(1)? as u32, row.get::<_, i64>(2)? as u64),
                        at: time(row.get(3)?),
                    })
                },
            )
            .optional()
            .map_err(unavailable)
    }

    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let reader = self.reader();
        reader
            .query_row(
                "SELECT bytes FROM modules WHERE sha256 = ?1",
                params![sha256],
                |row| row.get(0),
            )
            .optional()
            .map_err(unavailable)
    }

    fn worker(&self, name: &str) -> Result<Option<WorkerVersions>, StoreError> {
        let reader = self.reader();
        reader
            .query_row(
                "SELECT current, current_source, current_installed_at, previous, previous_source,
                    previous_installed_at, file_sha256 FROM workers WHERE name = ?1",
                params![name],
                |row| {
                    let previous = match row.get::<_, Option<String>>(3)? {
                        Some(sha256) => Some(StoredVersion {
                            sha256,
                            source: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            installed_at: time(row.get::<_, Option<i64>>(5)?.unwrap_or(0)),
                        }),
                        None => None,
                    };
                    Ok(WorkerVersions {
                        current: StoredVersion {
                            sha256: row.get(0)?,
                            source: row.get(1)?,
                            installed_at: time(row.get(2)?),
                        },
                        previous,
                        file_sha256: row.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::model::{OnHostLoss, Pid, TaskEnd, TaskRecord, TaskSpec};
    use crate::store::{ListQuery, Store};

    fn ended_task(seq: u64) -> Vec<Change> {
        let pid = Pid::new(1, seq);
        let record = TaskRecord::spawned(pid, format!("t{seq}"), 0, Arc::from("w"), Arc::from("v"));
        let spec = TaskSpec {
            module_sha256: "00".repeat(32),
            payload: None,
            deadline_secs: 30,
            max_attempts: 1,
            on_host_loss: OnHostLoss::Restart,
            ready_at: None,
        };
        vec![
            Change::Accepted {
                record: Box::new(record),
                spec,
                key: None,
                shared: false,
            },
            Change::Event(
                pid,
                TaskEvent::Ended {
                    at: SystemTime::now(),
                    fuel: 0,
                    end: TaskEnd::exited(0),
                    attempt: 1,
                },
            ),
        ]
    }

    /// An empty directory of this test's own, under the system's temporary one.
    fn scratch(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("http-spawn-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    /// Makes `path` a store of schema version 1 holding one task, `00000001-1`, as a host of
    /// that version left it.
    fn version_1_store(path: &Path) {
        let connection = Connection::open(path).expect("open");
        connection.execute_batch(SCHEMA).expect("version 1");
        connection
            .pragma_update(None, "user_version", 1)
            .expect("versioned");
        connection
            .execute(
                "INSERT INTO tasks (boot, seq, spawned_at, name, worker, version, module_sha256,
                    duration, deadline_secs, max_attempts, on_host_loss, status)
                 VALUES (1, 1, 1000, 'old', 'w', 'v', '', 0, 30, 1, 'restart', 'spawned')",
                [],
            )
            .expect("a task");
    }

    fn schema_version(path: &Path) -> i64 {
        Connection::open(path)
            .expect("open")
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version")
    }

    fn child_of(parent: Pid, seq: u64) -> Vec<Change> {
        let mut accepted = ended_task(seq);
        if let Some(Change::Accepted { record, .. }) = accepted.first_mut() {
            record.parent = Some(parent);
        }
        accepted
    }

    fn children(store: &SqliteStore, parent: Pid) -> Vec<(Pid, Option<Pid>)> {
        let query = ListQuery {
            limit: 100,
            parent: Some(parent),
            ..ListQuery::default()
        };
        let page = store.list(&query).expect("list");
        page.tasks.iter().map(|r| (r.pid, r.parent)).collect()
    }

    /// A store a version-1 host left is migrated in place: its tasks are kept, with no
    /// parent, and it takes and lists tasks with one from then on.
    #[test]
    fn a_version_1_store_is_migrated_in_place() {
        let dir = scratch("migrate");
        let path = dir.join("tasks.db");
        version_1_store(&path);
        let old = Pid::new(1, 1);
        let store = SqliteStore::open(&path, StoreSync::Normal).expect("migrated");
        let kept = store.get(old).expect("get").expect("the old task is kept");
        assert_eq!((kept.name.as_str(), kept.parent), ("old", None));
        assert!(children(&store, old).is_empty());

        store
            .wait(
                [child_of(old, 2), ended_task(3), child_of(old, 4)]
                    .into_iter()
                    .flatten()
                    .collect(),
            )
            .expect("written");
        assert_eq!(
            store.get(Pid::new(1, 2)).expect("get").map(|r| r.parent),
            Some(Some(old))
        );
        assert_eq!(
            children(&store, old),
            [(Pid::new(1, 4), Some(old)), (Pid::new(1, 2), Some(old))]
        );
        drop(store);

        assert_eq!(schema_version(&path), SCHEMA_VERSION);
        let store = SqliteStore::open(&path, StoreSync::Normal).expect("reopened");
        assert_eq!(
            children(&store, old).len(),
            2,
            "a migrated store opens as it is"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `SCHEMA` is version 1 as hosts of that version wrote it, and every store is built
    /// from it: a change to it is a new migration instead.
    #[test]
    fn version_1_is_as_released() {
        use sha2::{Digest as _, Sha256};
        assert_eq!(
            format!("{:x}", Sha256::digest(SCHEMA)),
            "eaa29227bc1d7ede883cbdb0a88aa4542e13f98242e93cc80ac6bdb0819731fc"
        );
    }

    /// A store of a newer schema than this host's is refused, not written.
    #[test]
    fn a_newer_store_is_refused() {
        let dir = scratch("newer");
        let path = dir.join("tasks.db");
        version_1_store(&path);
        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("versioned");
        let refused = SqliteStore::open(&path, StoreSync::Normal);
        assert!(
            matches!(refused, Err(OpenError::Newer { found, .. }) if found == SCHEMA_VERSION + 1)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Listing a task's children reads the parent index, not every task.
    #[test]
    fn children_are_listed_through_the_parent_index() {
        let dir = scratch("parent-index");
        let path = dir.join("tasks.db");
        drop(SqliteStore::open(&path, StoreSync::Normal).expect("created"));
        let connection = Connection::open(&path).expect("open");
        let plan: Vec<String> = connection
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {RECORD_COLUMNS} FROM tasks WHERE 1 = 1
                 AND parent_boot = ?1 AND parent_seq = ?2
                 ORDER BY spawned_at DESC, boot DESC, seq DESC LIMIT ?3"
            ))
            .expect("plan")
            .query_map(params![1, 1, 101], |row| row.get(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("plan");
        assert!(
            plan.iter().any(|step| step.contains("tasks_by_parent")),
            "{plan:?}"
        );
        drop(connection);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn kept(store: &SqliteStore) -> usize {
        let query = ListQuery {
            limit: 10_000,
            ..ListQuery::default()
        };
        store.list(&query).expect("list").tasks.len()
    }

    /// More ended tasks than one prune deletes (as when more than a batch end each second):
    /// one prune asked for is followed by as many as it takes, without waiting a second each.
    #[test]
    fn a_prune_far_behind_catches_up_by_itself() {
        let dir = std::env::temp_dir().join(format!("http-spawn-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir.join("tasks.db"), StoreSync::Normal).expect("open");
        let total = 2 * PRUNE_BATCH as u64 + 500;
        let batch: Vec<Change> = (1..=total).flat_map(ended_task).collect();
        store.wait(batch).expect("written");
        assert_eq!(kept(&store), total as usize);
        store
            .wait(vec![Change::Prune {
                max_history: 10,
                ended_before: UNIX_EPOCH,
                keys_before: UNIX_EPOCH,
            }])
            .expect("pruned");
        // The follow-ups go through the writer on their own; a bound against a hang only.
        let deadline = Instant::now() + Duration::from_secs(60);
        while kept(&store) > 10 {
            assert!(Instant::now() < deadline, "still {} kept", kept(&store));
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(kept(&store), 10);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer too far behind sheds the log lines of running tasks, and only those: their
    /// submitters are told, the lines are counted, and every other change is written.
    #[test]
    fn a_writer_too_far_behind_sheds_log_lines_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("http-spawn-shed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = SqliteStore::open(&dir.join("tasks.db"), StoreSync::Normal).expect("open");
        // As if the writer were always behind.
        store.shed_logs_past = 0;
        let pid = Pid::new(1, 1);
        let logs = |message: &str| {
            Change::Event(
                pid,
                TaskEvent::Logs {
                    lines: vec![crate::model::LogLine {
                        at: SystemTime::now(),
                        source: crate::model::LogSource::Info,
                        message: message.into(),
                    }],
                    dropped_bytes: 0,
                },
            )
        };
        let mut changes = ended_task(1);
        let end = changes.pop().expect("the end");
        store.wait(changes).expect("accepted");
        store.wait(vec![logs("shed")]).expect("told it is done");
        // A batch with the end and its last lines is never shed.
        store.wait(vec![logs("kept"), end]).expect("ended");
        let kept: Vec<String> = store
            .logs(pid)
            .expect("read")
            .expect("the task")
            .lines
            .into_iter()
            .map(|line| line.message)
            .collect();
        assert_eq!(kept, ["kept"]);
        assert_eq!(store.stats().log_lines_shed, 1);
        let record = store.get(pid).expect("read").expect("the task");
        assert_eq!(record.status, crate::model::Status::Exited);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
