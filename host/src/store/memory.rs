//! The in-memory store: every live task and the newest `max_history` ended ones, in this
//! process only. A restart forgets them all, worker versions uploaded included.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::{
    Change, Cursor, Done, ListQuery, Page, Remembered, ScheduleChange, Store, StoreError,
    StoreStats, StoredSchedule,
};
use crate::model::{Pid, StoredCheckpoint, TaskEvent, TaskLogs, TaskRecord, TaskSpec};

/// Shards spread the scheduler threads' updates over several locks.
const SHARDS: usize = 16;

/// Places in the listing order a listing copies out at a time.
const LIST_CHUNK: usize = 512;

/// A task as the memory store holds it: its record, and its log lines beside it.
#[derive(Debug)]
struct Entry {
    record: TaskRecord,
    /// What it was submitted with, for a retry; without its module digest, which a retry
    /// does not use.
    spec: TaskSpec,
    logs: TaskLogs,
    /// Its checkpoint row, if it has one.
    checkpoint: Option<Box<StoredCheckpoint>>,
}

/// One shard: its tasks by pid, and the same tasks in listing order, under one lock.
#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Pid, Entry>,
    order: BTreeSet<Cursor>,
}

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    /// Tasks spread by pid, so that accepting, updating and evicting a task takes only its
    /// own shard's lock; a listing merges the shards' orders.
    shards: [Mutex<Shard>; SHARDS],
    /// Ended tasks with their end, oldest end first: the next to evict.
    ended: Mutex<VecDeque<(SystemTime, Cursor)>>,
    max_history: usize,
    /// Idempotency keys, until they are pruned.
    keys: Mutex<HashMap<String, Remembered>>,
    /// Batches written, each in place.
    batches: AtomicU64,
    /// The schedules, by name.
    schedules: Mutex<std::collections::BTreeMap<String, StoredSchedule>>,
    /// The workers paused.
    paused: Mutex<std::collections::BTreeSet<String>>,
    /// The workers' limits set over the API, as JSON.
    limits: Mutex<std::collections::BTreeMap<String, String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// An empty store that keeps at most `max_history` ended tasks.
    pub fn new(max_history: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            ended: Mutex::new(VecDeque::new()),
            max_history,
            keys: Mutex::new(HashMap::new()),
            batches: AtomicU64::new(0),
            schedules: Mutex::new(std::collections::BTreeMap::new()),
            paused: Mutex::new(std::collections::BTreeSet::new()),
            limits: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    fn commit(&self, batch: Vec<Change>) {
        for change in batch {
            match change {
                Change::Accepted {
                    record,
                    mut spec,
                    key,
                    ..
                } => {
                    spec.module_sha256 = String::new();
                    if let Some(key) = key {
                        let remembered = Remembered {
                            body_sha256: key.body_sha256,
                            pid: record.pid,
                            at: record.spawned_at,
                        };
                        lock(&self.keys).insert(key.key, remembered);
                    }
                    self.accept(*record, spec);
                }
                Change::Event(pid, event) => self.apply(pid, event),
                // History is bounded by count as tasks end; by age here.
                Change::Prune {
                    ended_before,
                    keys_before,
                    ..
                } => {
                    lock(&self.keys).retain(|_, remembered| remembered.at >= keys_before);
                    self.forget_ended_before(ended_before);
                }
                // Nothing outlives the process here, so there is nothing to keep them for; and
                // no other host to forward to.
                Change::Schedule(change) => self.schedule(change),
                Change::WorkerPaused { name, paused } => {
                    let mut set = lock(&self.paused);
                    if paused {
                        set.insert(name);
                    } else {
                        set.remove(&name);
                    }
                }
                Change::WorkerLimits { name, limits } => {
                    let mut map = lock(&self.limits);
                    match limits {
                        Some(limits) => map.insert(name, limits.to_json()),
                        None => map.remove(&name),
                    };
                }
                Change::Checkpoint(row) => {
                    if let Some(entry) = self.shard(row.pid).entries.get_mut(&row.pid) {
                        entry.checkpoint = Some(row);
                    }
                }
                Change::Module { .. } | Change::Worker { .. } | Change::Forward { .. } => {}
            }
        }
    }

    fn schedule(&self, change: ScheduleChange) {
        let mut schedules = lock(&self.schedules);
        match change {
            ScheduleChange::Put(schedule) => {
                let kept = schedules
                    .get(&schedule.name)
                    .map(|old| (old.last_tick, old.last_pid));
                let mut schedule = *schedule;
                if let Some((last_tick, last_pid)) = kept {
                    schedule.last_tick = schedule.last_tick.max(last_tick);
                    schedule.last_pid = last_pid;
                }
                schedules.insert(schedule.name.clone(), schedule);
            }
            ScheduleChange::Delete(name) => {
                schedules.remove(&name);
            }
            ScheduleChange::Pause { name, paused, from } => {
                if let Some(schedule) = schedules.get_mut(&name) {
                    schedule.paused = paused;
                    schedule.last_tick = schedule.last_tick.max(from);
                }
            }
            ScheduleChange::Ticked { name, tick, pid } => {
                if let Some(schedule) = schedules.get_mut(&name)
                    && schedule
                        .last_tick
                        .is_none_or(|last| last < tick || (last == tick && pid.is_some()))
                {
                    schedule.last_tick = Some(tick);
                    schedule.last_pid = pid.or(schedule.last_pid);
                }
            }
        }
    }

    fn shard(&self, pid: Pid) -> MutexGuard<'_, Shard> {
        // The sequence number alone spreads consecutive tasks evenly.
        lock(&self.shards[(pid.seq() % SHARDS as u64) as usize])
    }

    fn accept(&self, record: TaskRecord, spec: TaskSpec) {
        let (pid, cursor) = (record.pid, Cursor::of(&record));
        let entry = Entry {
            record,
            spec,
            logs: TaskLogs::default(),
            checkpoint: None,
        };
        let mut shard = self.shard(pid);
        shard.entries.insert(pid, entry);
        shard.order.insert(cursor);
    }

    fn apply(&self, pid: Pid, event: TaskEvent) {
        let ended = {
            let mut shard = self.shard(pid);
            let Some(entry) = shard.entries.get_mut(&pid) else {
                return;
            };
            if entry.record.status.is_terminal() {
                return;
            }
            match event {
                TaskEvent::Logs {
                    mut lines,
                    dropped_bytes,
                } => {
                    entry.logs.lines.append(&mut lines);
                    entry.logs.dropped_bytes = dropped_bytes;
                    entry.record.logs_dropped_bytes = dropped_bytes;
                }
                event => {
                    entry.record.apply(&event);
                }
            }
            entry
                .record
                .ended_at
                .filter(|_| entry.record.status.is_terminal())
                .map(|at| (at, Cursor::of(&entry.record)))
        };
        if let Some((at, cursor)) = ended {
            self.ended(at, cursor);
        }
    }

    /// Keeps the task at `cursor`, ended `at`, and forgets the oldest ended one past the
    /// history.
    fn ended(&self, at: SystemTime, cursor: Cursor) {
        let evicted = {
            let mut ended = lock(&self.ended);
            ended.push_back((at, cursor));
            (ended.len() > self.max_history)
                .then(|| ended.pop_front())
                .flatten()
        };
        if let Some((_, old)) = evicted {
            self.forget(old);
        }
    }

    /// Forgets the tasks that ended before `before`.
    fn forget_ended_before(&self, before: SystemTime) {
        loop {
            let old = {
                let mut ended = lock(&self.ended);
                match ended.front() {
                    Some(&(at, _)) if at < before => ended.pop_front(),
                    _ => None,
                }
            };
            match old {
                Some((_, old)) => self.forget(old),
                None => return,
            }
        }
    }

    fn forget(&self, old: Cursor) {
        let mut shard = self.shard(old.pid);
        shard.entries.remove(&old.pid);
        shard.order.remove(&old);
    }
}

