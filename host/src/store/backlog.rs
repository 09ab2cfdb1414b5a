//! What waits for a durable store's writer: the batches submitted, in order, and the progress
//! of running tasks, folded to the latest per task. Both durable stores keep one, with the same
//! bound.
//!
//! The bound counts bytes (a task's log lines, its error, its payload are the cost), set by
//! `--store-backlog`. A running task's log lines are the one change a task makes at a rate of
//! its own choosing, and the one change documented as sheddable: past half the bound, a batch
//! that holds only log lines is not kept (its submitter is told it is done, its events are
//! still published); past the whole bound, the log lines of every batch are dropped, and what
//! else the batch holds is kept. Every other change (an acceptance, a start, an end, a
//! restart, a forward) is always kept: there is at most a few of them per live task, so the
//! backlog past its bound is bounded by the number of live tasks, whatever the store does.
//! Batches that could not be written go back to the front, in order, under the same bound: a
//! store that fails for minutes holds no more than one that keeps up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Change, Done, tell};
use crate::model::{Pid, TaskEvent};

/// Bytes a change costs beyond its text: its keys, times and the allocations that hold it.
const CHANGE_OVERHEAD_BYTES: usize = 96;

/// A batch waiting for the writer.
pub(super) struct Pending {
    pub batch: Vec<Change>,
    pub done: Option<Done>,
    /// Who submitted it, for a store that fences writes (a cluster host's incarnation); 0
    /// where nothing is fenced.
    pub node: i32,
    /// What it costs the backlog, in bytes.
    bytes: usize,
}

impl Pending {
    pub(super) fn new(batch: Vec<Change>, done: Option<Done>, node: i32) -> Self {
        let bytes = batch.iter().map(cost_bytes).sum();
        Self {
            batch,
            done,
            node,
            bytes,
        }
    }

    /// What it weighs in a chunk: a change each, and a log line each.
    pub(super) fn weight(&self) -> usize {
        self.batch.iter().map(weight).sum::<usize>().max(1)
    }

    /// Drops its log lines: how many.
    fn strip_log_lines(&mut self) -> u64 {
        let mut lines = 0;
        self.batch.retain(|change| match change {
            Change::Event(_, TaskEvent::Logs { lines: kept, .. }) => {
                lines += kept.len() as u64;
                false
            }
            _ => true,
        });
        self.bytes = self.batch.iter().map(cost_bytes).sum();
        lines
    }

    /// Tells its submitter how its write went.
    pub(super) fn finish(self, result: Result<(), super::StoreError>) {
        tell(self.done, result);
    }
}

/// What the writer takes at once: batches in order, and the progress folded since.
#[derive(Default)]
pub(super) struct Chunk {
    pub pendings: Vec<Pending>,
    /// The latest progress (step, fuel) of running tasks.
    pub progress: HashMap<Pid, (u32, u64)>,
}

impl Chunk {
    /// Whether it holds nothing at all.
    pub(super) fn is_empty(&self) -> bool {
        self.pendings.is_empty() && self.progress.is_empty()
    }

    /// Every change, with the index of the batch it came in.
    pub(super) fn changes(&self) -> impl Iterator<Item = (usize, &Change)> {
        self.pendings
            .iter()
            .enumerate()
            .flat_map(|(index, pending)| pending.batch.iter().map(move |change| (index, change)))
    }

    /// This chunk followed by `later`.
    pub(super) fn then(mut self, later: Chunk) -> Chunk {
        self.pendings.extend(later.pendings);
        for (pid, progress) in later.progress {
            self.progress.insert(pid, progress);
        }
        self
    }
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    progress: HashMap<Pid, (u32, u64)>,
    bytes: usize,
    changes: usize,
    closed: bool,
    /// While the writer waits: how many batches (or tasks' progress) must wait before it is
    /// woken. A submitter
    /// wakes it only then, so that a writer gathering a commit is not woken by each batch,
    /// and a busy one costs a submitter no system call.
    waiting: Option<usize>,
}

impl State {
    /// Whether what waits now is what the writer waits for.
    fn wakes(&self) -> bool {
        self.waiting
            .is_some_and(|enough| self.pending.len() + self.progress.len() >= enough)
    }

    fn push_back(&mut self, pending: Pending) {
        self.bytes += pending.bytes;
        self.changes += pending.batch.len();
        self.pending.push_back(pending);
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let pending = self.pending.pop_front()?;
        self.bytes -= pending.bytes;
        self.changes -= pending.batch.len();
        Some(pending)
    }
}

/// What [`Backlog::take_within`] found.
pub(super) enum Taken {
    Chunk(Chunk),
    /// Nothing came within the wait.
    Idle,
    /// The backlog is closed and empty.
    Closed,
}

