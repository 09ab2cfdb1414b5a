//! The task store: what the host knows of every task, behind an interface of its own.
//!
//! Every write is a [`Change`]: a task accepted, or an event of its life. A store takes changes
//! in batches, so that a store that waits for a disk or a network can commit many changes at
//! once, and can fail. The ledger is the store's one writer; with the in-memory store it writes
//! inline, on whichever thread recorded the change. Records are read without their log lines,
//! which are kept apart ([`TaskLogs`]), and lists run newest first by acceptance time, not by
//! pid, so that pids of several boots or hosts list in the order they were accepted.
//!
//! [`MemoryStore`] keeps everything in this process; a durable store (SQLite) or a shared one
//! (PostgreSQL) implements [`Store`] with SQL of its own.

mod backlog;
mod columns;
mod memory;
mod postgres;
mod sqlite;
mod teller;
mod writer;

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::actor::EndNotice;
use crate::model::{Pid, Status, TaskEnd, TaskEvent, TaskLogs, TaskRecord, TaskSpec};

pub use backlog::BacklogSize;
pub use memory::MemoryStore;
pub use postgres::{
    Claimed, Command, NodeInfo, NodeSpec, PgStore, shown_unread as shown_database_url,
};
pub use sqlite::{SqliteStore, StoreSync};

/// One write to the store.
#[derive(Debug)]
pub enum Change {
    /// A task was accepted; its pid is new. `spec` is what it needs to run again after a
    /// crash; `key`, the idempotency key its request carried.
    Accepted {
        record: Box<TaskRecord>,
        spec: TaskSpec,
        key: Option<IdempotencyKey>,
        /// The task waits in a cluster's shared queue for any host with a free place, rather
        /// than on the host that accepted it. Only a shared store has such a queue.
        shared: bool,
        /// Its worker has limits, counted across the cluster: it waits in the shared queue
        /// (with `shared`) and starts only under them. Only a shared store counts them.
        limited: bool,
    },
    /// Something happened to a task (see [`TaskRecord::apply`]).
    Event(Pid, TaskEvent),
    /// Forget ended tasks past `max_history` or ended before `ended_before`, a batch at a
    /// time, and idempotency keys given before `keys_before`.
    Prune {
        max_history: usize,
        ended_before: SystemTime,
        keys_before: SystemTime,
    },
    /// Something for task `to`, which another host of a cluster may hold: the store hands it to
    /// whichever host holds the task when it is written. Only a shared store takes these.
    Forward { to: Pid, what: Forward },
    /// A module's bytes, kept by their SHA-256 (hex).
    Module { sha256: String, bytes: Vec<u8> },
    /// A worker's versions now; `file_sha256` is its module file's as last loaded.
    Worker {
        name: String,
        versions: WorkerVersions,
    },
    /// A schedule created, changed, removed or ticked.
    Schedule(ScheduleChange),
    /// A worker paused (its new tasks do not start) or resumed, on every host of a cluster.
    WorkerPaused { name: String, paused: bool },
    /// Worker `name`'s limits set over the API, or none: back to its registry file's. Kept
    /// as [`FlowLimits::to_json`](crate::config::FlowLimits::to_json) writes them. A shared
    /// store also counts from then on, under limits, the worker's tasks that hosts hold or
    /// that wait in its queue.
    WorkerLimits {
        name: String,
        limits: Option<crate::config::FlowLimits>,
    },
    /// A task's checkpoint row, written over whole (issue #26): its own policy at its
    /// acceptance, its latest image between two steps, its image dropped at its end, a
    /// resumption. A checkpoint the store cannot write is lost, not retried: the task keeps
    /// its earlier one, or runs again from its start if its host is lost.
    Checkpoint(Box<crate::model::StoredCheckpoint>),
}

/// What happens to a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleChange {
    /// Created, or its definition replaced (its ticks so far kept).
    Put(Box<StoredSchedule>),
    /// Removed; the tasks it created stay.
    Delete(String),
    /// Paused or resumed. Resuming also passes over the ticks missed while paused: `from` is
    /// its last tick then.
    Pause {
        name: String,
        paused: bool,
        from: Option<SystemTime>,
    },
    /// Tick `tick` was handled: it created task `pid`, or (none) it was skipped. A tick
    /// earlier than the last one handled changes nothing (another host of a cluster was first),
    /// nor does a skip of the last one; the task created by the last one is written over a skip
    /// of it.
    Ticked {
        name: String,
        tick: SystemTime,
        pid: Option<Pid>,
    },
}

