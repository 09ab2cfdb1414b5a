//! The writer both durable stores share: one thread that takes what waits in the [`Backlog`],
//! a chunk at a time, commits it in one transaction through the store's [`Backend`] (group
//! commit), then hands each submitter's answer to its [`Teller`], which tells them in order off
//! the writer's thread. What it does when a commit fails depends on the cause, which each store
//! reads from its own error codes ([`Fault`]):
//!
//! - **The environment** (the database is unreachable, full, read-only, out of memory, locked;
//!   a commit timed out): the store is unavailable. What a submitter waits for (an acceptance,
//!   a message forwarded for an HTTP client, a barrier) is answered at once, so its client gets
//!   `503`; the changes of running tasks go back to the backlog, in order, and are tried again
//!   after a pause that grows to [`MAX_RETRY_WAIT`], until the store takes them. New tasks are
//!   refused meanwhile ([`Store::healthy`](super::Store::healthy)).
//! - **A conflict** with another transaction (a deadlock, a serialisation failure): the same
//!   commit is tried again at once, a few times.
//! - **The content** of one change (a value the store cannot hold, a constraint): the chunk is
//!   split until the change at fault is alone, and everything else is written. The change at
//!   fault then costs itself only: a log line is dropped and counted; an acceptance, a module,
//!   a worker's versions or a message is refused to its submitter (`422` for a client); an end
//!   or a restart is written with its error text replaced by a note saying so. A task's start,
//!   end, restart and the commands sent to it are never dropped: one the store refuses even so
//!   is kept and tried again, as for the environment.
//! - **A lost answer** (a commit that timed out after it was sent): it may have been written.
//!   The backend finds out whether it was before anything else is written, so nothing is
//!   written twice.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::backlog::{Backlog, Chunk, Pending, Taken};
use super::teller::Teller;
use super::{Change, Forward, StoreError};
use crate::model::{Pid, TaskEvent};

/// The most a chunk weighs (a change each, a log line each): enough for every change a busy
/// host makes between two commits, and small enough that a backlog grown during an outage is
/// written in commits that each finish well within a store's timeout.
pub(super) const MAX_CHUNK_WEIGHT: usize = 4096;

/// The first pause after a failed commit; it doubles with each failure, to [`MAX_RETRY_WAIT`].
const RETRY_WAIT: Duration = Duration::from_millis(200);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// Times a commit that met a conflict is tried again at once before it counts as a failure of
/// the environment.
const CONFLICT_RETRIES: u32 = 3;

/// Why a commit failed, as the store's error code tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    Environment,
    Conflict,
    Content,
}

/// A failed commit.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub fault: Fault,
    /// For people: the store's message, never the content of the change.
    pub message: String,
    /// The commit was sent and its answer lost: it may have been written.
    pub ambiguous: bool,
}

impl Failure {
    pub(super) fn environment(message: impl Into<String>) -> Self {
        Self {
            fault: Fault::Environment,
            message: message.into(),
            ambiguous: false,
        }
    }
}

/// What a commit found beside writing.
#[derive(Default)]
pub(super) struct Outcome {
    /// Batches (by index in the chunk) answered otherwise than `Ok`.
    pub refused: Vec<(usize, StoreError)>,
    /// A prune that deleted a full batch: the next one, due at once.
    pub prune_more: Option<Change>,
    /// Writes of tasks this host no longer held.
    pub fenced: u64,
    /// Tasks whose start this host wrote while it no longer held them.
    pub fenced_starts: Vec<Pid>,
}

/// What a store does for the writer.
pub(super) trait Backend {
    /// Readies a chunk before it is committed: a store that fences writes answers what it
    /// refuses now, and takes it out.
    fn prepare(&mut self, _chunk: &mut Chunk) {}

    /// Writes `chunk` in one transaction, whole or not at all.
    fn commit(&mut self, chunk: &Chunk) -> Result<Outcome, Failure>;

    /// After an ambiguous failure of `chunk`: its outcome if it was written, `None` if it was
    /// not; an error while that cannot be told yet.
    fn landed(&mut self, _chunk: &Chunk) -> Result<Option<Outcome>, Failure> {
        Ok(None)
    }

    /// Told of what each commit found.
    fn committed(&mut self, _outcome: &Outcome) {}

    /// Work of the store's own between commits, once their submitters are answered (a store
    /// that writes in two stages does its second here); how long until more is due, if any.
    fn housekeep(&mut self) -> Option<Duration> {
        None
    }

