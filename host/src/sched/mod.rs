//! The scheduler: a few plain OS threads, each running many tasks, as Erlang's schedulers do,
//! behind admission.
//!
//! A task is admitted (a place, or a place in the wait queue), then placed on one scheduler
//! thread by its pid, and stays there for its whole life, restarts included: a kill therefore
//! goes to that one thread, never to all. The thread owns its tasks outright: their stores,
//! their places and a timer heap. It instantiates a task when it arrives, calls `step`, and
//! when the guest asks to sleep, files a timer and moves on. Between steps a task costs its
//! store and one heap entry: no thread, no stack, no future. Steps never run on the async
//! runtime's threads, so a compute-bound step (bounded by its fuel) cannot starve the HTTP
//! server, and WASI's synchronous host calls run outside any async context, as they require.
//!
//! - [`admission`]: places and the wait queue;
//! - `inbox`: how commands reach a thread, and how it sleeps;
//! - `thread`: the loop that runs tasks, timers and restarts.

mod admission;
mod inbox;
mod later;
mod limits;
mod paused;
mod thread;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub use admission::Refused;
use admission::{Admission, Admitted, Permit, Queued, Reservation};
use inbox::{Command, Inbox};
use later::Later;
pub use later::Refused as NotScheduled;
use limits::Limits;
use paused::Paused;
use thread::SchedulerThread;

use crate::actor::{Actors, Aftermath, Kernel, Told};
use crate::ledger::{Ending, Ledger};
use crate::model::{CheckpointPolicy, Pid, StoredCheckpoint, TaskEnd, TaskRecord, TaskSpec};
use crate::registry::Version;
use crate::runtime::Interrupts;

/// A scheduler thread runs wasm on its own stack; leave room above wasmtime's default 512 KiB
/// wasm stack limit for the host frames around it.
const THREAD_STACK_BYTES: usize = 4 << 20;

/// A task as a scheduler thread runs it: what the client asked for, resolved.
#[derive(Debug)]
pub struct Job {
    pub pid: Pid,
    pub name: Arc<str>,
    /// The worker and module version the task runs, every attempt of it: a swap never
    /// reaches a task already accepted.
    pub version: Arc<Version>,
    pub duration: u32,
    pub payload: Option<String>,
    /// The task's wall-clock limit, counted from when each attempt starts.
    pub deadline: Duration,
    /// How many times the task may run in all: 1 never restarts it; more restarts it after a
    /// failure (see [`TaskEnd::is_failure`](crate::model::TaskEnd::is_failure)) with
    /// exponential backoff and jitter between attempts.
    pub max_attempts: u32,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// When the task was accepted, or its restart was due: where its spawn-to-start time
    /// counts from.
    pub ready_at: Instant,
    /// The task that spawned it, if a task did.
    pub parent: Option<Pid>,
    /// Its place among waiting tasks, 0 to 9: higher starts first.
    pub priority: u8,
    /// Its `concurrency_key`, for its worker's limits.
    pub key: Option<Arc<str>>,
    /// Whether its worker's limits counted it: as running, and in its rate.
    pub counted: (bool, bool),
    /// When it is checkpointed between steps, and whether that is its own policy (kept in
    /// its checkpoint row) rather than its worker's.
    pub checkpoint: (CheckpointPolicy, bool),
    /// The checkpoint to resume it from instead of starting it, after its host was lost.
    pub resume: Option<Box<Resume>>,
}

/// A task to resume from a checkpoint: its image, and its checkpoint row as it stood.
#[derive(Debug)]
pub struct Resume {
    pub image: crate::runtime::Image,
    pub row: StoredCheckpoint,
    /// The steps it planned, as its record says.
    pub steps: u32,
    /// When its attempt started: its wall-clock limit counts from then.
    pub started_at: Option<std::time::SystemTime>,
}

impl Job {
    /// A task run again from what the store holds of it (`record`, `spec`): after its host
    /// was lost, or claimed from a cluster's shared queue; as attempt `attempt`, ready at
    /// `ready_at`. A host loss never costs a task one of its restarts after failures: the
    /// attempts its hosts lost, `host_losses`, are added to those it may make.
    pub fn again(
        record: TaskRecord,
        spec: TaskSpec,
        version: Arc<Version>,
        attempt: u32,
        host_losses: u32,
        ready_at: Instant,
        checkpoint: (CheckpointPolicy, bool),
    ) -> Self {
        Self {
            pid: record.pid,
            name: record.name.into(),
            version,
            duration: record.duration,
            payload: spec.payload,
            deadline: Duration::from_secs(u64::from(spec.deadline_secs)),
            max_attempts: spec.max_attempts + host_losses,
            attempt,
            ready_at,
            key: record.concurrency_key.as_deref().map(Arc::from),
            parent: record.parent,
            priority: spec.priority,
            counted: (false, false),
            checkpoint,
            resume: None,
        }
    }
}