/// A schedule as the store keeps it: its definition as JSON text, which the store does not
/// read, and where its ticks stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    pub name: String,
    /// `{cron, timezone, task, overlap, catch_up}`.
    pub definition: String,
    pub paused: bool,
    pub created_at: SystemTime,
    /// The latest tick handled (fired or skipped).
    pub last_tick: Option<SystemTime>,
    /// The task the latest tick that fired created.
    pub last_pid: Option<Pid>,
}

impl Change {
    /// The same prune again, for when this one deleted a full batch and more is due; none
    /// for any other change.
    fn prune_again(&self) -> Option<Change> {
        match *self {
            Change::Prune {
                max_history,
                ended_before,
                keys_before,
            } => Some(Change::Prune {
                max_history,
                ended_before,
                keys_before,
            }),
            _ => None,
        }
    }
}

/// What one host asks of a task another host of the cluster holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// End it with `end`: at once, in the store, if it waits in the shared queue.
    Kill(TaskEnd),
    /// Put `body` in its mailbox, from task `sender` or (none) an HTTP client.
    Message { sender: Option<Pid>, body: Vec<u8> },
    /// Task `from`, linked to it, ended abnormally, as `notice` says: it is told (it traps
    /// exits) or killed.
    Exit { from: Pid, notice: EndNotice },
}

/// What a store has written since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed; a store that writes in place counts each batch.
    pub commits: u64,
    /// Batches written.
    pub batches: u64,
    /// Log lines of running tasks shed because the writer had fallen behind.
    pub log_lines_shed: u64,
    /// Writes of tasks a shared store refused because this host no longer held them.
    pub fenced_writes: u64,
    /// What waits for the writer now.
    pub backlog: BacklogSize,
    /// Commits that failed, by cause: the environment, a conflict, the content.
    pub failures: [u64; 3],
    /// Changes the store refused for their content, by kind (`log_line`, `acceptance`,
    /// `error_text`, `progress`, `other`).
    pub refused: Vec<(&'static str, u64)>,
}

impl StoreStats {
    /// The stats of a durable store's writer and backlog.
    fn of(stats: &writer::WriterStats, backlog: &backlog::Backlog) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Self {
            commits: stats.commits.load(Relaxed),
            batches: stats.batches.load(Relaxed),
            log_lines_shed: backlog.shed(),
            fenced_writes: stats.fenced.load(Relaxed),
            backlog: backlog.size(),
            failures: stats.failures(),
            refused: stats.refusals(),
        }
    }
}

/// A read of the store for a caller on the async runtime.
pub type Reading<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Called once a submitted batch is written, or could not be.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Tells a batch's submitter how its write went, for a store's writer. A callback that panics
/// is a bug of the host's, which must not take the writer, and every later write, with it.
fn tell(done: Option<Done>, result: Result<(), StoreError>) {
    if let Some(done) = done {
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(result)));
        if called.is_err() {
            tracing::error!("a store callback panicked");
        }
    }
}

/// Runs `wait`, which blocks, off the async runtime's worker when called on one (an HTTP
/// handler): the other tasks of that worker move to another meanwhile, so that a store that
/// makes one request wait holds up no other. Elsewhere (a scheduler thread) it just runs.
pub(crate) fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// An idempotency key a request carried, and the body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// The SHA-256 of the request body, in hex.
    pub body_sha256: String,
    /// A key of an earlier request remembered from before this (past `--idempotency-ttl`)
    /// is free to take, pruned or not.
    pub stale_before: SystemTime,
}

/// What the store remembers of an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub body_sha256: String,
    pub pid: Pid,
    pub at: SystemTime,
}

/// One module version of a worker as the store keeps it: its bytes are in the store, by
/// their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub sha256: String,
    /// `file` or `upload`.
    pub source: String,
    pub installed_at: SystemTime,
}

