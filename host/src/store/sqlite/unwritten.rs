//! Tasks whose newest changes are in the journal and not yet in `tasks`: their images, shown
//! by reads as if written, until the writer writes them there.
//!
//! - **When a task is written to `tasks`.** Once it has ended, a second or so later
//!   ([`ENDED_AFTER`]), with the others ended by then: most tasks live a few seconds, so most
//!   are written once, whole, with their log. A task still running is written once its first
//!   change not yet written is [`LIVE_AFTER`] old, so that the journal stays short and a
//!   sleeping task holds no memory here; and the oldest are written early when more than
//!   [`MAX_TASKS`] wait. At most [`SLICE`] are written per transaction, in pid order, so that
//!   no write holds the writer long and rows of one page go together.
//! - **Where the journal may be cut.** A journal row may go once every task with an entry in
//!   it has been written since: the first row still needed is the oldest first entry of the
//!   tasks here ([`Unwritten::cut_before`]).
//! - **Reads.** A task here is read from here: its image is newer than its row, if it has one.
//!   A read that combines both (a list, a task's log) runs [`Unwritten::consistently`]: again,
//!   if a write to `tasks` moved tasks from here to their rows meanwhile, so that no task is
//!   seen in both places or in neither. A read never holds up the writer.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::journal::{self, Image};
use super::writer::Journaled;
use crate::model::{Pid, PidMap, TaskEvent, TaskRecord};
use crate::store::{Cursor, ListQuery};

/// How long an ended task waits here before it is written.
pub(super) const ENDED_AFTER: Duration = Duration::from_secs(1);

/// How long a running task's first change not yet written waits here at most.
pub(super) const LIVE_AFTER: Duration = Duration::from_secs(10);

/// Tasks here past which the oldest are written at once.
pub(super) const MAX_TASKS: usize = 65_536;

/// Tasks written per transaction at most: a slice holds the writer a millisecond or two (2,048
/// held it long enough to double the p99 of acceptances at 5,000 a second).
pub(super) const SLICE: usize = 256;

/// One task here.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub image: Image,
    /// Lines journaled and not yet written, in `lines_blob` form.
    pub lines: Vec<u8>,
    /// The journal row of its first entry since it was last written, and of its last.
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, Default)]
struct State {
    tasks: PidMap<Arc<Held>>,
    /// `(first, since, pid)` of each task as it came here, in journal order: the order running
    /// tasks come due, and where the journal may be cut. An entry whose task has been written
    /// since is passed over.
    order: VecDeque<(i64, Instant, Pid)>,
    /// Tasks that ended here, in the order they did.
    ended: VecDeque<(Instant, Pid)>,
}

impl State {
    /// Folds `event` of task `pid` (and the lines it `added`), journaled in row `seq`, into
    /// its image here; a task not here is taken from `rows` (read from `tasks`), and comes
    /// here only if the event changes it.
    fn fold(
        &mut self,
        seq: i64,
        now: Instant,
        rows: &mut PidMap<Image>,
        pid: Pid,
        event: &TaskEvent,
        added: &[u8],
    ) {
        if let Some(old) = self.tasks.get_mut(&pid) {
            let held = Arc::make_mut(old);
            let ended = held.image.record.status.is_terminal();
            if journal::fold(&mut held.image, &mut held.lines, event, added) {
                held.last = seq;
                if !ended && held.image.record.status.is_terminal() {
                    self.ended.push_back((now, pid));
                }
            }
            return;
        }
        let Some(image) = rows.remove(&pid) else {
            return;
        };
        let mut held = Held {
            image,
            lines: Vec::new(),
            first: seq,
            last: seq,
        };
        if !journal::fold(&mut held.image, &mut held.lines, event, added) {
            rows.insert(pid, held.image);
            return;
        }
        self.order.push_back((seq, now, pid));
        if held.image.record.status.is_terminal() {
            self.ended.push_back((now, pid));
        }
        self.tasks.insert(pid, Arc::new(held));
    }
}

