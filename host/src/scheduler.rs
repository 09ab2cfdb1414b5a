//! The scheduler: a few plain OS threads, each running many tasks, as Erlang's schedulers do.
//!
//! A scheduler thread owns its tasks outright: their stores, their permits and a timer heap.
//! It instantiates a task when it arrives, calls `step`, and when the guest asks to sleep, files
//! a timer and moves on. Between steps a task costs its store and one heap entry: no thread, no
//! stack, no future. Steps never run on the async runtime's threads, so a compute-bound step
//! (bounded by its fuel) cannot starve the HTTP server, and WASI's synchronous host calls run
//! outside any async context, as they require.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use crate::capacity::Permit;
use crate::ledger::{Ending, Ledger};
use crate::sandbox::{Kills, Next, Process, TaskLimits, deadline_exceeded, killed};
use crate::table::{Outcome, Pid, ProcessTable, Status, TaskEnd, TaskEvent};
use crate::workers::Version;

/// A scheduler thread runs wasm on its own stack; leave room above wasmtime's default 512 KiB
/// wasm stack limit for the host frames around it.
const THREAD_STACK_BYTES: usize = 4 << 20;

/// How many new tasks a scheduler takes in before it looks at its timers again, so a burst of
/// submissions cannot delay the wake-ups of sleeping tasks without bound.
const INTAKE_BATCH: usize = 64;

/// How late a wake-up may be. A scheduler thread sleeps until its next timer plus this slack,
/// so the wake-ups of tasks whose timers fall within one slack of each other share a single
/// thread wake-up; and a new task does not wake a thread that will wake within the slack
/// anyway. Under load this turns a thread wake-up per event (the main cost of a short task)
/// into at most about one per millisecond per thread, for at most a millisecond of delay.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// A scheduler thread's intake: new tasks, and what the thread is doing, so that submitters
/// wake it only when it would otherwise sleep long.
#[derive(Debug)]
struct Inbox {
    commands: Mutex<Vec<Command>>,
    /// Jobs pushed and not yet taken; read by the thread after it announces its sleep.
    pending: AtomicUsize,
    /// While parked: when the thread will wake on its own, in nanoseconds since `epoch`
    /// (`u64::MAX`: not before it is woken). 0 while it runs.
    parked_until: AtomicU64,
    epoch: Instant,
    closed: AtomicBool,
    thread: std::sync::OnceLock<Thread>,
    /// Kills, taken ahead of any backlog of new tasks.
    urgent: Mutex<Vec<Command>>,
}

