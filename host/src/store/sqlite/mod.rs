//! The durable store: one SQLite file in WAL mode, written by one writer thread that commits
//! what waits in its backlog in one transaction (group commit) and then tells each submitter,
//! read through connections of its own by everyone else.
//!
//! - The writer, its backlog and what it does when a commit fails are the durable stores'
//!   shared ones ([`super::writer`], [`super::backlog`]); this store's side of it is `writer`:
//!   its statements, and SQLite's result codes read as causes.
//! - The file is held by one host at a time, with an exclusive `flock` on `<file>.lock`.
//! - The schema (`schema`) carries its version in `PRAGMA user_version`; an older one is
//!   migrated forward at start, a newer one is refused.
//! - A commit writes its tasks' changes as one row of an append-only journal (`journal`): the
//!   tasks' rows in `tasks` and `log_parts` are written later, many at a time and in pid order,
//!   most once, whole, a moment after the task ends (`unwritten`). Until then reads show them
//!   from memory; after a crash, the journal is read back into the rows at start.
//! - A running task's progress and newest log lines are kept in memory a while (`kept`), and
//!   shown by reads as if written.
//! - Records are read back by `read`.

mod journal;
mod kept;
mod read;
mod schema;
mod unwritten;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::backlog::Backlog;
use super::columns::{checkpoint_of, lines_of, time, unavailable};
use super::teller::Flush;
use super::writer::{Writer, WriterStats};
use super::{
    Change, Cursor, Done, ListQuery, Page, Reading, Remembered, Store, StoreError, StoreStats,
    StoredSchedule, StoredVersion, WorkerVersions,
};
use crate::model::{Pid, StoredCheckpoint, TaskLogs, TaskRecord, TaskSpec};
use kept::Kept;
use read::{RECORD_COLUMN_COUNT, RECORD_COLUMNS, SPEC_COLUMNS, record_of, spec_of};
use schema::{SCHEMA_VERSION, classify_open_error, migrate};
use unwritten::Unwritten;

/// Connections kept for reading, each behind its own lock.
const READERS: usize = 4;

/// A pid as the store's `(boot, seq)` columns hold it.
fn key(pid: Pid) -> (i64, i64) {
    (i64::from(pid.boot()), pid.seq() as i64)
}

