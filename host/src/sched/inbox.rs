//! A scheduler thread's intake: new tasks and kills, and what the thread is doing, so that
//! submitters wake it only when it would otherwise sleep long.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::Job;
use super::admission::Permit;
use crate::model::{Pid, TaskEnd};

/// How late a wake-up may be. A scheduler thread sleeps until its next timer plus this slack,
/// so the wake-ups of tasks whose timers fall within one slack of each other share a single
/// thread wake-up; and a new task does not wake a thread that will wake within the slack
/// anyway. Under load this turns a thread wake-up per event (the main cost of a short task)
/// into at most about one per millisecond per thread, for at most a millisecond of delay.
pub(super) const TIMER_SLACK: Duration = Duration::from_millis(1);

/// What a scheduler thread is asked to do, in order.
#[derive(Debug)]
pub(super) enum Command {
    /// Run this task, which holds this place; queued at that instant.
    Run(Job, Permit<Job>, Instant),
    /// End this task, one of this thread's, so: killed by an operator or another task, or
    /// `linked_exit`.
    Kill(Pid, TaskEnd),
    /// A mailbox entry arrived for this task, which waits in `receive`.
    Wake(Pid),
    /// End every task this thread holds so: killed at the end of a graceful shutdown, or
    /// `host_lost` when a host of a cluster lost its lease.
    KillAll(TaskEnd),
    /// Checkpoint and let go, without an end, every task of this thread that takes
    /// checkpoints and waits between two steps; send their pids (a host being drained).
    HandOver(std::sync::mpsc::Sender<Vec<Pid>>),
}

/// A scheduler thread's intake: new tasks, and what the thread is doing, so that submitters
/// wake it only when it would otherwise sleep long.
#[derive(Debug)]
pub(super) struct Inbox {
    commands: Mutex<Vec<Command>>,
    /// Jobs pushed and not yet taken; read by the thread after it announces its sleep.
    pending: AtomicUsize,
    /// While parked: when the thread will wake on its own, in nanoseconds since `epoch`
    /// (`u64::MAX`: not before it is woken). 0 while it runs.
    parked_until: AtomicU64,
    epoch: Instant,
    closed: AtomicBool,
    pub(super) thread: OnceLock<Thread>,
    /// Kills, taken ahead of any backlog of new tasks.
    urgent: Mutex<Vec<Command>>,
    /// When the oldest new task queued here and not yet taken by the thread was queued (in
    /// nanoseconds since `epoch`, plus one); 0 when none is.
    queued_since: AtomicU64,
    /// The same for the oldest new task the thread has taken and not started yet; published
    /// by the thread.
    taken_since: AtomicU64,
}

impl Inbox {
    pub(super) fn new() -> Self {
        Self {
            commands: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            parked_until: AtomicU64::new(0),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
            thread: OnceLock::new(),
            urgent: Mutex::new(Vec::new()),
            queued_since: AtomicU64::new(0),
            taken_since: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Command>> {
        self.commands
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Queues a task to run, while the inbox is open; gives it back once it is closed (its
    /// place is then given back as the permit drops). It wakes the thread only if the thread
    /// would otherwise sleep past the slack.
    pub(super) fn run(&self, job: Job, permit: Permit<Job>) -> Result<(), Box<Job>> {
        {
            // `closed` is read and written under the lock, so a task is either refused here or
            // seen by the thread before it exits.
            let mut commands = self.lock();
            if self.closed.load(Ordering::SeqCst) {
                return Err(Box::new(job));
            }
            let now = Instant::now();
            if commands.is_empty() {
                self.queued_since
                    .store(self.nanos(now) + 1, Ordering::Relaxed);
            }
            commands.push(Command::Run(job, permit, now));
        }
        self.notify(false);
        Ok(())
    }

    /// Queues a kill (of one task or of all) or a mailbox wake-up, which the thread takes
    /// before any new task and which wakes it at once.
    pub(super) fn kill(&self, command: Command) {
        self.urgent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(command);
        self.notify(true);
    }

    pub(super) fn take_urgent(&self) -> Vec<Command> {
        let mut urgent = self
            .urgent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.pending.fetch_sub(urgent.len(), Ordering::SeqCst);
        std::mem::take(&mut *urgent)
    }

    fn notify(&self, urgent: bool) {
        // SeqCst on both sides: either the thread sees the command after announcing its
        // sleep, or this sees its announcement and decides whether to wake it.
        self.pending.fetch_add(1, Ordering::SeqCst);
        let parked_until = self.parked_until.load(Ordering::SeqCst);
        let soon = self.nanos(Instant::now() + TIMER_SLACK);
        if parked_until != 0 && (urgent || parked_until > soon) {
            self.wake();
        }
    }

    /// The thread holds new tasks it has not started, the oldest queued at `oldest`.
    pub(super) fn taken(&self, oldest: Option<Instant>) {
        let since = oldest.map_or(0, |at| self.nanos(at) + 1);
        self.taken_since.store(since, Ordering::Relaxed);
    }

    /// How long the oldest new task waiting for the thread has waited; `None` while none waits.
    /// A task submitted now waits at least as long.
    pub(super) fn start_lag(&self) -> Option<Duration> {
        let oldest = [
            self.queued_since.load(Ordering::Relaxed),
            self.taken_since.load(Ordering::Relaxed),
        ]
        .into_iter()
        .filter(|since| *since != 0)
        .min()?;
        let now = self.nanos(Instant::now()) + 1;
        Some(Duration::from_nanos(now.saturating_sub(oldest)))
    }

    /// Whether the inbox takes no more tasks: the host is shutting down.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(super) fn close(&self) {
        let _commands = self.lock();
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the thread may exit: closed, and nothing left to take.
    pub(super) fn finished(&self) -> bool {
        let commands = self.lock();
        self.closed.load(Ordering::SeqCst)
            && commands.is_empty()
            && self.pending.load(Ordering::SeqCst) == 0
    }

    pub(super) fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    pub(super) fn take(&self, into: &mut VecDeque<Command>) {
        let mut commands = self.lock();
        self.pending.fetch_sub(commands.len(), Ordering::SeqCst);
        into.extend(commands.drain(..));
        self.queued_since.store(0, Ordering::Relaxed);
    }

    /// Sleeps until `until` (or until woken), unless a job arrived meanwhile.
    pub(super) fn park(&self, until: Option<Instant>) {
        let announced = until.map_or(u64::MAX, |at| self.nanos(at).max(1));
        self.parked_until.store(announced, Ordering::SeqCst);
        // A close wakes the thread, so it may park even when closed: it still has timers.
        if self.pending.load(Ordering::SeqCst) == 0 {
            match until {
                Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
                None => std::thread::park(),
            }
        }
        self.parked_until.store(0, Ordering::SeqCst);
    }
}
