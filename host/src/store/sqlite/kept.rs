//! What the SQLite store keeps in memory of a running task before it writes it: the task's
//! progress, and its newest log lines.
//!
//! - **Progress** is written with the task's next change that matters (its end), not at every
//!   step: a task run again after a crash starts from the beginning anyway, and a step a second
//!   per task would otherwise be most of what the store writes.
//! - **Log lines** are written with the task's end or restart, or once they are
//!   `--store-log-flush` old (5 s by default), or once a task's kept lines pass
//!   [`TASK_BYTES`]; all of them together are bounded by [`TOTAL_BYTES`], past which lines are
//!   written as they come. Most tasks live a few seconds and log a line a step: their whole
//!   log then goes to the journal with their end, and into their row with it, instead of a
//!   row per line in a commit each. A host that crashes loses the lines of running tasks not
//!   yet written (at most the flush interval's), as it loses their progress: those tasks run
//!   again from the start.
//!
//! A task's checkpoint (issue #26) is written with its kept lines and progress before it, so
//! that a task resumed from it keeps the lines of the steps it does not run again.
//!
//! Reads show what is kept here beside what is written ([`Kept::show`],
//! [`Kept::lines`]), so that the API sees a running task's progress and lines at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::super::Change;
use crate::model::{LogLine, Pid, Status, TaskEvent, TaskRecord};

/// A task's kept lines past which they are written at once.
const TASK_BYTES: usize = 16 << 10;

/// All tasks' kept lines past which new lines are written as they come.
const TOTAL_BYTES: usize = 16 << 20;

/// Bytes a kept line costs beyond its message.
const LINE_OVERHEAD: usize = 48;

#[derive(Debug, Default)]
struct Held {
    progress: Option<(u32, u64)>,
    lines: Vec<LogLine>,
    /// The cap's count of dropped bytes, as the newest kept lines told it.
    dropped_bytes: Option<u64>,
    bytes: usize,
    /// When the oldest kept line came.
    since: Option<Instant>,
}

impl Held {
    /// Its lines as a change to write, if it keeps any.
    fn take_lines(&mut self, pid: Pid, total: &mut usize) -> Option<Change> {
        let dropped_bytes = self.dropped_bytes.take()?;
        *total -= self.bytes;
        self.bytes = 0;
        self.since = None;
        Some(Change::Event(
            pid,
            TaskEvent::Logs {
                lines: std::mem::take(&mut self.lines),
                dropped_bytes,
            },
        ))
    }
}

#[derive(Debug, Default)]
struct State {
    tasks: HashMap<Pid, Held>,
    /// When each task's kept lines began, oldest first: what the flusher looks at. An entry
    /// whose lines were written since is passed over.
    order: VecDeque<(Instant, Pid)>,
    /// What the kept lines cost, in bytes.
    bytes: usize,
}

/// What the store keeps of its running tasks.
#[derive(Debug)]
pub(super) struct Kept {
    state: Mutex<State>,
    /// `--store-log-flush`: zero writes every line with the next commit.
    flush_after: Duration,
}