/// How much `--store-sync` makes a commit wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreSync {
    /// Every commit reaches the disk before it counts: it survives a power cut.
    Full,
    /// A commit survives a crash of the host, not of the machine.
    Normal,
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    kept: Arc<Kept>,
    unwritten: Arc<Unwritten>,
    /// Set by the writer while too many tasks are only journaled.
    behind: Arc<std::sync::atomic::AtomicBool>,
    backlog: Arc<Backlog>,
    stats: Arc<WriterStats>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Told each time a read lets its reader go, for reads awaiting one.
    released: tokio::sync::Notify,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Writes kept log lines once due; stops when this is dropped.
    flusher: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
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
    /// writer, whose backlog is bounded to `backlog_bytes` (see [`Backlog`]); running tasks'
    /// log lines are written `log_flush` after they came at the latest (see `kept`); commits
    /// start at least `commit_spacing` apart while changes come fast.
    pub fn open(
        path: &Path,
        sync: StoreSync,
        backlog_bytes: usize,
        log_flush: Duration,
        commit_spacing: Duration,
    ) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        }
        let lock = lock_file(path)?;
        let unreadable = |error: rusqlite::Error| classify_open_error(path, &error);
        let mut connection = Connection::open(path).map_err(unreadable)?;
        configure(&connection, sync).map_err(unreadable)?;
        migrate(path, &mut connection)?;
        match writer::replay(&mut connection) {
            Ok(0) => {}
            Ok(tasks) => tracing::info!(path = %path.display(), tasks,
                "tasks journaled before the host stopped are written to their rows"),
            Err(writer::Replay::Sqlite(error)) => return Err(unreadable(error)),
            Err(error @ writer::Replay::Corrupt { .. }) => {
                return Err(OpenError::Corrupt {
                    path: path.to_owned(),
                    reason: error.to_string(),
                });
            }
        }
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
        let backlog = Arc::new(Backlog::new(backlog_bytes));
        let stats = Arc::new(WriterStats::new());
        let unwritten = Arc::new(Unwritten::default());
        let behind = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flush = match sync {
            StoreSync::Full => group_commit(&connection).map_err(unreadable)?,
            StoreSync::Normal => None,
        };
        let thread = {
            let (backlog, stats) = (Arc::clone(&backlog), Arc::clone(&stats));
            let backend = writer::SqliteBackend {
                connection,
                flush,
                unwritten: Arc::clone(&unwritten),
                behind: Arc::clone(&behind),
                failures: 0,
                retry_at: None,
                commit_spacing,
            };
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || Writer::new(&backlog, backend, &stats, "sqlite").run())
                .map_err(|error| OpenError::Unreadable {
                    path: path.to_owned(),
                    reason: format!("starting the writer thread: {error}"),
                })?
        };
        let kept = Arc::new(Kept::new(log_flush));
        let flusher = if log_flush.is_zero() {
            None
        } else {
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let (kept, backlog) = (Arc::clone(&kept), Arc::clone(&backlog));
            let tick = (log_flush / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            let thread = std::thread::Builder::new()
                .name("store-log-flush".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(tick)
                    {
                        kept.flush_due(std::time::Instant::now(), |due| {
                            backlog.submit(due, None, 0);
                        });
                    }
                })
                .map_err(|error| OpenError::Unreadable {
                    path: path.to_owned(),
                    reason: format!("starting the log flusher thread: {error}"),
                })?;
            Some((stop, thread))
        };
        Ok(Self {
            path: path.to_owned(),
            kept,
            unwritten,
            behind,
            backlog,
            stats,
            readers,
            next_reader: AtomicUsize::new(0),
            released: tokio::sync::Notify::new(),
            writer: Mutex::new(Some(thread)),
            flusher: Mutex::new(flusher),
            _lock: lock,
        })
    }

    /// Runs `read` with a reader connection: a free one at once; else, on a worker of an
    /// async runtime, off it (`block_in_place`), so that what else waits on that worker moves
    /// to another while this waits for a reader. HTTP handlers await one instead
    /// ([`SqliteStore::awaited`]).
    fn read<T>(&self, read: impl FnOnce(&Connection) -> T) -> T {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let result = match self.free_reader(start) {
            Some(reader) => read(&reader),
            None => {
                let wait = || {
                    let reader = self.readers[start % self.readers.len()]
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    read(&reader)
                };
                super::blocking(wait)
            }
        };
        self.released.notify_one();
        result
    }

    /// A reader no other read holds now, trying each from `start`.
    fn free_reader(&self, start: usize) -> Option<MutexGuard<'_, Connection>> {
        (0..self.readers.len()).find_map(|offset| {
            self.readers[(start + offset) % self.readers.len()]
                .try_lock()
                .ok()
        })
    }

    /// Runs `read` through `via`: waiting for a free reader, or with the one taken.
    fn with<T>(&self, via: Via<'_>, read: impl FnOnce(&Connection) -> T) -> T {
        match via {
            Via::Wait => self.read(read),
            Via::Taken(reader) => read(reader),
        }
    }

    /// Runs `read` once a reader is free, awaiting one without holding the thread: for the
    /// awaited forms of the store's reads.
    async fn awaited<T>(&self, read: impl FnOnce(Via<'_>) -> T) -> T {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Listening before looking: a reader let go in between still wakes this read.
            released.as_mut().enable();
            if let Some(reader) = self.free_reader(start) {
                let result = read(Via::Taken(&reader));
                drop(reader);
                self.released.notify_one();
                return result;
            }
            released.await;
        }
    }
}