impl limits::Limited for Job {
    fn pid(&self) -> Pid {
        self.pid
    }
    fn worker(&self) -> &Arc<str> {
        self.version.worker()
    }
    fn key(&self) -> Option<&Arc<str>> {
        self.key.as_ref()
    }
    fn counted(&self) -> (bool, bool) {
        self.counted
    }
    fn count(&mut self, running: bool, rated: bool) {
        self.counted = (running, rated);
    }
}

impl Queued for Job {
    fn pid(&self) -> Pid {
        self.pid
    }
    fn priority(&self) -> u8 {
        self.priority
    }
}

/// One scheduler thread as the others see it: where its commands go, and where kills of its
/// running steps are posted.
#[derive(Debug)]
struct Lane {
    inbox: Inbox,
    interrupts: Interrupts,
}

/// The scheduler threads, admission and the ledger: shared by the host and by the threads
/// themselves, which hand a freed place to the next waiting task.
#[derive(Debug)]
struct Lanes {
    lanes: Vec<Lane>,
    admission: Arc<Admission<Job>>,
    /// Tasks accepted to run later, until they are due.
    later: Arc<Later<Job>>,
    /// Paused workers, and the tasks they hold from starting.
    paused: Paused<Job>,
    /// Workers' concurrency and rate limits, and the tasks they hold from starting.
    limits: Limits<Job>,
    ledger: Arc<Ledger>,
    actors: Arc<Actors>,
    /// The host, for the actor calls of running tasks; set once the host is built (weak: the
    /// host owns the scheduler).
    kernel: OnceLock<Weak<dyn Kernel>>,
    /// Set as the host shuts down to hand tasks that take checkpoints on (see
    /// [`Scheduler::finish`]).
    hand_over: std::sync::atomic::AtomicBool,
}

impl Lanes {
    /// The thread that owns `pid`, for its whole life.
    fn of(&self, pid: Pid) -> &Lane {
        // Pids are handed out in sequence, so this spreads tasks round robin.
        &self.lanes[(pid.seq() % self.lanes.len() as u64) as usize]
    }

    /// Hands `job` to its thread. A thread takes no more tasks only once the scheduler shuts
    /// down; a job refused then ends there, recorded, and its place is given back.
    fn run(&self, job: Job, permit: Permit<Job>) {
        if let Err(job) = self.of(job.pid).inbox.run(job, permit) {
            self.record_unstarted(&job, TaskEnd::shut_down_before_start());
        }
    }

    /// Gives a place back, handing it to the oldest waiting task if there is one.
    fn release(&self, permit: Permit<Job>) {
        if let Some((next, permit)) = permit.release() {
            self.run(next, permit);
        }
    }

    /// Records the end of a task that never reached a thread, and forgets any kill of it.
    fn record_unstarted(&self, job: &Job, end: TaskEnd) {
        self.uncount(job);
        let at = SystemTime::now();
        let ending = Ending::unstarted(end, job.attempt);
        let (pid, interrupts) = (job.pid, self.of(job.pid).interrupts.clone());
        let aftermath = self.end_actor(pid, &ending.end);
        self.ledger.ended(
            pid,
            job.version.worker(),
            &job.name,
            ending,
            at,
            None,
            move || {
                interrupts.remove(pid);
            },
        );
        self.follow(pid, aftermath);
    }

    /// Gives back what `job`'s worker's limits counted of it, counted as running and ending
    /// now without running (or again): the held tasks that may run now are admitted.
    fn uncount(&self, job: &Job) {
        if job.counted.0 {
            self.release_limits(job.version.worker(), job.key.as_ref());
        }
    }

    /// A task of `worker` with `key`, counted as running, has ended: the held tasks that may
    /// run now are admitted.
    fn release_limits(&self, worker: &Arc<str>, key: Option<&Arc<str>>) {
        // Admitted under the limits' lock (see `Lanes::kill`); one admission refuses, the host
        // shutting down, stays held and is handed back by `close`.
        self.limits
            .done(worker, key, |job| Scheduler::admit(self, job));
    }