impl Kept {
    pub(super) fn new(flush_after: Duration) -> Self {
        Self {
            state: Mutex::default(),
            flush_after,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `batch`'s progress and log lines here, and puts back into the batch what is due:
    /// a task's lines and last progress just before its end, its lines before a restart, lines
    /// kept too long or too many.
    pub(super) fn take_from(&self, batch: &mut Vec<Change>) {
        let touches = batch.iter().any(|change| {
            matches!(
                change,
                Change::Event(
                    _,
                    TaskEvent::Progress { .. }
                        | TaskEvent::Logs { .. }
                        | TaskEvent::Ended { .. }
                        | TaskEvent::Restarting { .. }
                ) | Change::Checkpoint(_)
            )
        });
        if !touches {
            return;
        }
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut kept = Vec::with_capacity(batch.len() + 1);
        for change in batch.drain(..) {
            match change {
                Change::Event(pid, TaskEvent::Progress { step, fuel, .. }) => {
                    state.tasks.entry(pid).or_default().progress = Some((step, fuel));
                }
                Change::Event(
                    pid,
                    TaskEvent::Logs {
                        lines,
                        dropped_bytes,
                    },
                ) if !self.flush_after.is_zero() => {
                    let bytes: usize = lines
                        .iter()
                        .map(|line| line.message.len() + LINE_OVERHEAD)
                        .sum();
                    let held = state.tasks.entry(pid).or_default();
                    if held.since.is_none() {
                        held.since = Some(now);
                        state.order.push_back((now, pid));
                    }
                    held.lines.extend(lines);
                    held.dropped_bytes = Some(dropped_bytes);
                    held.bytes += bytes;
                    state.bytes += bytes;
                    let due = held.bytes >= TASK_BYTES
                        || state.bytes > TOTAL_BYTES
                        || held
                            .since
                            .is_some_and(|since| now.duration_since(since) >= self.flush_after);
                    if due {
                        kept.extend(held.take_lines(pid, &mut state.bytes));
                    }
                }
                Change::Event(pid, event @ TaskEvent::Ended { .. }) => {
                    if let Some(mut held) = state.tasks.remove(&pid) {
                        kept.extend(held.take_lines(pid, &mut state.bytes));
                        if let Some((step, fuel)) = held.progress {
                            let progress = TaskEvent::Progress {
                                step,
                                steps: 0,
                                fuel,
                            };
                            kept.push(Change::Event(pid, progress));
                        }
                    }
                    kept.push(Change::Event(pid, event));
                }
                Change::Event(pid, event @ TaskEvent::Restarting { .. }) => {
                    if let Some(mut held) = state.tasks.remove(&pid) {
                        kept.extend(held.take_lines(pid, &mut state.bytes));
                    }
                    kept.push(Change::Event(pid, event));
                }
                // A checkpoint is written with what the task did up to it: a task resumed from
                // it does not log again the lines of the steps before it.
                Change::Checkpoint(row) => {
                    if let Some(held) = state.tasks.get_mut(&row.pid) {
                        kept.extend(held.take_lines(row.pid, &mut state.bytes));
                        if let Some((step, fuel)) = held.progress {
                            let progress = TaskEvent::Progress {
                                step,
                                steps: 0,
                                fuel,
                            };
                            kept.push(Change::Event(row.pid, progress));
                        }
                    }
                    kept.push(Change::Checkpoint(row));
                }
                change => kept.push(change),
            }
        }
        *batch = kept;
    }

    /// Takes the lines kept for `flush_after` or longer, as changes to write; `submit` queues
    /// them for the writer while no other thread can take or put back a line of these tasks,
    /// so that they are written before anything those tasks do next.
    pub(super) fn flush_due(&self, now: Instant, submit: impl FnOnce(Vec<Change>)) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut due = Vec::new();
        while let Some(&(since, pid)) = state.order.front() {
            if now.duration_since(since) < self.flush_after {
                break;
            }
            state.order.pop_front();
            let Some(held) = state.tasks.get_mut(&pid) else {
                continue;
            };
            if held.since == Some(since) {
                due.extend(held.take_lines(pid, &mut state.bytes));
                // Nothing else kept: the entry goes (it may be of a task that has ended).
                if held.progress.is_none() {
                    state.tasks.remove(&pid);
                }
            }
        }
        if !due.is_empty() {
            submit(due);
        }
    }

    /// Every line kept, as changes to write: when the store closes.
    pub(super) fn flush_all(&self, submit: impl FnOnce(Vec<Change>)) {
        let mut guard = self.lock();
        let State {
            tasks,
            order,
            bytes,
        } = &mut *guard;
        order.clear();
        let due: Vec<Change> = tasks
            .iter_mut()
            .filter_map(|(pid, held)| held.take_lines(*pid, bytes))
            .collect();
        if !due.is_empty() {
            submit(due);
        }
    }

    /// Shows in `records` what is kept here: the progress of tasks still running, and the
    /// cap's count of dropped bytes that their kept lines told.
    pub(super) fn show(&self, records: &mut [TaskRecord]) {
        let state = self.lock();
        if state.tasks.is_empty() {
            return;
        }
        for record in records
            .iter_mut()
            .filter(|record| !record.status.is_terminal())
        {
            let Some(held) = state.tasks.get(&record.pid) else {
                continue;
            };
            if let Some((step, fuel)) = held.progress.filter(|_| record.status == Status::Running) {
                record.step = step;
                record.fuel_consumed = fuel;
            }
            if let Some(dropped_bytes) = held.dropped_bytes {
                record.logs_dropped_bytes = dropped_bytes;
            }
        }
    }

    /// The lines kept for `pid`, not yet written, and the cap's count of dropped bytes they
    /// told.
    pub(super) fn lines(&self, pid: Pid) -> Option<(Vec<LogLine>, u64)> {
        let state = self.lock();
        let held = state.tasks.get(&pid)?;
        Some((held.lines.clone(), held.dropped_bytes?))
    }

    /// Bytes of lines kept now.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::LogSource;

    fn lines(pid: Pid, count: usize, bytes: usize) -> Change {
        let line = LogLine {
            at: SystemTime::now(),
            source: LogSource::Info,
            message: "x".repeat(bytes),
        };
        Change::Event(
            pid,
            TaskEvent::Logs {
                lines: vec![line; count],
                dropped_bytes: 0,
            },
        )
    }

    /// The bounds README promises: a task's kept lines are written once they pass
    /// `TASK_BYTES`, and all tasks' together never hold much past `TOTAL_BYTES`, however many
    /// tasks keep lines; what is not kept goes back into the batch, none lost.
    #[test]
    fn kept_lines_stay_within_their_bounds_and_none_is_lost() {
        let kept = Kept::new(Duration::from_secs(3600));
        let message = 1000;
        // One task: past its own bound, its lines come back to be written.
        let one = Pid::new(1, 1);
        let mut batch = vec![lines(one, TASK_BYTES / message + 1, message)];
        kept.take_from(&mut batch);
        assert_eq!(batch.len(), 1, "written once past {TASK_BYTES} bytes");
        assert_eq!(kept.bytes(), 0);
        // Many tasks, each under its own bound: together they stop at the total.
        let per_task = TASK_BYTES / message / 2;
        let tasks = 2 * TOTAL_BYTES / (per_task * (message + LINE_OVERHEAD));
        let mut returned = 0;
        for seq in 0..tasks {
            let mut batch = vec![lines(Pid::new(2, seq as u64), per_task, message)];
            kept.take_from(&mut batch);
            returned += batch.len();
            assert!(
                kept.bytes() <= TOTAL_BYTES + TASK_BYTES,
                "{} bytes kept",
                kept.bytes()
            );
        }
        assert!(
            returned > 0,
            "past the total, lines are written as they come"
        );
        // At close, everything kept comes back.
        let mut rest = Vec::new();
        kept.flush_all(|due| rest = due);
        assert_eq!(
            returned + rest.len(),
            tasks,
            "every task's lines written once"
        );
        assert_eq!(kept.bytes(), 0);
    }
}