/// How a read reaches a connection.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// Waiting for a free reader ([`SqliteStore::read`]): the blocking forms.
    Wait,
    /// With a reader already taken: the awaited forms.
    Taken(&'a Connection),
}

/// The store's reads, through either way of reaching a connection.
impl SqliteStore {
    /// [`Store::remembered`], reading through `via`.
    fn remembered_via(&self, via: Via<'_>, key: &str) -> Result<Option<Remembered>, StoreError> {
        self.with(via, |reader| {
            reader
                .query_row(
                    "SELECT body_sha256, boot, seq, created_at FROM idempotency WHERE key = ?1",
                    params![key],
                    |row| {
                        Ok(Remembered {
                            body_sha256: row.get(0)?,
                            pid: Pid::new(
                                row.get::<_, i64>(1)? as u32,
                                row.get::<_, i64>(2)? as u64,
                            ),
                            at: time(row.get(3)?),
                        })
                    },
                )
                .optional()
        })
        .map_err(unavailable)
    }

    /// [`Store::get`], reading through `via`.
    fn get_via(&self, via: Via<'_>, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        // Here first: a task here is newer than its row, and one gone from here was written.
        let record = match self.unwritten.held(pid) {
            Some(held) => Some(held.image.record.clone()),
            None => {
                let (boot, seq) = key(pid);
                let sql =
                    format!("SELECT {RECORD_COLUMNS} FROM tasks WHERE boot = ?1 AND seq = ?2");
                self.with(via, |reader| {
                    reader.prepare_cached(&sql).and_then(|mut statement| {
                        statement
                            .query_row(params![boot, seq], record_of)
                            .optional()
                    })
                })
                .map_err(unavailable)?
            }
        };
        Ok(record.map(|mut record| {
            self.kept.show(std::slice::from_mut(&mut record));
            record
        }))
    }