/// The backlog of one store's writer.
pub(super) struct Backlog {
    state: Mutex<State>,
    wake: Condvar,
    /// `--store-backlog`, in bytes.
    limit_bytes: usize,
    /// Log lines not written to keep the backlog within its bound.
    shed: AtomicU64,
}

/// How much waits in a backlog now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BacklogSize {
    pub changes: u64,
    pub bytes: u64,
}

impl Backlog {
    pub(super) fn new(limit_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            limit_bytes,
            shed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `batch` for the writer, submitted by `node`; keeps the bound (see the module's
    /// documentation).
    pub(super) fn submit(&self, mut batch: Vec<Change>, done: Option<Done>, node: i32) {
        if batch.is_empty() && done.is_none() {
            return;
        }
        let mut state = self.lock();
        // A step's progress, alone or with the lines the step logged, folds into the latest
        // per task; the lines go on alone, and so may be shed. (A step's progress kept as a
        // change, beside its lines, was never shed: 2,000 sleeping tasks through a 180-s
        // outage of the store piled up 360,000 of them, twice the backlog's bound.)
        if done.is_none()
            && batch.iter().any(is_progress)
            && batch
                .iter()
                .all(|change| is_progress(change) || is_log_lines(change))
        {
            batch.retain(|change| match change {
                Change::Event(pid, TaskEvent::Progress { step, fuel, .. }) => {
                    state.progress.insert(*pid, (*step, *fuel));
                    false
                }
                _ => true,
            });
            if batch.is_empty() {
                let wake = state.wakes();
                drop(state);
                if wake {
                    self.wake.notify_one();
                }
                return;
            }
        }
        let only_lines = !batch.is_empty() && batch.iter().all(is_log_lines);
        let bytes: usize = batch.iter().map(cost_bytes).sum();
        if only_lines && state.bytes + bytes > self.limit_bytes / 2 {
            drop(state);
            self.count_shed(batch.iter().map(log_lines).sum());
            tell(done, Ok(()));
            return;
        }
        if state.bytes + bytes > self.limit_bytes {
            let lines = batch.iter().map(log_lines).sum();
            batch.retain(|change| !is_log_lines(change));
            self.count_shed(lines);
        }
        state.push_back(Pending::new(batch, done, node));
        let wake = state.wakes();
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    fn count_shed(&self, lines: u64) {
        if lines == 0 {
            return;
        }
        if self.shed.fetch_add(lines, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "the task store's writer has fallen behind: log lines of running tasks are \
                 shed (not stored, still streamed) until it catches up; see \
                 http_spawn_store_log_lines_shed_total"
            );
        }
    }

    /// Waits for something to write, then takes the oldest batches up to `max_weight` (one at
    /// least) and every folded progress; none once the backlog is closed and empty.
    pub(super) fn take(&self, max_weight: usize) -> Option<Chunk> {
        match self.take_within(max_weight, None) {
            Taken::Chunk(chunk) => Some(chunk),
            Taken::Idle | Taken::Closed => None,
        }
    }

    /// Waits until `until`, or until at least `enough` batches wait, or the backlog closes:
    /// for a writer that spaces its commits out.
    pub(super) fn gather(&self, until: Instant, enough: usize) {
        let mut state = self.lock();
        while state.pending.len() + state.progress.len() < enough && !state.closed {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state.waiting = Some(enough);
            state = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        state.waiting = None;
    }

    /// As [`Backlog::take`], waiting at most `wait` (for ever when none) for something to
    /// take.
    pub(super) fn take_within(&self, max_weight: usize, wait: Option<Duration>) -> Taken {
        let deadline = wait.map(|wait| Instant::now() + wait);
        let mut state = self.lock();
        while state.pending.is_empty() && state.progress.is_empty() && !state.closed {
            state.waiting = Some(1);
            state = match deadline {
                None => self
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        state.waiting = None;
                        return Taken::Idle;
                    }
                    self.wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
        state.waiting = None;
        if state.pending.is_empty() && state.progress.is_empty() {
            return Taken::Closed;
        }
        let mut chunk = Chunk {
            pendings: Vec::new(),
            progress: std::mem::take(&mut state.progress),
        };
        let mut weight = 0;
        while let Some(next) = state.pending.front() {
            let more = next.weight();
            if !chunk.pendings.is_empty() && weight + more > max_weight {
                break;
            }
            weight += more;
            if let Some(pending) = state.pop_front() {
                chunk.pendings.push(pending);
            }
        }
        Taken::Chunk(chunk)
    }

    /// Puts back, before everything waiting, what could not be written, in its order; keeps
    /// the bound by dropping log lines, the oldest first.
    pub(super) fn put_back(&self, chunk: Chunk) {
        let mut state = self.lock();
        for (pid, progress) in chunk.progress {
            // What was folded since is newer.
            state.progress.entry(pid).or_insert(progress);
        }
        for pending in chunk.pendings.into_iter().rev() {
            state.bytes += pending.bytes;
            state.changes += pending.batch.len();
            state.pending.push_front(pending);
        }
        let mut shed = 0;
        if state.bytes > self.limit_bytes {
            let State { pending, bytes, .. } = &mut *state;
            for waiting in pending.iter_mut() {
                if *bytes <= self.limit_bytes {
                    break;
                }
                let before = waiting.bytes;
                shed += waiting.strip_log_lines();
                *bytes -= before - waiting.bytes;
            }
            state.changes = state
                .pending
                .iter()
                .map(|pending| pending.batch.len())
                .sum();
        }
        drop(state);
        self.count_shed(shed);
    }

    /// Takes out every waiting batch that `unwanted` picks, in order.
    pub(super) fn remove_where(&self, unwanted: impl Fn(&Pending) -> bool) -> Vec<Pending> {
        let mut state = self.lock();
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(state.pending.len());
        while let Some(pending) = state.pop_front() {
            if unwanted(&pending) {
                removed.push(pending);
            } else {
                kept.push_back(pending);
            }
        }
        for pending in kept {
            state.push_back(pending);
        }
        removed
    }

    /// Asks the writer to stop once what is pending is written (or found unwritable).
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Whether the store is closing.
    pub(super) fn closed(&self) -> bool {
        self.lock().closed
    }

    /// How much waits now.
    pub(super) fn size(&self) -> BacklogSize {
        let state = self.lock();
        BacklogSize {
            changes: (state.changes + state.progress.len()) as u64,
            bytes: (state.bytes + state.progress.len() * CHANGE_OVERHEAD_BYTES) as u64,
        }
    }

    /// Log lines shed so far.
    pub(super) fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

fn is_progress(change: &Change) -> bool {
    matches!(change, Change::Event(_, TaskEvent::Progress { .. }))
}

fn is_log_lines(change: &Change) -> bool {
    matches!(change, Change::Event(_, TaskEvent::Logs { .. }))
}

fn log_lines(change: &Change) -> u64 {
    match change {
        Change::Event(_, TaskEvent::Logs { lines, .. }) => lines.len() as u64,
        _ => 0,
    }
}

/// A change's weight in a chunk: one, or one per log line.
fn weight(change: &Change) -> usize {
    match change {
        Change::Event(_, TaskEvent::Logs { lines, .. }) => lines.len().max(1),
        _ => 1,
    }
}

/// What a change costs the backlog, in bytes: its text and a fixed overhead.
pub(super) fn cost_bytes(change: &Change) -> usize {
    let text = match change {
        Change::Accepted { record, spec, .. } => {
            record.name.len() + spec.payload.as_ref().map_or(0, String::len)
        }
        Change::Event(_, TaskEvent::Logs { lines, .. }) => lines
            .iter()
            .map(|line| line.message.len() + CHANGE_OVERHEAD_BYTES)
            .sum(),
        Change::Event(_, TaskEvent::Ended { end, .. } | TaskEvent::Restarting { end, .. }) => {
            end.error.as_ref().map_or(0, String::len)
        }
        Change::Forward {
            what: super::Forward::Message { body, .. },
            ..
        } => body.len(),
        Change::Forward {
            what: super::Forward::Exit { notice, .. },
            ..
        } => notice.error.as_ref().map_or(0, String::len),
        Change::Module { bytes, .. } => bytes.len(),
        Change::Checkpoint(row) => row
            .taken
            .as_ref()
            .and_then(|taken| taken.image.as_ref())
            .map_or(0, |image| image.len()),
        Change::Schedule(super::ScheduleChange::Put(schedule)) => schedule.definition.len(),
        Change::Event(..)
        | Change::Prune { .. }
        | Change::Forward { .. }
        | Change::Worker { .. }
        | Change::WorkerPaused { .. }
        | Change::WorkerLimits { .. }
        | Change::Schedule(_) => 0,
    };
    text + CHANGE_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::{LogLine, LogSource, TaskEnd};

    fn lines(pid: Pid, count: usize, bytes: usize) -> Change {
        Change::Event(
            pid,
            TaskEvent::Logs {
                lines: (0..count)
                    .map(|_| LogLine {
                        at: SystemTime::now(),
                        source: LogSource::Info,
                        message: "x".repeat(bytes),
                    })
                    .collect(),
                dropped_bytes: 0,
            },
        )
    }

    fn end(pid: Pid) -> Change {
        Change::Event(
            pid,
            TaskEvent::Ended {
                at: SystemTime::now(),
                fuel: 0,
                end: TaskEnd::exited(0),
                attempt: 1,
            },
        )
    }

    /// Past half its bound a backlog keeps no batch of log lines alone, past its bound no log
    /// line at all; an end is always kept, its lines dropped.
    #[test]
    fn a_backlog_keeps_its_bound_by_shedding_log_lines_only() {
        let backlog = Backlog::new(64 * 1024);
        let pid = Pid::new(1, 1);
        for _ in 0..1000 {
            backlog.submit(vec![lines(pid, 1, 100)], None, 0);
        }
        let size = backlog.size();
        assert!(size.bytes <= 32 * 1024 + 300, "{size:?}");
        assert!(backlog.shed() > 0);
        // Filled to the bound with what is never shed.
        for seq in 0..1000 {
            backlog.submit(vec![lines(Pid::new(1, seq), 2, 100), end(pid)], None, 0);
        }
        let chunk = backlog.take(usize::MAX).expect("a chunk");
        let ends = chunk
            .changes()
            .filter(|(_, change)| matches!(change, Change::Event(_, TaskEvent::Ended { .. })))
            .count();
        assert_eq!(ends, 1000, "every end is kept");
        // Put back after a failed commit, the whole lot is brought within the bound.
        let shed = backlog.shed();
        backlog.put_back(chunk);
        assert!(backlog.size().bytes <= 1000 * 200 + 64 * 1024);
        assert!(backlog.shed() >= shed);
    }

    /// Progress is folded to the latest per task, and a chunk takes at most its weight.
    #[test]
    fn progress_is_folded_and_chunks_are_bounded() {
        let backlog = Backlog::new(1 << 30);
        let pid = Pid::new(1, 7);
        for step in 0..100 {
            let progress = TaskEvent::Progress {
                step,
                steps: 100,
                fuel: u64::from(step),
            };
            backlog.submit(vec![Change::Event(pid, progress)], None, 0);
        }
        for seq in 0..10 {
            backlog.submit(vec![end(Pid::new(1, seq))], None, 0);
        }
        assert_eq!(backlog.size().changes, 11);
        let chunk = backlog.take(4).expect("a chunk");
        assert_eq!(chunk.pendings.len(), 4);
        assert_eq!(chunk.progress.get(&pid), Some(&(99, 99)));
        let rest = backlog.take(100).expect("the rest");
        assert_eq!(rest.pendings.len(), 6);
        assert!(rest.progress.is_empty());
    }

    /// A step's progress submitted with the lines the step logged folds like a lone one, and
    /// its lines are shed like any others once the backlog is past its bound: sleeping tasks
    /// stepping through an outage of the store keep the backlog bounded.
    #[test]
    fn a_steps_progress_with_its_lines_folds_and_its_lines_may_be_shed() {
        let bound = 64 * 1024;
        let backlog = Backlog::new(bound);
        for step in 0..2_000u32 {
            for seq in 0..20 {
                let pid = Pid::new(1, seq);
                let progress = TaskEvent::Progress {
                    step,
                    steps: 10_000,
                    fuel: u64::from(step),
                };
                let lines = TaskEvent::Logs {
                    lines: vec![crate::model::LogLine {
                        at: std::time::SystemTime::now(),
                        source: crate::model::LogSource::Stdout,
                        message: format!("step {step}"),
                    }],
                    dropped_bytes: 0,
                };
                backlog.submit(
                    vec![Change::Event(pid, progress), Change::Event(pid, lines)],
                    None,
                    0,
                );
            }
        }
        let size = backlog.size();
        assert!(size.bytes <= bound as u64, "{} bytes waiting", size.bytes);
        assert!(backlog.shed() > 0, "lines past the bound are shed");
        let chunk = backlog.take(usize::MAX).expect("a chunk");
        assert_eq!(chunk.progress.len(), 20);
        assert_eq!(chunk.progress.get(&Pid::new(1, 3)), Some(&(1_999, 1_999)));
        assert!(chunk.changes().all(|(_, change)| is_log_lines(change)));
        // A step's progress with anything else (here its end) stays in order with it.
        let pid = Pid::new(2, 1);
        let progress = TaskEvent::Progress {
            step: 3,
            steps: 3,
            fuel: 9,
        };
        let Change::Event(_, ended) = end(pid) else {
            unreachable!("an end");
        };
        backlog.submit(
            vec![Change::Event(pid, progress), Change::Event(pid, ended)],
            None,
            0,
        );
        let chunk = backlog.take(usize::MAX).expect("the end");
        assert!(chunk.progress.is_empty());
        assert_eq!(chunk.changes().count(), 2);
    }
}