/// A worker's current and previous version, and its module file's SHA-256 as last loaded, as
/// the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerVersions {
    pub current: StoredVersion,
    pub previous: Option<StoredVersion>,
    pub file_sha256: String,
}

/// Why the store could not answer or write.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written now; the write or read may succeed later.
    #[error("the task store is unavailable: {0}")]
    Unavailable(String),
    /// An acceptance's idempotency key was taken, at the same moment, by another request (on
    /// another host of a cluster): the acceptance was not written.
    #[error("a request with this Idempotency-Key was accepted at the same moment; retry")]
    KeyTaken,
    /// The store refuses this change for what it holds (a value it cannot keep, a
    /// constraint): the same change will never be taken.
    #[error("the task store refused it: {0}")]
    Refused(String),
    /// A message or a kill forwarded for a task another host may hold found no such task
    /// unfinished, or its mailbox and the messages waiting for it in the store full.
    #[error("the task has ended, or its mailbox is full")]
    NotDelivered,
    /// This host no longer holds the task: the change was not written (another host holds
    /// it now, or it has ended).
    #[error("this host no longer holds the task")]
    Fenced,
}

/// Where a task stands in a listing: when it was accepted, then its pid, so that tasks accepted
/// in the same instant still have one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Nanoseconds since the Unix epoch.
    at: u64,
    pid: Pid,
}

impl Cursor {
    /// The place of a task accepted `at`.
    pub fn new(at: SystemTime, pid: Pid) -> Self {
        let at = at.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        });
        Self { at, pid }
    }

    /// The place of `record` in a listing.
    pub fn of(record: &TaskRecord) -> Self {
        Self::new(record.spawned_at, record.pid)
    }
}

/// Written `<pid>.<nanoseconds in hex>`: opaque to clients, who pass it back as `before`.
impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}", self.pid, self.at)
    }
}

impl FromStr for Cursor {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (pid, at) = s.split_once('.').ok_or(())?;
        let canonical = !at.is_empty()
            && at.len() <= 16
            && (at == "0" || !at.starts_with('0'))
            && at
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !canonical {
            return Err(());
        }
        Ok(Self {
            at: u64::from_str_radix(at, 16).map_err(|_| ())?,
            pid: pid.parse()?,
        })
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Which records a listing wants: newest first, optionally filtered, a page at a time.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub name: Option<String>,
    pub worker: Option<String>,
    /// Only the tasks this task spawned.
    pub parent: Option<Pid>,
    /// Only the tasks this schedule's ticks created.
    pub schedule: Option<String>,
    /// Only tasks accepted before this place (the previous page's `next`).
    pub before: Option<Cursor>,
    pub limit: usize,
}

impl ListQuery {
    /// Whether `record` passes the filters (not the cursor).
    pub fn wants(&self, record: &TaskRecord) -> bool {
        self.status.is_none_or(|status| record.status == status)
            && self.name.as_deref().is_none_or(|name| record.name == name)
            && self
                .worker
                .as_deref()
                .is_none_or(|worker| *record.worker == *worker)
            && self
                .parent
                .is_none_or(|parent| record.parent == Some(parent))
            && self
                .schedule
                .as_deref()
                .is_none_or(|schedule| record.schedule.as_deref() == Some(schedule))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub tasks: Vec<TaskRecord>,
    /// Pass as `before` for the next page; absent on the last.
    #[schema(value_type = Option<String>)]
    pub next: Option<Cursor>,
}

/// The store's interface: the only way the rest of the host reads or writes what it knows of
/// tasks and worker versions.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Writes `batch`, in order after every batch submitted before it, whole or not at all,
    /// then calls `done`. Never waits for a disk or a network: a store that does hands the
    /// batch to a writer of its own and calls `done` from there.
    fn submit(&self, batch: Vec<Change>, done: Option<Done>);