impl Store for MemoryStore {
    fn submit(&self, batch: Vec<Change>, done: Option<Done>) {
        self.commit(batch);
        self.batches.fetch_add(1, Ordering::Relaxed);
        if let Some(done) = done {
            done(Ok(()));
        }
    }

    fn stats(&self) -> StoreStats {
        let batches = self.batches.load(Ordering::Relaxed);
        StoreStats {
            commits: batches,
            batches,
            ..StoreStats::default()
        }
    }

    fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        Ok(lock(&self.schedules).values().cloned().collect())
    }

    fn paused_workers(&self) -> Result<Vec<String>, StoreError> {
        Ok(lock(&self.paused).iter().cloned().collect())
    }

    fn worker_limits(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(lock(&self.limits)
            .iter()
            .map(|(name, limits)| (name.clone(), limits.clone()))
            .collect())
    }

    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        Ok(lock(&self.keys).get(key).cloned())
    }

    fn checkpoint(&self, pid: Pid) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self
            .shard(pid)
            .entries
            .get(&pid)
            .and_then(|entry| entry.checkpoint.as_deref().cloned()))
    }

    fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self
            .shard(pid)
            .entries
            .get(&pid)
            .map(|entry| entry.record.clone()))
    }

    fn submission(&self, pid: Pid) -> Result<Option<(TaskRecord, TaskSpec)>, StoreError> {
        Ok(self
            .shard(pid)
            .entries
            .get(&pid)
            .map(|entry| (entry.record.clone(), entry.spec.clone())))
    }

    fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        Ok(self
            .shard(pid)
            .entries
            .get(&pid)
            .map(|entry| entry.logs.clone()))
    }

    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut tasks = Vec::new();
        let mut more = false;
        let mut below = query.before;
        // The next chunk of the listing order is among each shard's next chunk: copy those
        // out a shard at a time, merge them, then read the records.
        'scan: loop {
            let mut chunk: Vec<Cursor> = Vec::new();
            for shard in &self.shards {
                let shard = lock(shard);
                let older = match below {
                    Some(below) => shard.order.range(..below),
                    None => shard.order.range(..),
                };
                chunk.extend(older.rev().take(LIST_CHUNK));
            }
            chunk.sort_unstable_by(|a, b| b.cmp(a));
            chunk.truncate(LIST_CHUNK);
            let Some(&last) = chunk.last() else {
                break;
            };
            for cursor in chunk {
                let shard = self.shard(cursor.pid);
                let Some(entry) = shard.entries.get(&cursor.pid) else {
                    continue;
                };
                if !query.wants(&entry.record) {
                    continue;
                }
                if tasks.len() == query.limit {
                    more = true;
                    break 'scan;
                }
                tasks.push(entry.record.clone());
            }
            below = Some(last);
        }
        let next = if more {
            tasks.last().map(Cursor::of)
        } else {
            None
        };
        Ok(Page { tasks, next })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::{OnHostLoss, Status, TaskEnd, TaskSpec};

    fn record(seq: u64, name: &str) -> TaskRecord {
        let mut record =
            TaskRecord::spawned(Pid::new(1, seq), name.into(), 0, "w".into(), "v".into());
        // Accepted a second apart, so that time order is unambiguous.
        record.spawned_at = SystemTime::UNIX_EPOCH + Duration::from_secs(seq);
        record
    }

    fn accepted(record: TaskRecord) -> Change {
        let spec = TaskSpec {
            module_sha256: String::new(),
            payload: None,
            deadline_secs: 0,
            max_attempts: 1,
            on_host_loss: OnHostLoss::Restart,
            ready_at: None,
            priority: crate::model::DEFAULT_PRIORITY,
        };
        Change::Accepted {
            record: Box::new(record),
            spec,
            key: None,
            shared: false,
            limited: false,
        }
    }

    fn end(store: &MemoryStore, pid: Pid) {
        let event = TaskEvent::Ended {
            at: SystemTime::now(),
            fuel: 1,
            end: TaskEnd::exited(0),
            attempt: 1,
        };
        store.commit(vec![Change::Event(pid, event)]);
    }

    #[test]
    fn history_keeps_live_tasks_and_the_newest_ended_ones() {
        let store = MemoryStore::new(2);
        let pids: Vec<Pid> = (0..4).map(|seq| Pid::new(1, seq)).collect();
        for seq in 0..4 {
            store.commit(vec![accepted(record(seq, "t"))]);
        }
        for &pid in &pids[..3] {
            end(&store, pid);
        }
        let status = |pid| store.get(pid).expect("get").map(|r| r.status);
        assert_eq!(status(pids[0]), None, "oldest ended task evicted");
        assert_eq!(status(pids[1]), Some(Status::Exited));
        assert_eq!(status(pids[2]), Some(Status::Exited));
        assert_eq!(status(pids[3]), Some(Status::Spawned));
        let all = store
            .list(&ListQuery {
                limit: 10,
                ..ListQuery::default()
            })
            .expect("list");
        assert_eq!(all.tasks.len(), 3, "an evicted task is not listed");
    }

    #[test]
    fn lists_newest_first_filtered_a_page_at_a_time() {
        let store = MemoryStore::new(100);
        // Accepted in the order 5, 4, 3, 2, 1 although their pids count up: time decides.
        for seq in 1..=5 {
            let name = if seq % 2 == 0 { "even" } else { "odd" };
            let mut record = record(seq, name);
            record.spawned_at = SystemTime::UNIX_EPOCH + Duration::from_secs(10 - seq);
            store.commit(vec![accepted(record)]);
        }
        end(&store, Pid::new(1, 4));
        let seqs = |page: &Page| page.tasks.iter().map(|r| r.pid.seq()).collect::<Vec<_>>();
        let list = |query: ListQuery| store.list(&query).expect("list");

        let first = list(ListQuery {
            limit: 2,
            ..ListQuery::default()
        });
        assert_eq!(seqs(&first), [1, 2]);
        let second = list(ListQuery {
            limit: 2,
            before: first.next,
            ..ListQuery::default()
        });
        assert_eq!(seqs(&second), [3, 4]);
        let last = list(ListQuery {
            limit: 2,
            before: second.next,
            ..ListQuery::default()
        });
        assert_eq!((seqs(&last), last.next), (vec![5], None));

        let odd = list(ListQuery {
            limit: 10,
            name: Some("odd".into()),
            ..ListQuery::default()
        });
        assert_eq!(seqs(&odd), [1, 3, 5]);
        let exited = list(ListQuery {
            limit: 10,
            status: Some(Status::Exited),
            ..ListQuery::default()
        });
        assert_eq!(seqs(&exited), [4]);
    }

    #[test]
    fn lists_a_tasks_children_with_their_parent() {
        let store = MemoryStore::new(100);
        let parent = Pid::new(1, 1);
        store.commit(vec![accepted(record(1, "parent"))]);
        for seq in 2..=5 {
            let mut child = record(seq, "child");
            child.parent = (seq % 2 == 0).then_some(parent);
            store.commit(vec![accepted(child)]);
        }
        let children = store
            .list(&ListQuery {
                limit: 10,
                parent: Some(parent),
                ..ListQuery::default()
            })
            .expect("list");
        let found: Vec<_> = children
            .tasks
            .iter()
            .map(|r| (r.pid.seq(), r.parent))
            .collect();
        assert_eq!(found, [(4, Some(parent)), (2, Some(parent))]);
        assert_eq!(
            store.get(parent).expect("get").map(|r| r.parent),
            Some(None)
        );
        let none = store
            .list(&ListQuery {
                limit: 10,
                parent: Some(Pid::new(1, 9)),
                ..ListQuery::default()
            })
            .expect("list");
        assert!(
            none.tasks.is_empty(),
            "a task with no children has none listed"
        );
    }

    #[test]
    fn logs_are_kept_apart_and_stop_at_the_end() {
        let store = MemoryStore::new(8);
        let pid = Pid::new(1, 1);
        store.commit(vec![accepted(record(1, "t"))]);
        let line = crate::model::LogLine {
            at: SystemTime::now(),
            source: crate::model::LogSource::Info,
            message: "hello".into(),
        };
        let logs = |lines: Vec<crate::model::LogLine>| TaskEvent::Logs {
            lines,
            dropped_bytes: 3,
        };
        store.commit(vec![Change::Event(pid, logs(vec![line.clone()]))]);
        end(&store, pid);
        store.commit(vec![Change::Event(pid, logs(vec![line]))]);
        let kept = store.logs(pid).expect("logs").expect("known");
        assert_eq!(kept.lines.len(), 1, "nothing is added after the end");
        assert_eq!(kept.dropped_bytes, 3);
        assert_eq!(
            store.get(pid).expect("get").map(|r| r.logs_dropped_bytes),
            Some(3)
        );
    }
}