/// A move of tasks from here to their rows, under way.
pub(super) struct Moving<'a>(&'a Unwritten);

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        self.0.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// The tasks not yet written to `tasks`.
#[derive(Debug, Default)]
pub(super) struct Unwritten {
    state: Mutex<State>,
    /// Odd while a write to `tasks` moves tasks from here to their rows (from its commit until
    /// they are gone from here); each move adds two.
    epoch: AtomicU64,
    /// Tests that stand in for a crash close the store without writing what is here.
    #[cfg(test)]
    pub(super) left_at_close: std::sync::atomic::AtomicBool,
}

impl Unwritten {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `read`, which reads both what is here and what is written, until no move of tasks
    /// from here to their rows overlapped it.
    pub(super) fn consistently<T, E>(
        &self,
        mut read: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        loop {
            let before = self.epoch.load(Ordering::SeqCst);
            if before % 2 == 1 {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            let value = read()?;
            if self.epoch.load(Ordering::SeqCst) == before {
                return Ok(value);
            }
        }
    }

    /// Taken by a write to `tasks` just before its commit, and dropped once
    /// [`Unwritten::written`] has taken its tasks from here.
    pub(super) fn moving(&self) -> Moving<'_> {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Moving(self)
    }

    /// The task, if it is here.
    pub(super) fn held(&self, pid: Pid) -> Option<Arc<Held>> {
        self.lock().tasks.get(&pid).cloned()
    }

    /// Tasks here.
    pub(super) fn len(&self) -> usize {
        self.lock().tasks.len()
    }

    /// Whether the task is here.
    pub(super) fn holds(&self, pid: Pid) -> bool {
        self.lock().tasks.contains_key(&pid)
    }

    /// Takes in what journal row `seq` (its value `value`) holds, just committed: the tasks
    /// it accepted, and the changes of others, folded into their images here; `rows` are the
    /// images, read from `tasks`, of those not here before. A task's image here is changed
    /// in place unless a reader holds it meanwhile, which then keeps the image it read.
    pub(super) fn journaled(
        &self,
        seq: i64,
        journaled: Vec<Journaled<'_>>,
        mut rows: PidMap<Image>,
        value: &[u8],
    ) {
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        for change in journaled {
            match change {
                Journaled::Accepted(record, spec) => {
                    let image = Image {
                        record: record.clone(),
                        spec: spec.clone(),
                    };
                    let pid = image.record.pid;
                    let ended = image.record.status.is_terminal();
                    match state.tasks.get_mut(&pid) {
                        Some(old) => {
                            let held = Arc::make_mut(old);
                            if ended && !held.image.record.status.is_terminal() {
                                state.ended.push_back((now, pid));
                            }
                            held.image = image;
                            held.last = seq;
                        }
                        None => {
                            state.order.push_back((seq, now, pid));
                            if ended {
                                state.ended.push_back((now, pid));
                            }
                            let held = Held {
                                image,
                                lines: Vec::new(),
                                first: seq,
                                last: seq,
                            };
                            state.tasks.insert(pid, Arc::new(held));
                        }
                    }
                }
                Journaled::Event(pid, event, lines) => {
                    let added = value.get(lines).unwrap_or_default();
                    state.fold(seq, now, &mut rows, pid, event, added);
                }
                Journaled::Progress(pid, progress) => {
                    state.fold(seq, now, &mut rows, pid, &progress, &[]);
                }
            }
        }
    }