    /// The backlog is closed and written: the last chance to finish what `housekeep` defers.
    fn closing(&mut self) {}

    /// For a store whose commits reach the disk only once flushed: the flush, which the
    /// writer's [`Teller`] runs before it tells the submitters of what was committed.
    fn flush(&mut self) -> Option<super::teller::Flush> {
        None
    }

    /// The least time from the start of one commit to the start of the next while changes
    /// come fast, for a store whose commits each cost a fixed price (a flush to the disk):
    /// the writer gathers what comes meanwhile into the next commit instead.
    fn commit_spacing(&self) -> Duration {
        Duration::ZERO
    }
}

/// Batches waiting past which a writer that spaces its commits commits at once: enough to
/// share a commit's price well.
const GATHERED: usize = 512;

/// What the writer has done, for the store's stats and the metrics.
#[derive(Debug, Default)]
pub(super) struct WriterStats {
    /// False from a commit failed for the environment until one succeeds.
    pub healthy: AtomicBool,
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    pub fenced: AtomicU64,
    pub failures: [AtomicU64; 3],
    /// Changes refused for their content, by [`Refused`].
    pub refused: [AtomicU64; Refused::ALL.len()],
}

impl WriterStats {
    pub(super) fn new() -> Self {
        let stats = Self::default();
        stats.healthy.store(true, Ordering::Release);
        stats
    }

    fn failed(&self, fault: Fault) {
        let index = match fault {
            Fault::Environment => 0,
            Fault::Conflict => 1,
            Fault::Content => 2,
        };
        self.failures[index].fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self, what: Refused, by: u64) {
        self.refused[what as usize].fetch_add(by, Ordering::Relaxed);
    }

    /// Failed commits by cause: environment, conflict, content.
    pub(super) fn failures(&self) -> [u64; 3] {
        [0, 1, 2].map(|index| self.failures[index].load(Ordering::Relaxed))
    }