    /// [`Store::logs`], reading through `via`.
    fn logs_via(&self, via: Via<'_>, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        let read = |reader: &Connection| -> rusqlite::Result<Option<(TaskLogs, bool)>> {
            // Its written lines and those not yet written, with no move between the two.
            self.unwritten
                .consistently(|| logs_of(reader, &self.unwritten, pid))
        };
        // Written first, then kept: a line moves from kept to written, never back, so none is
        // shown twice. Nothing is added to an ended task's log.
        let Some((mut logs, ended)) = self.with(via, read).map_err(unavailable)? else {
            return Ok(None);
        };
        if !ended && let Some((lines, dropped_bytes)) = self.kept.lines(pid) {
            logs.lines.extend(lines);
            logs.dropped_bytes = logs.dropped_bytes.max(dropped_bytes);
        }
        Ok(Some(logs))
    }

    /// [`Store::list`], reading through `via`.
    fn list_via(&self, via: Via<'_>, query: &ListQuery) -> Result<Page, StoreError> {
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
        if let Some(schedule) = &query.schedule {
            arg(&mut sql, " AND schedule = ?", schedule.clone().into());
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
        sql.push_str(" ORDER BY spawned_at DESC, boot DESC, seq DESC");
        let wanted = query.limit.saturating_add(1);
        let mut tasks = self
            .with(via, |reader| {
                // The tasks not yet written, and the rows of the others, with no task moved
                // between the two meanwhile: each task is listed once, as it stands now.
                self.unwritten.consistently(|| {
                    let unwritten = self.unwritten.listed(query);
                    let mut statement = reader.prepare_cached(&sql)?;
                    let mut rows = statement.query(rusqlite::params_from_iter(args.iter()))?;
                    let mut written = Vec::new();
                    while written.len() < wanted
                        && let Some(row) = rows.next()?
                    {
                        let record = record_of(row)?;
                        // A task here now is newer here than its row (a task comes here again
                        // when it changes; one that leaves meanwhile makes this read again).
                        match self.unwritten.held(record.pid) {
                            None => written.push(record),
                            Some(held) if query.wants(&held.image.record) => {
                                written.push(held.image.record.clone());
                            }
                            Some(_) => {}
                        }
                    }
                    Ok::<_, rusqlite::Error>(newest_first(unwritten, written, wanted))
                })
            })
            .map_err(unavailable)?;
        let more = tasks.len() > query.limit;
        tasks.truncate(query.limit);
        self.kept.show(&mut tasks);
        let next = if more {
            tasks.last().map(Cursor::of)
        } else {
            None
        };
        Ok(Page { tasks, next })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let flusher = self
            .flusher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((stop, thread)) = flusher {
            drop(stop);
            let _ = thread.join();
        }
        self.kept.flush_all(|due| self.backlog.submit(due, None, 0));
        self.backlog.close();
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
    // Ends rewrite rows of tasks accepted seconds ago, spread over the table: a cache that
    // holds them saves reading each page back (32 MiB; the default is 2 MiB).
    connection.pragma_update(None, "cache_size", -32_768)?;
    // A page changed by many commits is copied into the database once per checkpoint: fewer
    // checkpoints copy fewer pages (16 MiB of log between them; the default is 4 MiB). One
    // each second, between commits, raised the p99 of acceptances at 5,000 a second (10.1
    // against 7.2 ms in one round).
    connection.pragma_update(None, "wal_autocheckpoint", 4_000)?;
    Ok(())
}

/// With `--store-sync full`, a commit of the writer's connection no longer waits for the disk
/// itself: its log (the `-wal` file) is flushed by the writer's teller, once for every commit
/// made meanwhile, before their submitters are told (see `store::teller`). `full` keeps its
/// meaning: nothing is answered before it is on the disk. SQLite with `synchronous = NORMAL`
/// still flushes the log before each checkpoint copies it into the database, and the database
/// after; a log begun again after a checkpoint is flushed before it is used. Only for a
/// database in WAL mode; any other keeps SQLite's own `FULL`, and no flush here.
fn group_commit(connection: &Connection) -> rusqlite::Result<Option<Flush>> {
    let mode: String = connection.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    let Some(path) = connection
        .path()
        .filter(|_| mode.eq_ignore_ascii_case("wal"))
    else {
        return Ok(None);
    };
    let wal = PathBuf::from(format!("{path}-wal"));
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    let mut file: Option<File> = None;
    Ok(Some(Box::new(move || {
        if file.is_none() {
            match File::open(&wal) {
                Ok(opened) => file = Some(opened),
                // No log yet: nothing was committed to it.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        file.as_ref().map_or(Ok(()), File::sync_data)
    })))
}

/// `pid`'s log: its written lines, then those journaled and not yet written; and whether it
/// has ended.
fn logs_of(
    reader: &Connection,
    unwritten: &Unwritten,
    pid: Pid,
) -> rusqlite::Result<Option<(TaskLogs, bool)>> {
    let (boot, seq) = key(pid);
    let held = unwritten.held(pid);
    let written = reader
        .prepare_cached(
            "SELECT logs_dropped_bytes, ended_at IS NOT NULL, log FROM tasks
             WHERE boot = ?1 AND seq = ?2",
        )?
        .query_row(params![boot, seq], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })
        .optional()?;
    let (dropped_bytes, ended) = match (&held, &written) {
        (Some(held), _) => (
            held.image.record.logs_dropped_bytes,
            held.image.record.status.is_terminal(),
        ),
        (None, Some((dropped_bytes, ended, _))) => (*dropped_bytes as u64, *ended),
        (None, None) => return Ok(None),
    };
    let mut lines = Vec::new();
    if written.is_some() {
        let mut statement = reader.prepare_cached(
            "SELECT lines FROM log_parts WHERE boot = ?1 AND seq = ?2 ORDER BY rowid",
        )?;
        let mut rows = statement.query(params![boot, seq])?;
        while let Some(row) = rows.next()? {
            lines_of(row.get_ref(0)?.as_blob()?, &mut lines);
        }
    }
    // The lines written with its end came last of those written; then those not yet written.
    if let Some((_, _, Some(last))) = written {
        lines_of(&last, &mut lines);
    }
    if let Some(held) = held {
        lines_of(&held.lines, &mut lines);
    }
    let logs = TaskLogs {
        lines,
        dropped_bytes,
    };
    Ok(Some((logs, ended)))
}

/// The first `wanted` of two lists each newest first, newest first, a task in both once (as
/// `b` has it: `b` read it later).
fn newest_first(a: Vec<TaskRecord>, b: Vec<TaskRecord>, wanted: usize) -> Vec<TaskRecord> {
    let mut merged: Vec<TaskRecord> = Vec::with_capacity(wanted.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while merged.len() < wanted {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if Cursor::of(x) == Cursor::of(y) => {
                a.next();
                b.next()
            }
            (Some(x), Some(y)) if Cursor::of(x) > Cursor::of(y) => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(record) => merged.push(record),
            None => break,
        }
    }
    merged
}

impl Store for SqliteStore {
    fn submit(&self, mut batch: Vec<Change>, done: Option<Done>) {
        self.kept.take_from(&mut batch);
        self.backlog.submit(batch, done, 0);
    }

    fn healthy(&self) -> bool {
        self.stats.healthy.load(Ordering::Acquire) && !self.behind.load(Ordering::Acquire)
    }

    fn durable(&self) -> bool {
        true
    }

    fn stats(&self) -> StoreStats {
        StoreStats::of(&self.stats, &self.backlog)
    }

    fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        self.get_via(Via::Wait, pid)
    }

    fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        self.logs_via(Via::Wait, pid)
    }

    fn submission(&self, pid: Pid) -> Result<Option<(TaskRecord, TaskSpec)>, StoreError> {
        // Here first, as for a record.
        let found = match self.unwritten.held(pid) {
            Some(held) => Some((held.image.record.clone(), held.image.spec.clone())),
            None => {
                let (boot, seq) = key(pid);
                let sql = format!(
                    "SELECT {RECORD_COLUMNS}, {SPEC_COLUMNS} FROM tasks WHERE boot = ?1 AND seq = ?2"
                );
                self.with(Via::Wait, |reader| {
                    reader.prepare_cached(&sql).and_then(|mut statement| {
                        statement
                            .query_row(params![boot, seq], |row| {
                                Ok((record_of(row)?, spec_of(row, RECORD_COLUMN_COUNT)?))
                            })
                            .optional()
                    })
                })
                .map_err(unavailable)?
            }
        };
        Ok(found.map(|(mut record, spec)| {
            self.kept.show(std::slice::from_mut(&mut record));
            (record, spec)
        }))
    }

    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.list_via(Via::Wait, query)
    }

    fn get_async(&self, pid: Pid) -> Reading<'_, Option<TaskRecord>> {
        Box::pin(self.awaited(move |via| self.get_via(via, pid)))
    }

    fn logs_async(&self, pid: Pid) -> Reading<'_, Option<TaskLogs>> {
        Box::pin(self.awaited(move |via| self.logs_via(via, pid)))
    }

    fn list_async(&self, query: &ListQuery) -> Reading<'_, Page> {
        let query = query.clone();
        Box::pin(self.awaited(move |via| self.list_via(via, &query)))
    }

    fn unfinished(&self) -> Result<Vec<(TaskRecord, TaskSpec)>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, {SPEC_COLUMNS}
             FROM tasks WHERE ended_at IS NULL ORDER BY spawned_at, boot, seq"
        );
        let mut tasks = self
            .read(|reader| {
                self.unwritten.consistently(|| {
                    let images = self.unwritten.images();
                    let here: std::collections::HashSet<Pid> =
                        images.iter().map(|image| image.record.pid).collect();
                    let mut tasks = reader.prepare(&sql).and_then(|mut statement| {
                        statement
                            .query_map([], |row| {
                                Ok((record_of(row)?, spec_of(row, RECORD_COLUMN_COUNT)?))
                            })?
                            .filter(|task| {
                                task.as_ref().map_or(true, |(r, _)| !here.contains(&r.pid))
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })?;
                    tasks.extend(
                        images
                            .into_iter()
                            .filter(|image| !image.record.status.is_terminal())
                            .map(|image| (image.record, image.spec)),
                    );
                    Ok::<_, rusqlite::Error>(tasks)
                })
            })
            .map_err(unavailable)?;
        tasks.sort_by_key(|(record, _)| Cursor::of(record));
        Ok(tasks)
    }

    fn last_seq(&self, boot: u32) -> Result<u64, StoreError> {
        // Here first, as `get` reads: a task gone from here is written.
        let here = self.unwritten.last_seq(boot);
        let written = self
            .read(|reader| {
                reader
                    .query_row(
                        "SELECT COALESCE(MAX(seq), 0) FROM tasks WHERE boot = ?1",
                        params![i64::from(boot)],
                        |row| row.get::<_, i64>(0),
                    )
                    .map(|seq| seq as u64)
            })
            .map_err(unavailable)?;
        Ok(written.max(here))
    }

    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        self.remembered_via(Via::Wait, key)
    }

    fn remembered_async(&self, key: &str) -> Reading<'_, Option<Remembered>> {
        let key = key.to_owned();
        Box::pin(self.awaited(move |via| self.remembered_via(via, &key)))
    }

    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|reader| {
            reader
                .query_row(
                    "SELECT bytes FROM modules WHERE sha256 = ?1",
                    params![sha256],
                    |row| row.get(0),
                )
                .optional()
        })
        .map_err(unavailable)
    }

    fn paused_workers(&self) -> Result<Vec<String>, StoreError> {
        self.read(|reader| {
            let mut statement =
                reader.prepare_cached("SELECT name FROM paused_workers ORDER BY name")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(unavailable)
    }

    fn checkpoint(&self, pid: Pid) -> Result<Option<StoredCheckpoint>, StoreError> {
        let (boot, seq) = key(pid);
        let row = self
            .read(|reader| {
                reader
                    .prepare_cached(
                        "SELECT meta, image FROM checkpoints WHERE boot = ?1 AND seq = ?2",
                    )?
                    .query_row(params![boot, seq], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, Option<Vec<u8>>>(1)?))
                    })
                    .optional()
            })
            .map_err(unavailable)?;
        Ok(row.and_then(|(meta, image)| {
            let read = checkpoint_of(pid, &meta, image);
            if read.is_none() {
                tracing::warn!(pid = %pid, "a checkpoint row does not read; it is passed over");
            }
            read
        }))
    }

    fn worker_limits(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|reader| {
            let mut statement =
                reader.prepare_cached("SELECT name, limits FROM worker_limits ORDER BY name")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<(String, String)>>>()
        })
        .map_err(unavailable)
    }

    fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        self.read(|reader| {
            let mut statement = reader.prepare_cached(
                "SELECT name, definition, paused, created_at, last_tick, last_boot, last_seq
                 FROM schedules ORDER BY name",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(StoredSchedule {
                    name: row.get(0)?,
                    definition: row.get(1)?,
                    paused: row.get(2)?,
                    created_at: time(row.get(3)?),
                    last_tick: row.get::<_, Option<i64>>(4)?.map(time),
                    last_pid: match (row.get::<_, Option<i64>>(5)?, row.get::<_, Option<i64>>(6)?) {
                        (Some(boot), Some(seq)) => Some(Pid::new(boot as u32, seq as u64)),
                        _ => None,
                    },
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(unavailable)
    }

    fn worker(&self, name: &str) -> Result<Option<WorkerVersions>, StoreError> {
        self.read(|reader| {
            reader.query_row(
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
        })
        .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests;
