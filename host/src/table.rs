//! The process table: what the host knows of every task, behind a small interface of its own.
//!
//! Everything that happens to a task reaches the table as a [`TaskEvent`], applied in order.
//! The in-memory [`MemoryTable`] is today's only implementation; a durable journal or a shared
//! database can implement [`ProcessTable`] without touching the sandbox, the scheduler or the API.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::capture::LogLine;

/// A task's process id: this host's boot id and a sequence number that never repeats while the
/// host runs. Written `<boot:8 hex>-<seq:hex>`, which is URL-safe.
///
/// The boot id keeps pids of different hosts (or of one host across restarts) apart, so that a
/// table shared by several hosts can answer for any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    boot: u32,
    seq: u64,
}

impl Pid {
    /// The pid of the `seq`-th task of the host whose boot id is `boot`.
    pub fn new(boot: u32, seq: u64) -> Self {
        Self { boot, seq }
    }

    /// The sequence number, unique among this host's pids.
    pub fn seq(self) -> u64 {
        self.seq
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:x}", self.boot, self.seq)
    }
}

impl FromStr for Pid {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical form parses, so each pid has exactly one spelling.
        fn hex(part: &str, max_len: usize) -> Result<u64, ()> {
            let canonical = !part.is_empty()
                && part.len() <= max_len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && (part == "0" || !part.starts_with('0') || max_len == 8);
            if !canonical {
                return Err(());
            }
            u64::from_str_radix(part, 16).map_err(|_| ())
        }
        let (boot, seq) = s.split_once('-').ok_or(())?;
        if boot.len() != 8 {
            return Err(());
        }
        Ok(Self {
            boot: u32::try_from(hex(boot, 8)?).map_err(|_| ())?,
            seq: hex(seq, 16)?,
        })
    }
}

impl Serialize for Pid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, not yet instantiated.
    Spawned,
    /// Instantiated; between or inside steps.
    Running,
    /// The guest finished with an exit code (which may be non-zero).
    Exited,
    /// The task ended without an exit code: a trap, a limit, or the guest's own `failed`.
    Failed,
    /// Stopped by the host or an operator.
    Killed,
}

impl Status {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spawned => "spawned",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Killed => "killed",
        }
    }

    /// Whether the task has ended and will change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Exited | Self::Failed | Self::Killed)
    }
}

/// Why a task ended, finer than its [`Status`]: what an operator filters and alerts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The guest returned `done` with an exit code.
    Exit,
    /// The guest returned `failed`, or its `start` returned an error.
    GuestError,
    /// A step used up its fuel budget.
    OutOfFuel,
    /// The guest tried to grow its memory past the cap.
    MemoryLimit,
    /// The guest overflowed its wasm stack.
    StackOverflow,
    /// The guest panicked (a Rust guest's panic message reached its stderr before it trapped).
    Panic,
    /// Any other trap, or a host call the sandbox refused.
    Trap,
    /// The worker could not be instantiated for this task.
    InstantiationFailed,
    /// The task ran past its wall-clock limit.
    DeadlineExceeded,
    /// The host stopped the task.
    Killed,
}

impl Outcome {
    /// The name the API and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exit => "exit",
            Self::GuestError => "guest_error",
            Self::OutOfFuel => "out_of_fuel",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::InstantiationFailed => "instantiation_failed",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Killed => "killed",
        }
    }
}

/// How a task ended: what the scheduler reports and the table records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    /// `exited`, `failed` or `killed`.
    pub status: Status,
    /// Why, in a word.
    pub outcome: Outcome,
    /// The guest's exit code, when it gave one.
    pub exit_code: Option<i32>,
    /// What went wrong, for people.
    pub error: Option<String>,
}

/// Something that happened to a task, in the order it happened.
#[derive(Debug)]
pub enum TaskEvent {
    /// The instance is up and `start` returned; it plans `steps` steps and has burnt `fuel`.
    Started {
        at: SystemTime,
        steps: u32,
        fuel: u64,
    },
    /// The task woke for step `step` (1-based) of the `steps` it planned; `fuel` is its total
    /// fuel consumed so far.
    Progress { step: u32, steps: u32, fuel: u64 },
    /// Lines the task logged or printed since the last event; `dropped_bytes` is the running
    /// total of what the capture cap discarded.
    Logs {
        lines: Vec<LogLine>,
        dropped_bytes: u64,
    },
    /// An attempt ended in failure and the task will run again as `next_attempt`.
    Restarting {
        at: SystemTime,
        fuel: u64,
        end: TaskEnd,
        next_attempt: u32,
    },
    /// The task ended; its store is gone.
    Ended {
        at: SystemTime,
        fuel: u64,
        end: TaskEnd,
    },
}