    /// Changes refused for their content, by kind.
    pub(super) fn refusals(&self) -> Vec<(&'static str, u64)> {
        Refused::ALL
            .iter()
            .map(|what| {
                (
                    what.name(),
                    self.refused[*what as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// A kind of change refused for its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Dropped.
    LogLine,
    /// Answered `422`.
    Acceptance,
    /// Written with its error text replaced.
    ErrorText,
    /// Dropped: the next progress, or the end, shows it.
    Progress,
    /// Answered to their submitter: a module, a worker's versions, a message, a prune.
    Other,
}

impl Refused {
    const ALL: [Refused; 5] = [
        Refused::LogLine,
        Refused::Acceptance,
        Refused::ErrorText,
        Refused::Progress,
        Refused::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Refused::LogLine => "log_line",
            Refused::Acceptance => "acceptance",
            Refused::ErrorText => "error_text",
            Refused::Progress => "progress",
            Refused::Other => "other",
        }
    }
}

/// What could not be written, and why: the environment failed.
struct Left {
    chunk: Chunk,
    failure: Failure,
}

/// The writer of one store.
pub(super) struct Writer<'a, B: Backend> {
    /// Tells the submitters, off this thread, in order. Dropped first: it has told (and
    /// flushed) everything before the backend closes.
    teller: Teller,
    backlog: &'a Backlog,
    backend: B,
    stats: &'a WriterStats,
    /// What the store is called in the log.
    store: &'static str,
}

impl<'a, B: Backend> Writer<'a, B> {
    pub(super) fn new(
        backlog: &'a Backlog,
        mut backend: B,
        stats: &'a WriterStats,
        store: &'static str,
    ) -> Self {
        let teller = Teller::start(store, backend.flush());
        Self {
            teller,
            backlog,
            backend,
            stats,
            store,
        }
    }

    /// Writes until the backlog is closed and empty, or the store fails while it closes.
    pub(super) fn run(mut self) {
        let mut pause = RETRY_WAIT;
        // A chunk whose commit may have been written: it is settled before anything else.
        let mut unsettled: Option<Chunk> = None;
        // When the backend's housekeeping is due next.
        let mut due = self.backend.housekeep();
        let spacing = self.backend.commit_spacing();
        let mut last_commit: Option<std::time::Instant> = None;
        loop {
            // Commits back to back are spaced out; one after a pause starts at once.
            if let Some(next) = last_commit.and_then(|last| last.checked_add(spacing))
                && unsettled.is_none()
                && !spacing.is_zero()
            {
                self.backlog.gather(next, GATHERED);
            }
            let chunk = match unsettled.take() {
                Some(chunk) => match self.backend.landed(&chunk) {
                    Ok(Some(outcome)) => {
                        self.committed(chunk, outcome);
                        continue;
                    }
                    Ok(None) => chunk,
                    Err(failure) => {
                        self.unavailable(&failure);
                        unsettled = Some(chunk);
                        if self.backlog.closed() {
                            return self.stop_unwritten(unsettled.take());
                        }
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(MAX_RETRY_WAIT);
                        continue;
                    }
                },
                None => match self.backlog.take_within(MAX_CHUNK_WEIGHT, due) {
                    Taken::Chunk(chunk) => chunk,
                    Taken::Idle => {
                        due = self.backend.housekeep();
                        continue;
                    }
                    Taken::Closed => return self.backend.closing(),
                },
            };
            let mut chunk = chunk;
            self.backend.prepare(&mut chunk);
            if chunk.is_empty() {
                continue;
            }
            last_commit = Some(std::time::Instant::now());
            let Err(Left { chunk, failure }) = self.write(chunk) else {
                pause = RETRY_WAIT;
                due = self.backend.housekeep();
                continue;
            };
            self.unavailable(&failure);
            let chunk = if failure.ambiguous {
                // Settled at once if the store can tell now, so that the clients waiting are
                // answered as they should be; else later, before anything else is written.
                match self.backend.landed(&chunk) {
                    Ok(Some(outcome)) => {
                        self.committed(chunk, outcome);
                        continue;
                    }
                    Ok(None) => chunk,
                    Err(_) => {
                        unsettled = Some(self.answer_waiters(chunk, &failure));
                        continue;
                    }
                }
            } else {
                chunk
            };
            let kept = self.answer_waiters(chunk, &failure);
            if self.backlog.closed() {
                return self.stop_unwritten(Some(kept));
            }
            self.backlog.put_back(kept);
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_RETRY_WAIT);
        }
    }

    /// The host stops with changes the store could not take.
    fn stop_unwritten(&self, left: Option<Chunk>) {
        let mut left = left.unwrap_or_default();
        // Closed: `take` waits for nothing, and ends once the backlog is empty.
        while let Some(more) = self.backlog.take(usize::MAX) {
            left = left.then(more);
        }
        let kept = left.pendings.len();
        self.teller.tell(
            left.pendings
                .into_iter()
                .map(|pending| {
                    let error = "the host stopped before the store could take this";
                    (pending, Err(StoreError::Unavailable(error.into())))
                })
                .collect(),
        );
        tracing::error!(
            store = self.store,
            kept,
            "the host stops with changes the store could not take"
        );
    }

    /// Marks the store unavailable, saying so once, and answers at once what waits behind
    /// the chunk that failed and is waited for: nothing is written before that chunk is.
    fn unavailable(&self, failure: &Failure) {
        self.stats.failed(Fault::Environment);
        if self.stats.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(store = self.store, error = %failure.message,
                "the task store cannot write; new tasks are refused until it can, and the \
                 changes of running tasks are kept and tried again");
        }
        let unavailable = || Err(StoreError::Unavailable(failure.message.clone()));
        self.teller.tell(
            self.backlog
                .remove_where(|pending| !keeps(pending))
                .into_iter()
                .map(|pending| (pending, unavailable()))
                .collect(),
        );
    }

    /// Answers at once, as unavailable, what in `chunk` a submitter waits for; what is left is
    /// the changes of running tasks, kept to try again.
    fn answer_waiters(&self, chunk: Chunk, failure: &Failure) -> Chunk {
        let Chunk { pendings, progress } = chunk;
        let mut kept = Vec::with_capacity(pendings.len());
        let mut told = Vec::new();
        for pending in pendings {
            if keeps(&pending) {
                kept.push(pending);
            } else {
                told.push((
                    pending,
                    Err(StoreError::Unavailable(failure.message.clone())),
                ));
            }
        }
        self.teller.tell(told);
        Chunk {
            pendings: kept,
            progress,
        }
    }

    /// Commits `chunk`, trying again at once after a conflict.
    fn commit(&mut self, chunk: &Chunk) -> Result<Outcome, Failure> {
        let mut conflicts = 0;
        loop {
            match self.backend.commit(chunk) {
                Err(failure) if failure.fault == Fault::Conflict => {
                    self.stats.failed(Fault::Conflict);
                    conflicts += 1;
                    if conflicts > CONFLICT_RETRIES {
                        return Err(Failure {
                            fault: Fault::Environment,
                            ..failure
                        });
                    }
                    tracing::debug!(error = %failure.message, "a commit met a conflict; again");
                }
                result => return result,
            }
        }
    }

    /// Writes `chunk`; what the store refuses for its content costs that change alone. What
    /// is left when the environment fails is handed back.
    fn write(&mut self, chunk: Chunk) -> Result<(), Left> {
        let failure = match self.commit(&chunk) {
            Ok(outcome) => {
                self.committed(chunk, outcome);
                return Ok(());
            }
            Err(failure) => failure,
        };
        if failure.fault != Fault::Content {
            return Err(Left { chunk, failure });
        }
        self.stats.failed(Fault::Content);
        let parts = split(chunk);
        if parts.len() <= 1 {
            let alone = parts.into_iter().next().unwrap_or_default();
            return self.refuse(alone, &failure);
        }
        let mut parts = VecDeque::from(parts);
        while let Some(part) = parts.pop_front() {
            if let Err(left) = self.write(part) {
                let chunk = parts.into_iter().fold(left.chunk, Chunk::then);
                return Err(Left {
                    chunk,
                    failure: left.failure,
                });
            }
        }
        Ok(())
    }

    /// `chunk` holds one change (or one task's progress), refused for its content.
    fn refuse(&mut self, mut chunk: Chunk, failure: &Failure) -> Result<(), Left> {
        if chunk.pendings.is_empty() {
            self.stats
                .refused(Refused::Progress, chunk.progress.len() as u64);
            tracing::warn!(error = %failure.message, "the store refused a task's progress");
            return Ok(());
        }
        let Some(pending) = chunk.pendings.pop() else {
            return Ok(());
        };
        let Some(change) = pending.batch.first() else {
            self.teller.tell_one(pending, Ok(()));
            return Ok(());
        };
        let refused = StoreError::Refused(failure.message.clone());
        match change {
            Change::Event(pid, TaskEvent::Logs { .. }) => {
                tracing::warn!(pid = %pid, error = %failure.message,
                    "the store refused a log line; it is dropped");
                self.stats.refused(Refused::LogLine, 1);
                self.teller.tell_one(pending, Ok(()));
                Ok(())
            }
            Change::Accepted { record, .. } => {
                tracing::warn!(pid = %record.pid, error = %failure.message,
                    "the store refused a task; its client is told");
                self.stats.refused(Refused::Acceptance, 1);
                self.teller.tell_one(pending, Err(refused));
                Ok(())
            }
            Change::Event(pid, TaskEvent::Ended { .. } | TaskEvent::Restarting { .. }) => {
                let pid = *pid;
                let scrubbed = scrubbed(pending, failure);
                tracing::warn!(pid = %pid, error = %failure.message,
                    "the store refused a task's error text; its end is written with a note");
                self.stats.refused(Refused::ErrorText, 1);
                let chunk = Chunk {
                    pendings: vec![scrubbed],
                    progress: HashMap::new(),
                };
                match self.commit(&chunk) {
                    Ok(outcome) => {
                        self.committed(chunk, outcome);
                        Ok(())
                    }
                    Err(failure) => Err(self.never_dropped(chunk, failure)),
                }
            }
            Change::Module { .. }
            | Change::Checkpoint(_)
            | Change::Worker { .. }
            | Change::Schedule(_)
            | Change::WorkerPaused { .. }
            | Change::WorkerLimits { .. }
            | Change::Prune { .. }
            | Change::Forward {
                what: Forward::Message { .. } | Forward::Kill(_),
                ..
            } => {
                tracing::warn!(error = %failure.message, "the store refused a change");
                self.stats.refused(Refused::Other, 1);
                self.teller.tell_one(pending, Err(refused));
                Ok(())
            }
            Change::Event(..)
            | Change::Forward {
                what: Forward::Exit { .. },
                ..
            } => {
                let chunk = Chunk {
                    pendings: vec![pending],
                    progress: HashMap::new(),
                };
                Err(self.never_dropped(chunk, failure.clone()))
            }
        }
    }

    /// A change that is never dropped, refused all the same: kept, and tried again as when
    /// the environment fails, loudly.
    fn never_dropped(&self, chunk: Chunk, failure: Failure) -> Left {
        tracing::error!(store = self.store, error = %failure.message,
            "the store refuses a change of a task's life that is never dropped; it is kept \
             and tried again");
        Left {
            chunk,
            failure: Failure {
                fault: Fault::Environment,
                ..failure
            },
        }
    }

    /// Counts a commit, answers its submitters, and hands on what it found.
    fn committed(&mut self, chunk: Chunk, outcome: Outcome) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .batches
            .fetch_add(chunk.pendings.len() as u64, Ordering::Relaxed);
        self.stats
            .fenced
            .fetch_add(outcome.fenced, Ordering::Relaxed);
        if !self.stats.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(store = self.store, "the task store takes writes again");
        }
        self.backend.committed(&outcome);
        let Outcome {
            mut refused,
            prune_more,
            ..
        } = outcome;
        if let Some(prune) = prune_more {
            // More is due than one prune deletes: the next one goes with the next commit.
            self.backlog.submit(vec![prune], None, 0);
        }
        let told = chunk
            .pendings
            .into_iter()
            .enumerate()
            .map(|(index, pending)| {
                let result = match refused.iter().position(|(at, _)| *at == index) {
                    Some(position) => Err(refused.swap_remove(position).1),
                    None => Ok(()),
                };
                (pending, result)
            })
            .collect();
        self.teller.tell(told);
    }
}

