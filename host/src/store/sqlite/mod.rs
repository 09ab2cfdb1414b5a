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

mod read;
mod schema;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::backlog::Backlog;
use super::columns::{source_of, time, unavailable};
use super::writer::{Writer, WriterStats};
use super::{
    Change, Cursor, Done, ListQuery, Page, Remembered, Store, StoreError, StoreStats,
    StoredVersion, WorkerVersions,
};
use crate::model::{LogLine, Pid, Status, TaskEvent, TaskLogs, TaskRecord, TaskSpec};
use read::{RECORD_COLUMN_COUNT, RECORD_COLUMNS, record_of, spec_of};
use schema::{SCHEMA_VERSION, classify_open_error, migrate};

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
    backlog: Arc<Backlog>,
    stats: Arc<WriterStats>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// writer, whose backlog is bounded to `backlog_bytes` (see [`Backlog`]).
    pub fn open(path: &Path, sync: StoreSync, backlog_bytes: usize) -> Result<Self, OpenError> {
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
        let thread = {
            let (backlog, stats) = (Arc::clone(&backlog), Arc::clone(&stats));
            let backend = writer::SqliteBackend { connection };
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || Writer::new(&backlog, backend, &stats, "sqlite").run())
                .map_err(|error| OpenError::Unreadable {
                    path: path.to_owned(),
                    reason: format!("starting the writer thread: {error}"),
                })?
        };
        Ok(Self {
            path: path.to_owned(),
            progress: Progress::default(),
            backlog,
            stats,
            readers,
            next_reader: AtomicUsize::new(0),
            writer: Mutex::new(Some(thread)),
            _lock: lock,
        })
    }

    /// Runs `read` with a reader connection: a free one at once; else, on a worker of an
    /// async runtime (an HTTP handler), off it (`block_in_place`), so that what else waits on
    /// that worker moves to another while this waits for a reader.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> T) -> T {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.readers.len() {
            if let Ok(reader) = self.readers[(start + offset) % self.readers.len()].try_lock() {
                return read(&reader);
            }
        }
        let wait = || {
            let reader = self.readers[start % self.readers.len()]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            read(&reader)
        };
        super::blocking(wait)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
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
    Ok(())
}

impl Store for SqliteStore {
    fn submit(&self, mut batch: Vec<Change>, done: Option<Done>) {
        self.progress.take_from(&mut batch);
        self.backlog.submit(batch, done, 0);
    }

    fn healthy(&self) -> bool {
        self.stats.healthy.load(Ordering::Acquire)
    }

    fn durable(&self) -> bool {
        true
    }

    fn stats(&self) -> StoreStats {
        StoreStats::of(&self.stats, &self.backlog)
    }

    fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        let (boot, seq) = key(pid);
        let sql = format!("SELECT {RECORD_COLUMNS} FROM tasks WHERE boot = ?1 AND seq = ?2");
        let record = self
            .read(|reader| {
                reader.prepare_cached(&sql).and_then(|mut statement| {
                    statement
                        .query_row(params![boot, seq], record_of)
                        .optional()
                })
            })
            .map_err(unavailable)?;
        Ok(record.map(|mut record| {
            self.progress.show(std::slice::from_mut(&mut record));
            record
        }))
    }

    fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        let (boot, seq) = key(pid);
        let read = |reader: &Connection| -> rusqlite::Result<Option<TaskLogs>> {
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
        self.read(read).map_err(unavailable)
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
        let mut tasks = self
            .read(|reader| {
                reader.prepare_cached(&sql).and_then(|mut statement| {
                    statement
                        .query_map(rusqlite::params_from_iter(args), record_of)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
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
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, module_sha256, payload, deadline_secs, max_attempts,
                on_host_loss, ready_at
             FROM tasks WHERE ended_at IS NULL ORDER BY spawned_at, boot, seq"
        );
        self.read(|reader| {
            reader.prepare(&sql).and_then(|mut statement| {
                statement
                    .query_map([], |row| {
                        Ok((record_of(row)?, spec_of(row, RECORD_COLUMN_COUNT)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
        })
        .map_err(unavailable)
    }

    fn last_seq(&self, boot: u32) -> Result<u64, StoreError> {
        self.read(|reader| {
            reader
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) FROM tasks WHERE boot = ?1",
                    params![i64::from(boot)],
                    |row| row.get::<_, i64>(0),
                )
                .map(|seq| seq as u64)
        })
        .map_err(unavailable)
    }

    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        self.read(|reader| {
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
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::schema::SCHEMA;
    use super::writer::PRUNE_BATCH;
    use super::*;
    use crate::model::{OnHostLoss, Pid, TaskEnd, TaskRecord, TaskSpec};

    /// The backlog's bound the tests' stores have: far more than any of them writes.
    const BACKLOG_BYTES: usize = 64 << 20;
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
        let store = SqliteStore::open(&path, StoreSync::Normal, BACKLOG_BYTES).expect("migrated");
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
        let store = SqliteStore::open(&path, StoreSync::Normal, BACKLOG_BYTES).expect("reopened");
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
        let refused = SqliteStore::open(&path, StoreSync::Normal, BACKLOG_BYTES);
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
        drop(SqliteStore::open(&path, StoreSync::Normal, BACKLOG_BYTES).expect("created"));
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
        let store = SqliteStore::open(&dir.join("tasks.db"), StoreSync::Normal, BACKLOG_BYTES)
            .expect("open");
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
        // As if the writer were always behind: a bound that an end and its last line just fit
        // in, and that a line alone is past half of.
        let bound = super::super::backlog::cost_bytes(&logs("kept"))
            + super::super::backlog::cost_bytes(&end);
        let store =
            SqliteStore::open(&dir.join("tasks.db"), StoreSync::Normal, bound).expect("open");
        store.wait(changes).expect("accepted");
        store.wait(vec![logs("shed")]).expect("told it is done");
        // An end keeps its last lines while they fit within the bound.
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

    /// Issue #20, item 7: a read that finds every reader busy waits off the async runtime's
    /// worker that asked, so that the other tasks of that worker go on meanwhile.
    #[test]
    fn a_read_waiting_for_a_reader_does_not_hold_its_async_worker() {
        let dir = scratch("busy-readers");
        let store = Arc::new(
            SqliteStore::open(&dir.join("tasks.db"), StoreSync::Normal, BACKLOG_BYTES)
                .expect("open"),
        );
        let busy: Vec<_> = store
            .readers
            .iter()
            .map(|reader| reader.lock().expect("a reader"))
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a runtime");
        let reading = Arc::clone(&store);
        runtime.spawn(async move {
            let _ = reading.get(Pid::new(1, 1));
        });
        let (ran, other_ran) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = ran.send(());
        });
        // A bound against a hang, not a timing: the other task runs at once, or never while
        // the readers are busy.
        let went_on = other_ran.recv_timeout(Duration::from_secs(10)).is_ok();
        drop(busy);
        runtime.shutdown_timeout(Duration::from_secs(10));
        assert!(
            went_on,
            "the worker was held by a read waiting for a reader"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