/// How one attempt of a restartable task ended.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub status: Status,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ended_at: SystemTime,
}

impl Attempt {
    fn of(attempt: u32, end: &TaskEnd, ended_at: SystemTime) -> Self {
        Self {
            attempt,
            status: end.status,
            outcome: end.outcome,
            exit_code: end.exit_code,
            error: end.error.clone(),
            ended_at,
        }
    }
}

/// What the host knows of one task.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskRecord {
    #[schema(value_type = String, example = "6f1c2a9e-1")]
    pub pid: Pid,
    pub name: String,
    /// The worker the task runs, by name.
    #[schema(value_type = String)]
    pub worker: Arc<str>,
    /// The worker's module version the task runs (the start of its SHA-256), fixed at spawn:
    /// a swap of the worker never changes what a task already accepted runs.
    #[schema(value_type = String)]
    pub version: Arc<str>,
    pub status: Status,
    /// The duration the client asked for, in seconds.
    pub duration: u32,
    /// Steps completed (wake-ups after a sleep).
    pub step: u32,
    /// Steps the guest planned (0 when it could not tell).
    pub steps: u32,
    pub exit_code: Option<i32>,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub spawned_at: SystemTime,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<SystemTime>,
    /// Fuel consumed over all steps, instantiation included (of the current attempt).
    pub fuel_consumed: u64,
    /// The attempt running or last run, from 1.
    pub attempt: u32,
    /// How each attempt of a task with a restart policy ended, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// The captured log: guest `log` calls, stdout and stderr, capped per task.
    #[serde(skip)]
    pub logs: Vec<LogLine>,
    /// Bytes of log the cap discarded.
    pub logs_dropped_bytes: u64,
}

impl TaskRecord {
    /// The record of a task just accepted.
    pub fn spawned(
        pid: Pid,
        name: String,
        duration: u32,
        worker: Arc<str>,
        version: Arc<str>,
    ) -> Self {
        Self {
            pid,
            name,
            worker,
            version,
            status: Status::Spawned,
            duration,
            step: 0,
            steps: 0,
            exit_code: None,
            outcome: None,
            error: None,
            spawned_at: SystemTime::now(),
            started_at: None,
            ended_at: None,
            fuel_consumed: 0,
            attempt: 1,
            attempts: Vec::new(),
            logs: Vec::new(),
            logs_dropped_bytes: 0,
        }
    }

    /// Folds one event into the record. Events after the end are ignored: an ended task is
    /// never resurrected, whatever arrives late.
    fn apply(&mut self, event: TaskEvent) {
        if self.status.is_terminal() {
            return;
        }
        match event {
            TaskEvent::Started { at, steps, fuel } => {
                self.status = Status::Running;
                self.started_at = Some(at);
                self.steps = steps;
                self.fuel_consumed = fuel;
            }
            TaskEvent::Progress { step, fuel, .. } => {
                self.step = step;
                self.fuel_consumed = fuel;
            }
            TaskEvent::Logs {
                mut lines,
                dropped_bytes,
            } => {
                self.logs.append(&mut lines);
                self.logs_dropped_bytes = dropped_bytes;
            }
            TaskEvent::Restarting {
                at,
                fuel,
                end,
                next_attempt,
            } => {
                self.attempts.push(Attempt::of(self.attempt, &end, at));
                self.attempt = next_attempt;
                self.status = Status::Spawned;
                self.step = 0;
                self.fuel_consumed = fuel;
            }
            TaskEvent::Ended { at, fuel, end } => {
                if !self.attempts.is_empty() {
                    self.attempts.push(Attempt::of(self.attempt, &end, at));
                }
                self.status = end.status;
                self.outcome = Some(end.outcome);
                self.exit_code = end.exit_code;
                self.error = end.error;
                self.ended_at = Some(at);
                self.fuel_consumed = fuel;
            }
        }
    }
}