    /// Forgets the actor `pid` that ends, and tells its monitors and the linked tasks that
    /// trap exits, publishing each notice's event before its receiver can take it.
    fn end_actor(&self, pid: Pid, end: &TaskEnd) -> Aftermath {
        let events = self.ledger.events();
        let outcome = end.outcome.as_str();
        self.actors.ended(pid, end, |told| match told {
            Told::Down { watcher } => events.down(watcher, pid, outcome),
            Told::Trapped { linked } => events.linked_exit(linked, pid, outcome, true),
        })
    }

    /// Carries out the rest of what a task's end means: wakes the tasks told while they
    /// waited in `receive`, and kills the linked tasks that do not trap exits.
    fn follow(&self, pid: Pid, aftermath: Aftermath) {
        if aftermath.wake.is_empty() && aftermath.kill.is_empty() && aftermath.remote.is_empty() {
            return;
        }
        if let (Some(notice), false) = (&aftermath.notice, aftermath.remote.is_empty())
            && let Some(kernel) = self.kernel.get().and_then(Weak::upgrade)
        {
            for linked in &aftermath.remote {
                kernel.exit_remote(*linked, notice);
            }
        }
        for woken in aftermath.wake {
            self.wake(woken);
        }
        let Some(notice) = aftermath.notice else {
            return;
        };
        let (outcome, how) = (notice.outcome_str(), notice.describe());
        for linked in aftermath.kill {
            self.ledger
                .events()
                .linked_exit(linked, pid, outcome, false);
            self.kill(linked, TaskEnd::linked_exit(pid, &how), false);
        }
    }

    /// Stops every task of every thread as `end`: running steps within an epoch tick.
    fn stop_every_thread(&self, end: &TaskEnd) {
        for lane in &self.lanes {
            lane.interrupts.stop_all(end.clone());
            lane.inbox.kill(Command::KillAll(end.clone()));
        }
    }

    /// Wakes `pid`, waiting in `receive`, for the entry just put in its mailbox.
    fn wake(&self, pid: Pid) {
        self.of(pid).inbox.kill(Command::Wake(pid));
    }

    /// Ends `pid` with `end`: at once if it waits in the queue or sleeps; a running step is
    /// stopped within an epoch tick when `interrupt` is set, else when it returns.
    fn kill(&self, pid: Pid, end: TaskEnd, interrupt: bool) {
        // Where a waiting task moves from before where it moves to: the scheduled tasks hand
        // theirs to admission under their lock, as the paused workers and the limits do, so a
        // task on its way is found in the second place looked at.
        if let Some(job) = self
            .later
            .unqueue(pid)
            .or_else(|| self.paused.unqueue(pid))
            .or_else(|| self.limits.unqueue(pid))
            .or_else(|| self.admission.unqueue(pid))
        {
            self.record_unstarted(&job, end);
            return;
        }
        let lane = self.of(pid);
        if interrupt {
            // Stops a running step at its next epoch tick, and a task whose spawn is still on
            // its way to the thread before it is instantiated; the command ends it if it
            // sleeps.
            lane.interrupts.add(pid);
        }
        lane.inbox.kill(Command::Kill(pid, end));
    }
}

/// Where a recorded task went.
#[derive(Debug)]
pub enum Placed {
    /// To its scheduler thread, to start now.
    Running,
    /// Into the wait queue: every place is taken.
    Queued,
    /// Nowhere: the host began to shut down meanwhile. Nothing is recorded of it: its
    /// acceptance is in the store, and the caller decides what becomes of it (it runs after
    /// the restart, or on another host of a cluster).
    Refused(Box<Job>),
}

/// A place, or a place in the wait queue, promised to a task before it is recorded; dropping
/// it gives it back.
#[derive(Debug)]
pub struct Promise(Reservation<Job>);

impl Promise {
    /// Whether it is a place to run at once, not a place in the queue.
    pub fn is_place(&self) -> bool {
        matches!(self.0, Reservation::Place(_))
    }
}

/// How many tasks may be live at once, wait for a place, and wait for their time.
#[derive(Debug, Clone, Copy)]
pub struct Places {
    pub capacity: u32,
    pub max_queue: usize,
    pub max_scheduled: usize,
}