    /// The tasks due to be written now, at most [`SLICE`], in pid order; all of them (a slice
    /// at a time) when `all`.
    pub(super) fn due(&self, now: Instant, all: bool) -> Vec<Arc<Held>> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut due: Vec<Arc<Held>> = Vec::new();
        let mut taken = HashSet::new();
        // Ended tasks, once the oldest has waited, or once a slice of them waits.
        let waited = state.ended.front().is_some_and(|&(at, _)| {
            all || now.duration_since(at) >= ENDED_AFTER || state.ended.len() >= SLICE
        });
        if waited {
            while due.len() < SLICE {
                let Some((_, pid)) = state.ended.pop_front() else {
                    break;
                };
                if let Some(held) = state.tasks.get(&pid)
                    && taken.insert(pid)
                {
                    due.push(Arc::clone(held));
                }
            }
        }
        // Running tasks (and any other) whose first change not yet written is old, or the
        // oldest while too many wait.
        let crowded = state.tasks.len().saturating_sub(MAX_TASKS);
        for &(first, since, pid) in &state.order {
            if due.len() >= SLICE {
                break;
            }
            let late = all || now.duration_since(since) >= LIVE_AFTER || taken.len() < crowded;
            if !late {
                break;
            }
            if let Some(held) = state.tasks.get(&pid).filter(|held| held.first == first)
                && taken.insert(pid)
            {
                due.push(Arc::clone(held));
            }
        }
        due.sort_by_key(|held| held.image.record.pid);
        due
    }

    /// `due` could not be written: the ended among them are due again first.
    pub(super) fn due_again(&self, due: &[Arc<Held>]) {
        let now = Instant::now();
        let mut state = self.lock();
        for held in due.iter().rev() {
            if held.image.record.status.is_terminal() {
                state.ended.push_front((now, held.image.record.pid));
            }
        }
    }

    /// The first journal row still needed once `written` are written: the oldest first entry
    /// of the others here; none when no other is here.
    pub(super) fn cut_before(&self, written: &[Arc<Held>]) -> Option<i64> {
        let gone: HashSet<Pid> = written.iter().map(|held| held.image.record.pid).collect();
        let state = self.lock();
        state
            .order
            .iter()
            .find(|(first, _, pid)| {
                !gone.contains(pid) && state.tasks.get(pid).is_some_and(|h| h.first == *first)
            })
            .map(|&(first, _, _)| first)
    }

    /// `written` are in `tasks` now: they go from here, unless a newer change came meanwhile.
    pub(super) fn written(&self, written: &[Arc<Held>]) {
        let mut state = self.lock();
        let state = &mut *state;
        for held in written {
            let pid = held.image.record.pid;
            if state
                .tasks
                .get(&pid)
                .is_some_and(|now| Arc::ptr_eq(now, held))
            {
                state.tasks.remove(&pid);
            }
        }
        while let Some(&(first, _, pid)) = state.order.front() {
            if state
                .tasks
                .get(&pid)
                .is_some_and(|held| held.first == first)
            {
                break;
            }
            state.order.pop_front();
        }
    }

    /// The newest `query.limit + 1` records here that `query` wants, its cursor included,
    /// newest first. Only those are copied.
    pub(super) fn listed(&self, query: &ListQuery) -> Vec<TaskRecord> {
        let wanted = query.limit.saturating_add(1);
        let state = self.lock();
        let mut places: Vec<(Cursor, &TaskRecord)> = state
            .tasks
            .values()
            .map(|held| &held.image.record)
            .filter(|record| query.wants(record))
            .map(|record| (Cursor::of(record), record))
            .filter(|(at, _)| query.before.is_none_or(|before| *at < before))
            .collect();
        if places.len() > wanted {
            places.select_nth_unstable_by(wanted - 1, |a, b| b.0.cmp(&a.0));
            places.truncate(wanted);
        }
        places.sort_unstable_by_key(|&(at, _)| std::cmp::Reverse(at));
        places
            .into_iter()
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// The highest sequence number here among pids of boot `boot`; 0 when none.
    pub(super) fn last_seq(&self, boot: u32) -> u64 {
        let state = self.lock();
        state
            .tasks
            .keys()
            .filter(|pid| pid.boot() == boot)
            .map(|pid| pid.seq())
            .max()
            .unwrap_or(0)
    }

    /// The images here, oldest first by acceptance: for `unfinished`.
    pub(super) fn images(&self) -> Vec<Image> {
        let state = self.lock();
        let mut images: Vec<Image> = state
            .tasks
            .values()
            .map(|held| held.image.clone())
            .collect();
        images.sort_by_key(|image| Cursor::of(&image.record));
        images
    }
}