pub(crate) fn rfc3339<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*at))
}

fn rfc3339_opt<S: Serializer>(at: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// Which records a listing wants: newest first, optionally filtered, a page at a time.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub name: Option<String>,
    pub worker: Option<String>,
    /// Only tasks older than this one (the previous page's cursor).
    pub before: Option<Pid>,
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub tasks: Vec<TaskRecord>,
    /// Pass as `before` for the next page; absent on the last.
    #[schema(value_type = Option<String>)]
    pub next: Option<Pid>,
}

/// The process table's interface: the only way the rest of the host reads or writes task state.
pub trait ProcessTable: Send + Sync + 'static {
    /// Records a task just accepted. Its pid is new.
    fn insert(&self, record: TaskRecord);
    /// Applies an event to a task's record.
    fn apply(&self, pid: Pid, event: TaskEvent);
    /// A copy of a task's record, if the table still holds it.
    fn get(&self, pid: Pid) -> Option<TaskRecord>;
    /// Records matching `query`, newest first.
    fn list(&self, query: &ListQuery) -> Page;
}

impl fmt::Debug for dyn ProcessTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProcessTable")
    }
}

/// Shards spread the scheduler threads' updates over several locks.
const SHARDS: usize = 16;

/// The in-memory process table. Live tasks are always kept; of the ended ones, only the most
/// recent `max_history`.
#[derive(Debug)]
pub struct MemoryTable {
    shards: [Mutex<HashMap<Pid, TaskRecord>>; SHARDS],
    ended: Mutex<VecDeque<Pid>>,
    max_history: usize,
}