/// The handle the host uses to admit tasks and hand them to the scheduler threads; cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    lanes: Arc<Lanes>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Scheduler {
    /// Starts `threads` scheduler threads at niceness `nice`, behind admission for the
    /// `places` live, waiting and scheduled tasks may take, under the limits of `workers` (none
    /// on a host of a cluster, whose shared store counts them), recording what happens in
    /// `ledger`. Given an async `runtime`, the threads enter its context (they never run its tasks): on a host of
    /// a cluster, a task's actor call that waits for the database also waits on the runtime's
    /// timers, to stop waiting should the host lose its lease.
    pub fn start(
        threads: usize,
        nice: i32,
        Places {
            capacity,
            max_queue,
            max_scheduled,
        }: Places,
        workers: Option<&[crate::config::WorkerConfig]>,
        ledger: Arc<Ledger>,
        actors: Arc<Actors>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> std::io::Result<Self> {
        let lanes = Arc::new(Lanes {
            lanes: (0..threads.max(1))
                .map(|_| Lane {
                    inbox: Inbox::new(),
                    interrupts: Interrupts::default(),
                })
                .collect(),
            admission: Admission::new(capacity, max_queue),
            later: Arc::new(Later::new(max_scheduled)),
            paused: Paused::new(),
            limits: Limits::new(workers),
            ledger,
            actors,
            kernel: OnceLock::new(),
            hand_over: std::sync::atomic::AtomicBool::new(false),
        });
        let mut handles = Vec::new();
        for index in 0..lanes.lanes.len() {
            let thread = SchedulerThread::new(index, Arc::clone(&lanes));
            let runtime = runtime.clone();
            let handle = std::thread::Builder::new()
                .name(format!("scheduler-{index}"))
                .stack_size(THREAD_STACK_BYTES)
                .spawn(move || {
                    crate::sys::set_thread_nice(nice);
                    let _context = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    thread.run();
                })?;
            let inbox = &lanes.lanes[index].inbox;
            let _ = inbox.thread.set(handle.thread().clone());
            // The thread may have parked before its handle was known; let it look again.
            inbox.wake();
            handles.push(handle);
        }
        // Holds the lanes only while it hands a task on: a host dropped without a shutdown
        // leaves this thread asleep, holding nothing but the scheduled tasks.
        let (weak, later) = (Arc::downgrade(&lanes), Arc::clone(&lanes.later));
        let handle = std::thread::Builder::new()
            .name("scheduled".into())
            .spawn(move || {
                later.run(|job| {
                    let pid = job.pid;
                    let admitted = weak.upgrade().map(|lanes| Self::admit(&lanes, job));
                    if !matches!(admitted, Some(Ok(()))) {
                        // Admission closes only after this map does (see `close`).
                        tracing::error!(pid = %pid, "a scheduled task found admission closed");
                    }
                });
            })?;
        handles.push(handle);
        Ok(Self {
            lanes,
            threads: Arc::new(Mutex::new(handles)),
        })
    }

    /// Connects running tasks' actor calls to the host; call once, before any task runs.
    pub fn connect(&self, kernel: Weak<dyn Kernel>) {
        let _ = self.lanes.kernel.set(kernel);
    }

    /// Wakes `pid`, waiting in `receive`, for an entry just put in its mailbox.
    pub fn wake(&self, pid: Pid) {
        self.lanes.wake(pid);
    }

    /// Promises a new task a place, or a place in the queue, before it is recorded; or
    /// refuses it: the host is full, or shutting down.
    pub fn promise(&self) -> Result<Promise, Refused> {
        self.lanes.admission.reserve().map(Promise)
    }

    /// Places a task once it is recorded, where `promise` said: on its thread, or in the
    /// queue; or nowhere, once the scheduler shuts down.
    pub fn place(&self, promise: Promise, job: Job) -> Placed {
        let admitted = match promise.0 {
            Reservation::Place(permit) => Ok(Admitted::Now(job, permit)),
            Reservation::Queue(slot) => self.lanes.admission.fill(slot, job),
        };
        match admitted {
            // Its place is given back as the permit drops with the refusal.
            Ok(Admitted::Now(job, permit)) => match self.lanes.of(job.pid).inbox.run(job, permit) {
                Ok(()) => Placed::Running,
                Err(job) => Placed::Refused(job),
            },
            Ok(Admitted::Queued) => Placed::Queued,
            Err(job) => Placed::Refused(Box::new(job)),
        }
    }

    /// Gives back a promise whose task could not be recorded: a place passes to the oldest
    /// waiting task.
    pub fn break_promise(&self, promise: Promise) {
        if let Reservation::Place(permit) = promise.0 {
            self.lanes.release(permit);
        }
    }

    /// Places a task found unfinished in the store at start, or claimed from a cluster's
    /// shared queue, in the order they were accepted: the queue takes it even past its limit.
    /// Once the scheduler shuts down, it is given back, nothing recorded.
    pub fn readmit(&self, job: Job) -> Result<(), Box<Job>> {
        Self::admit(&self.lanes, job)
    }

    fn admit(lanes: &Lanes, job: Job) -> Result<(), Box<Job>> {
        match lanes.admission.readmit(job) {
            Ok(Admitted::Now(job, permit)) => lanes.of(job.pid).inbox.run(job, permit),
            Ok(Admitted::Queued) => Ok(()),
            Err(job) => Err(Box::new(job)),
        }
    }

    /// Promises a task accepted to run later a place among the scheduled ones, before it is
    /// recorded; or refuses it: `--max-scheduled` wait already, or the host is shutting down.
    pub fn promise_later(&self) -> Result<(), NotScheduled> {
        self.lanes.later.promise()
    }

    /// Gives back a promise of [`Scheduler::promise_later`] whose task was not recorded.
    pub fn break_later(&self) {
        self.lanes.later.unpromise();
    }

    /// Holds a recorded task until its `ready_at`, then admits it as [`Scheduler::readmit`]
    /// does; `promised` if [`Scheduler::promise_later`] promised it a place (a task recovered
    /// from the store was not). Once the scheduler shuts down, it is given back.
    pub fn schedule(&self, job: Job, promised: bool) -> Result<(), Box<Job>> {
        let due = job.ready_at;
        self.lanes.later.fill(job, due, promised).map_err(Box::new)
    }

    /// Tasks accepted to run later, not yet due.
    pub fn scheduled(&self) -> usize {
        self.lanes.later.len()
    }

    /// Pauses `worker`: its tasks that are about to start wait, holding no place, until it is
    /// resumed; those running go on.
    pub fn pause(&self, worker: &str) {
        self.lanes.paused.pause(worker);
    }

    /// Resumes `worker`: the tasks it held are admitted again, in the order they were held.
    pub fn resume(&self, worker: &str) {
        // Admitted under the paused workers' lock (see `Lanes::kill`); one admission refuses,
        // the host shutting down, stays held and is handed back by `close`.
        self.lanes
            .paused
            .resume(worker, |job| Self::admit(&self.lanes, job));
    }

    /// Whether `worker` is paused.
    pub fn is_paused(&self, worker: &str) -> bool {
        self.lanes.paused.is_paused(worker)
    }

    /// The paused workers.
    pub fn paused(&self) -> Vec<String> {
        self.lanes.paused.workers()
    }

    /// How many tasks `worker`, paused, holds from starting.
    pub fn held(&self, worker: &str) -> usize {
        self.lanes.paused.held(worker)
    }

    /// How many of `worker`'s tasks its limits count as running here, and how many they hold
    /// from starting; none for a worker without limits.
    pub fn limited(&self, worker: &str) -> Option<(u32, usize)> {
        self.lanes.limits.of(worker)
    }

    /// Sets `worker`'s limits (none: it has none); the tasks held that they now leave room for
    /// start, round robin between keys, as places free. A new rate checks again, at once, the
    /// tasks waiting for a turn under the old one.
    pub fn set_limits(&self, worker: &str, limits: crate::config::FlowLimits) {
        let lanes = &self.lanes;
        let worker: Arc<str> = Arc::from(worker);
        let rate_changed = lanes
            .limits
            .set(&worker, limits, |job| Scheduler::admit(lanes, job));
        if rate_changed {
            let now = Instant::now();
            lanes.later.hurry(
                |job| {
                    // Waiting for its turn: counted in the rate, not yet running.
                    let turn = job.version.worker() == &worker && job.counted == (false, true);
                    if turn {
                        job.counted = (false, false);
                        job.ready_at = now;
                    }
                    turn
                },
                now,
            );
        }
    }

    /// Kills `pid`: at once if it waits in the queue or sleeps, within an epoch tick if a step
    /// of it runs (when the step returns, without epoch interruption). Its end is recorded as
    /// `killed`. Only the task's own thread is asked.
    pub fn kill(&self, pid: Pid) {
        self.lanes.kill(pid, TaskEnd::killed(), true);
    }

    /// Ends `pid` with `end` (`linked_exit`): at once if it waits or sleeps, when its step
    /// returns if one runs.
    pub fn end(&self, pid: Pid, end: TaskEnd) {
        self.lanes.kill(pid, end, false);
    }

    /// Forgets a kill of `pid`, which had ended before the kill was posted.
    pub fn forget_kill(&self, pid: Pid) {
        self.lanes.of(pid).interrupts.remove(pid);
    }

    /// Records the end of `job`, which never reached a thread (a task waiting for a place at a
    /// shutdown, refused a place, or handed back by [`Scheduler::close`]).
    pub fn end_unstarted(&self, job: &Job, end: TaskEnd) {
        self.lanes.record_unstarted(job, end);
    }

    /// Begins a shutdown: refuses new tasks at once, and hands back the tasks waiting for a
    /// place, none of them ended: the caller decides what becomes of them.
    pub fn close(&self) -> Vec<Job> {
        // The scheduled tasks first, then admission, which takes those falling due meanwhile:
        // from here no waiting task is handed to a thread.
        let mut waiting = self.lanes.later.close();
        waiting.extend(self.lanes.admission.close());
        waiting.extend(self.lanes.paused.close());
        waiting.extend(self.lanes.limits.drain());
        for lane in &self.lanes.lanes {
            lane.inbox.close();
            lane.inbox.wake();
        }
        waiting
    }

    /// Stops every task at once, the waiting ones included, and goes on taking new ones: a
    /// host of a cluster that lost its lease, whose tasks other hosts run now. A running step
    /// is interrupted within an epoch tick, and no task takes another step. Their ends are
    /// recorded as for a kill, and the store refuses them.
    pub fn stop_all(&self, end: TaskEnd) {
        self.lanes.stop_every_thread(&end);
        let mut waiting = self.lanes.later.drain();
        waiting.extend(self.lanes.admission.drain());
        waiting.extend(self.lanes.paused.drain());
        waiting.extend(self.lanes.limits.drain());
        for waiting in waiting {
            self.lanes.record_unstarted(&waiting, end.clone());
        }
    }

    /// Ends a shutdown begun by [`Scheduler::close`]: gives running tasks `grace` to end,
    /// kills the rest, and returns once every task's end is recorded and the threads are gone.
    ///
    /// With `hand_over`, a task that takes checkpoints and waits between two steps when the
    /// grace is over is checkpointed and let go without an end: it resumes from there when a
    /// host starts on the store again.
    pub fn finish(&self, grace: Duration, hand_over: bool) {
        if !self.lanes.admission.wait_idle(Instant::now() + grace) {
            tracing::warn!(
                remaining = self.live(),
                hand_over,
                "grace period over; handing on the remaining tasks that take checkpoints, \
                 killing the others"
            );
            self.lanes
                .hand_over
                .store(hand_over, std::sync::atomic::Ordering::Release);
            if hand_over {
                // A step under way ends first, so that its task can be handed on after it,
                // rather than be stopped within it and killed: steps are bounded by their fuel.
                for lane in &self.lanes.lanes {
                    lane.inbox.kill(Command::KillAll(TaskEnd::killed()));
                }
            } else {
                self.lanes.stop_every_thread(&TaskEnd::killed());
            }
        }
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

    /// Checkpoints and lets go, without an end, every task that takes checkpoints and waits
    /// between two steps, on every thread: their pids, once each thread has done so (within
    /// `wait`). A task in a step goes on here.
    pub fn hand_over_all(&self, wait: Duration) -> Vec<Pid> {
        let (sender, receiver) = std::sync::mpsc::channel();
        for lane in &self.lanes.lanes {
            lane.inbox.kill(Command::HandOver(sender.clone()));
        }
        drop(sender);
        let deadline = Instant::now() + wait;
        let mut handed = Vec::new();
        for _ in &self.lanes.lanes {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(pids) => handed.extend(pids),
                Err(_) => break,
            }
        }
        handed
    }

    /// Tasks holding a place now: running, sleeping or waiting out a restart's backoff.
    pub fn live(&self) -> u32 {
        self.lanes.admission.live()
    }

    /// How long the oldest new task waiting for a scheduler thread has waited, on the thread
    /// furthest behind: a task accepted now waits at least as long. `None` while none waits.
    pub fn start_lag(&self) -> Option<Duration> {
        self.lanes
            .lanes
            .iter()
            .filter_map(|lane| lane.inbox.start_lag())
            .max()
    }

    /// The most tasks that may be live at once.
    pub fn capacity(&self) -> u32 {
        self.lanes.admission.limit()
    }

    /// Tasks waiting for a place.
    pub fn queued(&self) -> usize {
        self.lanes.admission.queued()
    }

    /// The most tasks that may wait.
    pub fn queue_limit(&self) -> usize {
        self.lanes.admission.queue_limit()
    }
}