impl Inbox {
    fn new() -> Self {
        Self {
            commands: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            parked_until: AtomicU64::new(0),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
            urgent: Mutex::new(Vec::new()),
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

    /// Queues a new task, while the inbox is open; gives it back once it is closed. It wakes
    /// the thread only if the thread would otherwise sleep past the slack.
    fn spawn(&self, job: Job) -> Result<(), Box<Job>> {
        {
            // `closed` is read and written under the lock, so a task is either refused here or
            // seen by the thread before it exits.
            let mut commands = self.lock();
            if self.closed.load(Ordering::SeqCst) {
                return Err(Box::new(job));
            }
            commands.push(Command::Spawn(job));
        }
        self.notify(false);
        Ok(())
    }

    /// Queues a kill, which the thread takes before any new task and which wakes it at once.
    fn kill(&self, command: Command) {
        self.urgent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(command);
        self.notify(true);
    }

    fn take_urgent(&self) -> Vec<Command> {
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

    fn close(&self) {
        let _commands = self.lock();
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the thread may exit: closed, and nothing left to take.
    fn finished(&self) -> bool {
        let commands = self.lock();
        self.closed.load(Ordering::SeqCst)
            && commands.is_empty()
            && self.pending.load(Ordering::SeqCst) == 0
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    fn take(&self, into: &mut VecDeque<Command>) {
        let mut commands = self.lock();
        self.pending.fetch_sub(commands.len(), Ordering::SeqCst);
        into.extend(commands.drain(..));
    }

    /// Sleeps until `until` (or until woken), unless a job arrived meanwhile.
    fn park(&self, until: Option<Instant>) {
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

/// What a client asked for, as the scheduler needs it.
#[derive(Debug)]
pub struct TaskSpec {
    pub pid: Pid,
    pub name: String,
    /// The worker and module version the task runs, every attempt of it: a swap never
    /// reaches a task already accepted.
    pub version: Arc<Version>,
    pub duration: u32,
    pub payload: Option<String>,
    /// The task's wall-clock limit, counted from when each attempt starts.
    pub deadline: Duration,
    /// How many times the task may run in all: 1 never restarts it; more restarts it after a
    /// failure (a trap, a limit, `failed`, or a non-zero exit code), never after exit 0 or a
    /// kill, with exponential backoff and jitter between attempts.
    pub max_attempts: u32,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// When the task was accepted, or its restart was due: where its spawn-to-start time
    /// counts from.
    pub ready_at: Instant,
}

/// The first wait before a restart; it doubles with every attempt, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long to wait before attempt `attempt + 1`: exponential, with ±25 % jitter so tasks that
/// failed together do not all come back together.
fn backoff(pid: Pid, attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let exponential = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let noise = RandomState::new().hash_one((pid, attempt)) % 1000;
    exponential.mul_f64(0.75 + noise as f64 / 2000.0)
}

/// What a scheduler thread is asked to do, in order.
#[derive(Debug)]
enum Command {
    Spawn(Job),
    /// Kill this task if it is one of this thread's.
    Kill(Pid),
    /// Kill every task this thread holds (the end of a graceful shutdown).
    KillAll,
}

#[derive(Debug)]
struct Job {
    spec: TaskSpec,
    permit: Permit,
}

/// The handle the API uses to hand tasks to the scheduler threads.
#[derive(Debug)]
pub struct Scheduler {
    inboxes: Vec<Arc<Inbox>>,
    next: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    kills: Kills,
}

impl Scheduler {
    /// Starts `threads` scheduler threads running tasks and recording them in `ledger`.
    pub fn start(threads: usize, ledger: Arc<Ledger>) -> std::io::Result<Self> {
        let mut inboxes = Vec::new();
        let mut handles = Vec::new();
        let kills = Kills::default();
        for index in 0..threads.max(1) {
            let inbox = Arc::new(Inbox::new());
            let thread = SchedulerThread {
                ledger: Arc::clone(&ledger),
                kills: kills.clone(),
                inbox: Arc::clone(&inbox),
                intake: VecDeque::new(),
                slots: HashMap::new(),
                restarts: Vec::new(),
                tasks: Vec::new(),
                free: Vec::new(),
                timers: BinaryHeap::new(),
                timer_seq: 0,
            };
            let handle = std::thread::Builder::new()
                .name(format!("scheduler-{index}"))
                .stack_size(THREAD_STACK_BYTES)
                .spawn(move || thread.run())?;
            let _ = inbox.thread.set(handle.thread().clone());
            // The thread may have parked before its handle was known; let it look again.
            inbox.wake();
            inboxes.push(inbox);
            handles.push(handle);
        }
        Ok(Self {
            inboxes,
            next: AtomicUsize::new(0),
            threads: Mutex::new(handles),
            kills,
        })
    }

    /// Hands a task to a scheduler thread, round robin. Gives the spec back if no thread takes
    /// it, which only happens once the scheduler is shutting down.
    pub fn submit(&self, spec: TaskSpec, permit: Permit) -> Result<(), TaskSpec> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        self.inboxes[index]
            .spawn(Job { spec, permit })
            .map_err(|job| job.spec)
    }

    /// Asks every scheduler thread to kill `pid`; the one that holds it ends it, recorded as
    /// killed. A task in the middle of a step is killed when the step returns.
    pub fn kill(&self, pid: Pid) {
        // Stops the task within an epoch tick if it is in a step right now (or as soon as it
        // starts one); the command kills it if it is queued or asleep.
        self.kills.add(pid);
        for inbox in &self.inboxes {
            inbox.kill(Command::Kill(pid));
        }
    }

    /// Stops taking new tasks; those already taken run on.
    pub fn close(&self) {
        for inbox in &self.inboxes {
            inbox.close();
            inbox.wake();
        }
    }

    /// Kills every task, queued or running.
    pub fn kill_all(&self) {
        for inbox in &self.inboxes {
            inbox.kill(Command::KillAll);
        }
    }

    /// Stops taking tasks and waits for every task already taken to end.
    pub fn join(&self) {
        self.close();
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// A live task on its scheduler thread. `process` is declared before `permit` so the store is
/// dropped, and its pool slot freed, before the task's place is given back to admission.
struct Task {
    process: Process,
    permit: Permit,
    /// Kept only when the task may be restarted.
    respawn: Option<Box<TaskSpec>>,
    pid: Pid,
    worker: Arc<str>,
    /// When this attempt started.
    started: Instant,
    /// Steps completed: wake-ups after a sleep.
    step: u32,
    steps: u32,
    /// The sequence number of this task's pending timer; a timer left behind by a task that
    /// was killed, whose slot another task took since, does not match.
    wake: u64,
    /// When the task's wall-clock limit runs out.
    deadline: Instant,
}

struct SchedulerThread {
    ledger: Arc<Ledger>,
    kills: Kills,
    inbox: Arc<Inbox>,
    /// Commands taken from the inbox, not yet carried out, oldest first.
    intake: VecDeque<Command>,
    /// Where each live task of this thread sits in `tasks`.
    slots: HashMap<Pid, usize>,
    /// Tasks waiting out their backoff before the next attempt, with when it is due.
    restarts: Vec<(Instant, Job)>,
    tasks: Vec<Option<Task>>,
    free: Vec<usize>,
    /// Wake-ups in time order; the sequence number keeps equal deadlines first-in first-out.
    timers: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    timer_seq: u64,
}

impl SchedulerThread {
    fn run(mut self) {
        loop {
            for command in self.inbox.take_urgent() {
                match command {
                    Command::Kill(pid) => self.kill(pid),
                    Command::KillAll => self.kill_all(),
                    Command::Spawn(job) => self.spawn(job),
                }
            }
            if self.slots.is_empty() {
                // Only timers of tasks killed before they woke; nothing to wake for.
                self.timers.clear();
            }
            self.restart_due();
            self.fire_due_timers();
            if self.intake.is_empty() {
                self.inbox.take(&mut self.intake);
            }
            // Oldest first, a batch at a time, so timers are looked at between batches.
            let mut took = false;
            for _ in 0..INTAKE_BATCH {
                let Some(command) = self.intake.pop_front() else {
                    break;
                };
                match command {
                    Command::Spawn(job) => self.spawn(job),
                    Command::Kill(pid) => self.kill(pid),
                    Command::KillAll => self.kill_all(),
                }
                took = true;
            }
            if took || !self.intake.is_empty() {
                continue;
            }
            let next_restart = self.restarts.iter().map(|(at, _)| *at).min();
            let next_timer = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| *at)
                .into_iter()
                .chain(next_restart)
                .min()
                .map(|at| at + TIMER_SLACK);
            if next_timer.is_none() && self.inbox.finished() {
                // Closed, nothing queued, and every task taken has ended.
                return;
            }
            self.inbox.park(next_timer);
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, seq, slot))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(task) = self.tasks[slot].as_mut().filter(|task| task.wake == seq) else {
                continue;
            };
            if now >= task.deadline {
                let end = deadline_exceeded(task.step);
                self.finish(slot, end);
                continue;
            }
            task.step += 1;
            let (pid, step, steps) = (task.pid, task.step, task.steps);
            let fuel = task.process.fuel();
            tracing::info!(pid = %pid, worker = %task.worker, step, steps, "Worker progress");
            self.ledger
                .table()
                .apply(pid, TaskEvent::Progress { step, steps, fuel });
            self.advance(slot);
        }
    }

    /// Instantiates and starts a new task, then runs its first step.
    fn spawn(&mut self, Job { spec, permit }: Job) {
        let pid = spec.pid;
        if self.kills.contains(pid) {
            // Killed before it reached this thread: the kill command found nothing to end.
            let ending = Ending::unstarted(killed());
            return self.record_end(permit, pid, spec.version.worker(), ending);
        }
        let table = self.ledger.table();
        let begun = Instant::now();
        let deadline = begun + spec.deadline;
        let kills = self.kills.clone();
        // What a failed `start` burnt, which goes with the store.
        let mut spent = 0;
        let started = guarded(|| {
            let limits = TaskLimits { deadline, kills };
            let mut process = spec.version.module.instantiate(pid, limits)?;
            let steps = process
                .start(pid, &spec.name, spec.duration, spec.payload.as_deref())
                .inspect_err(|_| {
                    spent = process.fuel();
                    // Keep what the guest logged before it failed.
                    flush_logs(table, pid, &process);
                })?;
            Ok((process, steps))
        });
        match started {
            Ok((process, steps)) => {
                let worker = Arc::clone(spec.version.worker());
                let now = Instant::now();
                self.ledger.started(
                    pid,
                    &worker,
                    steps,
                    process.fuel(),
                    now - begun,
                    now.saturating_duration_since(spec.ready_at),
                );
                tracing::info!(
                    pid = %pid,
                    worker = %worker,
                    step = 0,
                    name = %spec.name,
                    steps,
                    attempt = spec.attempt,
                    "Worker started"
                );
                flush_logs(self.ledger.table(), pid, &process);
                let task = Task {
                    process,
                    permit,
                    respawn: (spec.attempt < spec.max_attempts).then(|| Box::new(spec)),
                    pid,
                    worker,
                    started: begun,
                    step: 0,
                    steps,
                    wake: 0,
                    deadline,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.tasks[slot] = Some(task);
                        slot
                    }
                    None => {
                        self.tasks.push(Some(task));
                        self.tasks.len() - 1
                    }
                };
                self.slots.insert(pid, slot);
                self.advance(slot);
            }
            Err(end) => {
                let job = Job { spec, permit };
                self.end_or_restart(job, 0, spent, end, Some(begun.elapsed()));
            }
        }
    }

    /// Runs one step of the task in `slot`, then files its wake-up or ends it.
    fn advance(&mut self, slot: usize) {
        let Some(task) = self.tasks[slot].as_mut() else {
            return;
        };
        let step = task.step;
        let next = guarded(|| task.process.step(step));
        flush_logs(self.ledger.table(), task.pid, &task.process);
        let end = match next {
            Ok(Next::Sleep(ms)) => {
                // A sleep past the deadline wakes at the deadline, to end there.
                let at = (Instant::now() + Duration::from_millis(u64::from(ms))).min(task.deadline);
                self.timer_seq += 1;
                task.wake = self.timer_seq;
                self.timers.push(Reverse((at, self.timer_seq, slot)));
                return;
            }
            Ok(Next::Done(code)) => TaskEnd {
                status: Status::Exited,
                outcome: Outcome::Exit,
                exit_code: Some(code),
                error: None,
            },
            Ok(Next::Failed(message)) => TaskEnd {
                status: Status::Failed,
                outcome: Outcome::GuestError,
                exit_code: None,
                error: Some(message),
            },
            Err(end) => end,
        };
        self.finish(slot, end);
    }

    /// Ends the task in `slot`: its last log lines, then its store, then its permit, and only
    /// then the recorded end, so whoever reads the end sees the capacity already given back.
    fn finish(&mut self, slot: usize, end: TaskEnd) {
        let Some(task) = self.tasks[slot].take() else {
            return;
        };
        self.slots.remove(&task.pid);
        self.free.push(slot);
        task.process.capture().flush_partial();
        flush_logs(self.ledger.table(), task.pid, &task.process);
        let (pid, step, fuel) = (task.pid, task.step, task.process.fuel());
        let ran = task.started.elapsed();
        let Task {
            process,
            permit,
            respawn,
            worker,
            ..
        } = task;
        drop(process);
        match respawn {
            Some(spec) => self.end_or_restart(
                Job {
                    spec: *spec,
                    permit,
                },
                step,
                fuel,
                end,
                Some(ran),
            ),
            None => {
                let ran = Some(ran);
                let ending = Ending {
                    step,
                    fuel,
                    end,
                    ran,
                };
                self.record_end(permit, pid, &worker, ending);
            }
        }
    }

    /// Ends an attempt: restarts the task later if its policy allows (keeping its place),
    /// or records its end and gives its place back.
    /// The attempt ended at `step`; `ran` is how long it ran, if it started.
    fn end_or_restart(
        &mut self,
        mut job: Job,
        step: u32,
        fuel: u64,
        end: TaskEnd,
        ran: Option<Duration>,
    ) {
        let pid = job.spec.pid;
        let failed = end.status == Status::Failed
            || (end.status == Status::Exited && end.exit_code != Some(0));
        let closing = self.inbox.closed.load(Ordering::SeqCst);
        if !failed || closing || job.spec.attempt >= job.spec.max_attempts {
            let ending = Ending {
                step,
                fuel,
                end,
                ran,
            };
            return self.record_end(job.permit, pid, job.spec.version.worker(), ending);
        }
        let wait = backoff(pid, job.spec.attempt);
        tracing::info!(
            pid = %pid,
            worker = %job.spec.version.worker(),
            step,
            attempt = job.spec.attempt,
            outcome = end.outcome.as_str(),
            ?wait,
            "Worker failed, restarting"
        );
        job.spec.attempt += 1;
        let next_attempt = job.spec.attempt;
        let worker = job.spec.version.worker();
        self.ledger.restarting(pid, worker, fuel, end, next_attempt);
        let due = Instant::now() + wait;
        job.spec.ready_at = due;
        self.restarts.push((due, job));
    }

    /// Starts the tasks whose backoff is over.
    fn restart_due(&mut self) {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restarts)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.restarts = waiting;
        for (_, job) in due {
            self.spawn(job);
        }
    }

    /// Kills `pid` if this thread holds it, queued or live.
    fn kill(&mut self, pid: Pid) {
        if let Some(slot) = self.slots.get(&pid).copied() {
            self.finish(slot, killed());
            return;
        }
        let queued = self
            .intake
            .iter()
            .position(|command| matches!(command, Command::Spawn(job) if job.spec.pid == pid));
        if let Some(Command::Spawn(job)) = queued.and_then(|index| self.intake.remove(index)) {
            let ending = Ending::unstarted(killed());
            self.record_end(job.permit, pid, job.spec.version.worker(), ending);
            return;
        }
        if let Some(index) = self
            .restarts
            .iter()
            .position(|(_, job)| job.spec.pid == pid)
        {
            let (_, job) = self.restarts.remove(index);
            let ending = Ending::unstarted(killed());
            self.record_end(job.permit, pid, job.spec.version.worker(), ending);
        }
    }

    fn kill_all(&mut self) {
        let queued: Vec<Job> = self
            .intake
            .drain(..)
            .filter_map(|command| match command {
                Command::Spawn(job) => Some(job),
                Command::Kill(_) | Command::KillAll => None,
            })
            .collect();
        let restarting = std::mem::take(&mut self.restarts)
            .into_iter()
            .map(|(_, job)| job);
        for job in queued.into_iter().chain(restarting) {
            let pid = job.spec.pid;
            let ending = Ending::unstarted(killed());
            self.record_end(job.permit, pid, job.spec.version.worker(), ending);
        }
        let live: Vec<usize> = self.slots.values().copied().collect();
        for slot in live {
            self.finish(slot, killed());
        }
        self.timers.clear();
    }

    /// Records the end of a task whose store is gone: its end time first, then its place
    /// given back, then the end recorded, so whoever reads the end sees the place free.
    fn record_end(&self, permit: Permit, pid: Pid, worker: &Arc<str>, ending: Ending) {
        let at = SystemTime::now();
        drop(permit);
        self.kills.remove(pid);
        self.ledger.ended(pid, worker, ending, at);
    }
}

fn flush_logs(table: &dyn ProcessTable, pid: Pid, process: &Process) {
    let (lines, dropped_bytes) = process.capture().take();
    if !lines.is_empty() || dropped_bytes > 0 {
        table.apply(
            pid,
            TaskEvent::Logs {
                lines,
                dropped_bytes,
            },
        );
    }
}

/// Runs guest-facing host code so that a bug in it ends one task, recorded, instead of taking
/// the scheduler thread and every task on it down.
fn guarded<T>(f: impl FnOnce() -> Result<T, TaskEnd>) -> Result<T, TaskEnd> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(%message, "host panic while running a task");
        Err(TaskEnd {
            status: Status::Failed,
            outcome: Outcome::Trap,
            exit_code: None,
            error: Some(format!("host error: {message}")),
        })
    })
}