/// Whether a batch that could not be written is kept to try again: the changes of a running
/// task's life, and the exit signals sent to linked tasks. Anything a submitter waits for is
/// answered at once instead: an acceptance, a message or a kill for another host's task, a
/// module, a worker's versions, a prune, a barrier.
fn keeps(pending: &Pending) -> bool {
    !pending.batch.is_empty()
        && pending.batch.iter().all(|change| {
            matches!(
                change,
                Change::Event(..)
                    | Change::Forward {
                        what: Forward::Exit { .. },
                        ..
                    }
            )
        })
}

/// `chunk` in smaller parts, in order: each batch alone, then each change of a batch alone
/// (its submitter told with the last), then each log line alone; the progress apart.
fn split(chunk: Chunk) -> Vec<Chunk> {
    let Chunk { pendings, progress } = chunk;
    let alone = |pending: Pending| Chunk {
        pendings: vec![pending],
        progress: HashMap::new(),
    };
    let mut parts: Vec<Chunk> = Vec::new();
    if pendings.len() > 1 || (!pendings.is_empty() && !progress.is_empty()) {
        parts.extend(pendings.into_iter().map(alone));
    } else if let Some(pending) = pendings.into_iter().next() {
        let node = pending.node;
        if pending.batch.len() > 1 {
            let mut changes = pending.batch;
            let last = changes.pop();
            for change in changes {
                parts.push(alone(Pending::new(vec![change], None, node)));
            }
            if let Some(last) = last {
                parts.push(alone(Pending::new(vec![last], pending.done, node)));
            }
        } else {
            match pending.batch.into_iter().next() {
                Some(Change::Event(
                    pid,
                    TaskEvent::Logs {
                        lines,
                        dropped_bytes,
                    },
                )) if lines.len() > 1 => {
                    let count = lines.len();
                    let mut done = pending.done;
                    for (index, line) in lines.into_iter().enumerate() {
                        let logs = TaskEvent::Logs {
                            lines: vec![line],
                            dropped_bytes,
                        };
                        let done = if index + 1 == count {
                            done.take()
                        } else {
                            None
                        };
                        parts.push(alone(Pending::new(
                            vec![Change::Event(pid, logs)],
                            done,
                            node,
                        )));
                    }
                }
                change => parts.push(alone(Pending::new(
                    change.into_iter().collect(),
                    pending.done,
                    node,
                ))),
            }
        }
    }
    if !progress.is_empty() {
        if parts.is_empty() && progress.len() == 1 {
            parts.push(Chunk {
                pendings: Vec::new(),
                progress,
            });
        } else {
            for (pid, step) in progress {
                parts.push(Chunk {
                    pendings: Vec::new(),
                    progress: HashMap::from([(pid, step)]),
                });
            }
        }
    }
    parts
}

/// An end or a restart refused for its error text, with the text replaced by a note.
fn scrubbed(pending: Pending, failure: &Failure) -> Pending {
    let Pending {
        mut batch,
        done,
        node,
        ..
    } = pending;
    let note = format!(
        "(the task store refused the text of this error: {})",
        failure.message
    );
    if let Some(Change::Event(
        _,
        TaskEvent::Ended { end, .. } | TaskEvent::Restarting { end, .. },
    )) = batch.first_mut()
    {
        end.error = Some(note);
    }
    Pending::new(batch, done, node)
}