impl MemoryTable {
    /// An empty table that keeps at most `max_history` ended tasks.
    pub fn new(max_history: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            ended: Mutex::new(VecDeque::new()),
            max_history,
        }
    }

    fn shard(&self, pid: Pid) -> std::sync::MutexGuard<'_, HashMap<Pid, TaskRecord>> {
        // The sequence number alone spreads consecutive tasks evenly.
        let shard = &self.shards[(pid.seq % SHARDS as u64) as usize];
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ProcessTable for MemoryTable {
    fn insert(&self, record: TaskRecord) {
        self.shard(record.pid).insert(record.pid, record);
    }

    fn apply(&self, pid: Pid, event: TaskEvent) {
        let ended = matches!(event, TaskEvent::Ended { .. });
        if let Some(record) = self.shard(pid).get_mut(&pid) {
            record.apply(event);
        }
        if !ended {
            return;
        }
        let evicted = {
            let mut queue = self.ended.lock().unwrap_or_else(|p| p.into_inner());
            queue.push_back(pid);
            (queue.len() > self.max_history)
                .then(|| queue.pop_front())
                .flatten()
        };
        if let Some(old) = evicted {
            self.shard(old).remove(&old);
        }
    }

    fn get(&self, pid: Pid) -> Option<TaskRecord> {
        self.shard(pid).get(&pid).cloned()
    }

    fn list(&self, query: &ListQuery) -> Page {
        let wanted = |record: &TaskRecord| {
            query.before.is_none_or(|before| record.pid < before)
                && query.status.is_none_or(|status| record.status == status)
                && query.name.as_deref().is_none_or(|name| record.name == name)
                && query
                    .worker
                    .as_deref()
                    .is_none_or(|worker| *record.worker == *worker)
        };
        // A scan of every shard: fine for the bounded table (live tasks plus history); a
        // durable table would answer from an index.
        let mut matches: Vec<(Pid, &Mutex<HashMap<Pid, TaskRecord>>)> = Vec::new();
        for shard in &self.shards {
            let records = shard.lock().unwrap_or_else(|p| p.into_inner());
            matches.extend(
                records
                    .values()
                    .filter(|r| wanted(r))
                    .map(|r| (r.pid, shard)),
            );
        }
        matches.sort_unstable_by_key(|&(pid, _)| std::cmp::Reverse(pid));
        let more = matches.len() > query.limit;
        let tasks: Vec<TaskRecord> = matches
            .iter()
            .take(query.limit)
            .filter_map(|&(pid, shard)| {
                let records = shard.lock().unwrap_or_else(|p| p.into_inner());
                records.get(&pid).cloned()
            })
            .collect();
        let next = if more {
            tasks.last().map(|r| r.pid)
        } else {
            None
        };
        Page { tasks, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end() -> TaskEnd {
        TaskEnd {
            status: Status::Exited,
            outcome: Outcome::Exit,
            exit_code: Some(0),
            error: None,
        }
    }

    #[test]
    fn pid_round_trips_and_rejects_non_canonical_forms() {
        let pid = Pid::new(0xdead_beef, 0x1f);
        assert_eq!(pid.to_string(), "deadbeef-1f");
        assert_eq!("deadbeef-1f".parse::<Pid>(), Ok(pid));
        for bad in [
            "",
            "-",
            "deadbeef",
            "deadbeef-",
            "DEADBEEF-1f",
            "1-1f",
            "deadbeef-01f",
            "deadbeef-+1",
            "123456789-1",
            "x-1",
        ] {
            assert!(bad.parse::<Pid>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn history_keeps_live_tasks_and_the_newest_ended_ones() {
        let table = MemoryTable::new(2);
        let pids: Vec<Pid> = (0..4).map(|seq| Pid::new(1, seq)).collect();
        for &pid in &pids {
            table.insert(TaskRecord::spawned(
                pid,
                "t".into(),
                0,
                "w".into(),
                "v".into(),
            ));
        }
        for &pid in &pids[..3] {
            let at = SystemTime::now();
            table.apply(
                pid,
                TaskEvent::Ended {
                    at,
                    fuel: 1,
                    end: end(),
                },
            );
        }
        assert!(table.get(pids[0]).is_none(), "oldest ended task evicted");
        assert_eq!(table.get(pids[1]).map(|r| r.status), Some(Status::Exited));
        assert_eq!(table.get(pids[2]).map(|r| r.status), Some(Status::Exited));
        assert_eq!(table.get(pids[3]).map(|r| r.status), Some(Status::Spawned));
    }

    #[test]
    fn lists_newest_first_filtered_a_page_at_a_time() {
        let table = MemoryTable::new(100);
        for seq in 1..=5 {
            let name = if seq % 2 == 0 { "even" } else { "odd" };
            table.insert(TaskRecord::spawned(
                Pid::new(1, seq),
                name.into(),
                0,
                "w".into(),
                "v".into(),
            ));
        }
        let at = SystemTime::now();
        table.apply(
            Pid::new(1, 4),
            TaskEvent::Ended {
                at,
                fuel: 0,
                end: end(),
            },
        );
        let seqs = |page: &Page| page.tasks.iter().map(|r| r.pid.seq).collect::<Vec<_>>();

        let first = table.list(&ListQuery {
            limit: 2,
            ..ListQuery::default()
        });
        assert_eq!(seqs(&first), [5, 4]);
        assert_eq!(first.next, Some(Pid::new(1, 4)));
        let second = table.list(&ListQuery {
            limit: 2,
            before: first.next,
            ..ListQuery::default()
        });
        assert_eq!(seqs(&second), [3, 2]);
        let last = table.list(&ListQuery {
            limit: 2,
            before: second.next,
            ..ListQuery::default()
        });
        assert_eq!((seqs(&last), last.next), (vec![1], None));

        let odd = table.list(&ListQuery {
            limit: 10,
            name: Some("odd".into()),
            ..ListQuery::default()
        });
        assert_eq!(seqs(&odd), [5, 3, 1]);
        let exited = ListQuery {
            limit: 10,
            status: Some(Status::Exited),
            ..ListQuery::default()
        };
        assert_eq!(seqs(&table.list(&exited)), [4]);
    }

    #[test]
    fn an_ended_task_ignores_later_events() {
        let table = MemoryTable::new(8);
        let pid = Pid::new(1, 1);
        table.insert(TaskRecord::spawned(
            pid,
            "t".into(),
            0,
            "w".into(),
            "v".into(),
        ));
        let at = SystemTime::now();
        table.apply(
            pid,
            TaskEvent::Ended {
                at,
                fuel: 5,
                end: end(),
            },
        );
        table.apply(
            pid,
            TaskEvent::Started {
                at,
                steps: 9,
                fuel: 1,
            },
        );
        let record = table.get(pid).expect("record kept");
        assert_eq!(record.status, Status::Exited);
        assert_eq!(record.steps, 0);
    }
}