    /// Writes `batch` and waits until it is written: for start-up and worker installs, never
    /// for a scheduler thread.
    fn wait(&self, batch: Vec<Change>) -> Result<(), StoreError> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let done: Done = Box::new(move |result| {
            let _ = sender.send(result);
        });
        self.submit(batch, Some(done));
        receiver
            .recv()
            .map_err(|_| StoreError::Unavailable("the store stopped writing".into()))?
    }

    /// Whether the last write succeeded: while it did not, new tasks are refused at once.
    fn healthy(&self) -> bool {
        true
    }

    /// Whether what it holds outlives the host: a task it holds unfinished runs again when a
    /// host starts on it (or, in a cluster, on another host).
    fn durable(&self) -> bool {
        false
    }

    /// Commits and batches written since the store was opened.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// A task's record, without its log lines, if the store still holds it.
    fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError>;
    /// A task's captured log, if the store still holds the task.
    fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError>;
    /// Records matching `query`, newest first.
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// [`Store::get`] for a caller on the async runtime (an HTTP handler): a store that waits
    /// for a database's answer, or for a free connection, waits without holding the thread.
    /// By default, the blocking read, for a store whose reads never wait long.
    fn get_async(&self, pid: Pid) -> Reading<'_, Option<TaskRecord>> {
        Box::pin(std::future::ready(self.get(pid)))
    }
    /// [`Store::logs`], as [`Store::get_async`] is to [`Store::get`].
    fn logs_async(&self, pid: Pid) -> Reading<'_, Option<TaskLogs>> {
        Box::pin(std::future::ready(self.logs(pid)))
    }
    /// [`Store::list`], as [`Store::get_async`] is to [`Store::get`].
    fn list_async(&self, query: &ListQuery) -> Reading<'_, Page> {
        Box::pin(std::future::ready(self.list(query)))
    }
    /// [`Store::remembered`], as [`Store::get_async`] is to [`Store::get`].
    fn remembered_async(&self, key: &str) -> Reading<'_, Option<Remembered>> {
        Box::pin(std::future::ready(self.remembered(key)))
    }
    /// What an idempotency key was first used for, if the store still remembers it.
    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError>;

    /// A task's record with what it was submitted with (its payload, limits and priority),
    /// if the store still holds it: what a retry runs again. The memory store keeps no
    /// module digest (a retry runs its worker's current version).
    fn submission(&self, pid: Pid) -> Result<Option<(TaskRecord, TaskSpec)>, StoreError>;

    /// Every schedule, by name.
    fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError>;

    /// The workers paused, by name.
    fn paused_workers(&self) -> Result<Vec<String>, StoreError>;

    /// The workers' limits set over the API, by name, as [`Change::WorkerLimits`] wrote them.
    fn worker_limits(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// A task's checkpoint row, with its image if it still has one (see
    /// [`Change::Checkpoint`]).
    fn checkpoint(&self, pid: Pid) -> Result<Option<crate::model::StoredCheckpoint>, StoreError>;
    /// [`Store::checkpoint`], as [`Store::get_async`] is to [`Store::get`].
    fn checkpoint_async(&self, pid: Pid) -> Reading<'_, Option<crate::model::StoredCheckpoint>> {
        Box::pin(std::future::ready(self.checkpoint(pid)))
    }

    /// The tasks accepted and not ended, in the order they were accepted, with what each
    /// needs to run again: what a host finds at start after it was lost.
    fn unfinished(&self) -> Result<Vec<(TaskRecord, TaskSpec)>, StoreError> {
        Ok(Vec::new())
    }
    /// The highest sequence number the store holds among pids of boot `boot`.
    fn last_seq(&self, _boot: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// A module's bytes, by their SHA-256 (hex), if the store keeps them.
    fn module(&self, _sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// A worker's versions, if the store keeps them.
    fn worker(&self, _name: &str) -> Result<Option<WorkerVersions>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_only_its_own_form_parses() {
        let cursor = Cursor::new(
            UNIX_EPOCH + std::time::Duration::from_nanos(0x1f),
            Pid::new(7, 2),
        );
        assert_eq!(cursor.to_string(), "00000007-2.1f");
        assert_eq!("00000007-2.1f".parse::<Cursor>(), Ok(cursor));
        for bad in [
            "00000007-2",
            "00000007-2.",
            "00000007-2.01f",
            "x.1f",
            "00000007-2.1F",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} parsed");
        }
    }
}
