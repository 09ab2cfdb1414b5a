//! One scheduler thread: the loop that takes commands, instantiates tasks, runs their steps,
//! fires their timers, restarts failed attempts after their backoff, and records their ends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::admission::Permit;
use super::inbox::{Command, TIMER_SLACK};
use super::limits::Gate;
use super::{Job, Lane, Lanes};
use crate::actor::{Awaited, Carriage, Reply, Wake};
use crate::ledger::{Ending, FreshLogs, Ledger, Progress};
use crate::model::{
    CheckpointPolicy, Pid, Printable, Resumed, StoredCheckpoint, Taken, TaskEnd, Waiting,
};
use crate::runtime::{Next, Process, StartSpec, TaskLimits};

/// How many new tasks a scheduler takes in before it looks at its timers again, so a burst of
/// submissions cannot delay the wake-ups of sleeping tasks without bound.
const INTAKE_BATCH: usize = 64;

/// The first wait before a restart; it doubles with every attempt, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long to wait before attempt `attempt + 1`: exponential, with ±25 % jitter so tasks that
/// failed together do not all come back together.
fn backoff(pid: Pid, attempt: u32) -> Duration {
    let exponential = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let noise = RandomState::new().hash_one((pid, attempt)) % 1000;
    exponential.mul_f64(0.75 + noise as f64 / 2000.0)
}

/// A task alive on its scheduler thread. `process` is declared before `permit` so the store is
/// dropped, and its pool slot freed, before the task's place is given back to admission. Its
/// step count, deadline and worker live in the process, and only there.
struct Live {
    process: Process,
    permit: Permit<Job>,
    /// Its worker and key, when its worker's limits counted it as running.
    limited: Option<(Arc<str>, Option<Arc<str>>)>,
    /// Kept only when the task may be restarted.
    respawn: Option<Box<Job>>,
    pid: Pid,
    name: Arc<str>,
    /// When this attempt started.
    started: Instant,
    /// Which attempt this is, from 1.
    attempt: u32,
    steps: u32,
    /// The sequence number of this task's pending timer or ready wake-up; one left behind by
    /// a task that was killed, whose slot another task took since, does not match.
    wake: u64,
    /// The task waits in `receive`: its timer is the receive's timeout, and an entry put in
    /// its mailbox wakes it (`Command::Wake`).
    receiving: bool,
    /// The task awaits the answer to its call with this ticket: its timer is the call's
    /// deadline, and the answer wakes it (`Command::Wake`).
    awaiting: Option<u64>,
    /// Its checkpoints, when its policy takes any.
    checkpointing: Option<Box<Checkpointing>>,
}

/// A task's checkpoints while it runs: its policy, when the last was taken, and its row as
/// last written (its latest image in it, so a refusal written later keeps it).
struct Checkpointing {
    policy: CheckpointPolicy,
    last: Option<Instant>,
    row: StoredCheckpoint,
    /// What the task waits for now, between two steps; none while it is about to step.
    waiting: Option<Waiting>,
}

pub(super) struct SchedulerThread {
    lanes: Arc<Lanes>,
    /// This thread's place in `lanes`.
    index: usize,
    /// Commands taken from the inbox, not yet carried out, oldest first.
    intake: VecDeque<Command>,
    /// Where each live task of this thread sits in `tasks`.
    slots: HashMap<Pid, usize>,
    /// Tasks waiting out their backoff before the next attempt, with when it is due.
    restarts: Vec<(Instant, Job, Permit<Job>)>,
    tasks: Vec<Option<Live>>,
    free: Vec<usize>,
    /// Wake-ups in time order; the sequence number keeps equal deadlines first-in first-out.
    timers: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    timer_seq: u64,
    /// Tasks to step now, with what woke them: a `receive` that found its mailbox non-empty
    /// (or looked with timeout 0). Queued rather than stepped at once, so a task that keeps
    /// sending to itself cannot hold the thread.
    ready: VecDeque<(usize, u64, Wake)>,
}

impl SchedulerThread {
    pub(super) fn new(index: usize, lanes: Arc<Lanes>) -> Self {
        Self {
            lanes,
            index,
            intake: VecDeque::new(),
            slots: HashMap::new(),
            restarts: Vec::new(),
            tasks: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            ready: VecDeque::new(),
        }
    }

    fn lane(&self) -> &Lane {
        &self.lanes.lanes[self.index]
    }

    fn ledger(&self) -> &Ledger {
        &self.lanes.ledger
    }

    fn carry_out(&mut self, command: Command) {
        match command {
            Command::Run(job, permit, _) => self.spawn(job, permit),
            Command::Kill(pid, end) => self.kill(pid, end),
            Command::Wake(pid) => self.deliver(pid),
            Command::KillAll(end) => self.kill_all(&end),
            Command::HandOver(handed) => {
                let live: Vec<usize> = self.slots.values().copied().collect();
                let pids: Vec<Pid> = live
                    .into_iter()
                    .filter_map(|slot| {
                        let pid = self.tasks[slot].as_ref()?.pid;
                        self.hand_over(slot).then_some(pid)
                    })
                    .collect();
                let _ = handed.send(pids);
            }
        }
    }

    pub(super) fn run(mut self) {
        loop {
            for command in self.lane().inbox.take_urgent() {
                self.carry_out(command);
            }
            if self.slots.is_empty() {
                // Only timers of tasks killed before they woke; nothing to wake for.
                self.timers.clear();
            }
            self.restart_due();
            self.fire_due_timers();
            let mut stepped = false;
            for _ in 0..INTAKE_BATCH {
                let Some((slot, seq, wake)) = self.ready.pop_front() else {
                    break;
                };
                if self.tasks[slot]
                    .as_ref()
                    .is_some_and(|task| task.wake == seq)
                {
                    self.advance(slot, wake);
                }
                stepped = true;
            }
            if self.intake.is_empty() {
                self.lanes.lanes[self.index].inbox.take(&mut self.intake);
            }
            // Oldest first, a batch at a time, so timers are looked at between batches.
            let mut took = false;
            for _ in 0..INTAKE_BATCH {
                self.publish_intake();
                let Some(command) = self.intake.pop_front() else {
                    break;
                };
                self.carry_out(command);
                took = true;
            }
            self.publish_intake();
            if took || stepped || !self.intake.is_empty() || !self.ready.is_empty() {
                continue;
            }
            let next_restart = self.restarts.iter().map(|(at, _, _)| *at).min();
            let next_timer = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| *at)
                .into_iter()
                .chain(next_restart)
                .min()
                .map(|at| at + TIMER_SLACK);
            if next_timer.is_none() && self.lane().inbox.finished() {
                // Closed, nothing queued, and every task taken has ended.
                return;
            }
            self.lane().inbox.park(next_timer);
        }
    }

    /// Tells admission how long the oldest new task this thread holds has waited.
    fn publish_intake(&self) {
        let oldest = self.intake.iter().find_map(|command| match command {
            Command::Run(_, _, queued_at) => Some(*queued_at),
            _ => None,
        });
        self.lane().inbox.taken(oldest);
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
            if now >= task.process.deadline() {
                let end = TaskEnd::deadline_exceeded(task.process.steps_done());
                self.finish(slot, end);
                continue;
            }
            if let Some(ticket) = task.awaiting {
                // The call's deadline: its answer if one raced it in, else `timeout`.
                let reply = match self.lanes.actors.await_call(task.pid, ticket, false) {
                    Awaited::Done(reply) => reply,
                    Awaited::Until(_) | Awaited::NoSuchCall => Reply::Timeout,
                };
                self.advance(slot, Wake::Replied(ticket, reply));
                continue;
            }
            if task.receiving {
                // The receive's timeout; an entry that raced it in is taken first.
                let wake = match self.lanes.actors.take(task.pid, false) {
                    Some(entry) => Wake::Entry(entry),
                    None => Wake::Timeout,
                };
                self.advance(slot, wake);
                continue;
            }
            let step = task.process.woke();
            let (pid, steps, fuel) = (task.pid, task.steps, task.process.fuel());
            // In its events and its record; the console has what the worker logs itself.
            tracing::debug!(pid = %pid, step, steps, "Task stepped");
            let woke = Progress { step, steps, fuel };
            self.step(slot, Wake::Slept, Some(woke));
        }
    }

    /// Steps `pid`, waiting in `receive`, with the entry just put in its mailbox; or
    /// awaiting a call, with its answer.
    fn deliver(&mut self, pid: Pid) {
        let Some(slot) = self.slots.get(&pid).copied() else {
            return;
        };
        let Some(task) = self.tasks[slot].as_mut() else {
            return;
        };
        if let Some(ticket) = task.awaiting {
            // Taken here: the wake-up may be stale (the deadline took the call's end).
            if let Awaited::Done(reply) = self.lanes.actors.await_call(pid, ticket, true) {
                self.timer_seq += 1;
                task.wake = self.timer_seq;
                self.advance(slot, Wake::Replied(ticket, reply));
            }
            return;
        }
        if !task.receiving {
            return;
        }
        // Taken here, not when it was put: a wake-up may be stale (a timeout took the entry).
        if let Some(entry) = self.lanes.actors.take(pid, true) {
            // The receive's timer no longer matches.
            self.timer_seq += 1;
            task.wake = self.timer_seq;
            self.advance(slot, Wake::Entry(entry));
        }
    }

    /// Instantiates and starts a new task, then runs its first step.
    fn spawn(&mut self, job: Job, permit: Permit<Job>) {
        let pid = job.pid;
        let interrupts = self.lane().interrupts.clone();
        if interrupts.contains(pid) {
            // Killed before it reached this thread: the kill command found nothing to end.
            let end = interrupts.stopping_all().unwrap_or_else(TaskEnd::killed);
            return self.end_unstarted(job, permit, end);
        }
        if job.ready_at > Instant::now() {
            // A restart recovered from the store, its backoff not over yet.
            self.restarts.push((job.ready_at, job, permit));
            return;
        }
        let job = if self.lanes.paused.is_paused(job.version.worker()) {
            let worker = Arc::clone(job.version.worker());
            match self.lanes.paused.hold(&worker, job) {
                // Held until its worker is resumed: its place goes to the next task.
                Ok(()) => return self.lanes.release(permit),
                Err(job) => job,
            }
        } else {
            job
        };
        let mut job = match self.lanes.limits.check(job, Instant::now()) {
            Gate::Go(job) => job,
            // Over its worker's (or key's) running limit: held until one of them ends, its
            // place to the next task.
            Gate::Held => return self.lanes.release(permit),
            // Over its rate: among the scheduled tasks until its turn.
            Gate::Until(mut job, due) => {
                job.ready_at = due;
                return match self.lanes.later.fill(job, due, false) {
                    Ok(()) => self.lanes.release(permit),
                    Err(job) => self.end_unstarted(job, permit, TaskEnd::shut_down_before_start()),
                };
            }
        };
        let limited = job
            .counted
            .0
            .then(|| (Arc::clone(job.version.worker()), job.key.clone()));
        let begun = Instant::now();
        let deadline = begun + job.deadline;
        // What a failed `start` burnt and logged, which go with the store.
        let mut spent = (0, None);
        let resume = job.resume.take();
        let limits = TaskLimits {
            deadline,
            interrupts,
            kernel: self.lanes.kernel.get().and_then(std::sync::Weak::upgrade),
        };
        // A task whose host was lost goes on from its checkpoint, if it has one that can be
        // put back; if not, it starts again.
        let mut resume_refused = None;
        if let Some(resume) = resume {
            let taken = resume
                .row
                .taken
                .as_ref()
                .map_or((0, 0), |t| (t.step, t.fuel));
            let module = &job.version.module;
            // The attempt goes on: its wall-clock limit counts from its start, not from now.
            let mut limits = limits.clone();
            if let Some(started) = resume.started_at {
                let until = (started + job.deadline)
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                limits.deadline = Instant::now() + until;
            }
            let put_back = guarded(|| {
                module
                    .resume(pid, limits, &resume.image, &job.name, taken.0)
                    .map_err(|refused| TaskEnd::host_error(&refused.0))
            });
            match put_back {
                Ok(mut process) => {
                    process.count_fuel(taken.1);
                    return self.resumed(job, permit, limited, process, *resume, begun);
                }
                Err(end) => {
                    let reason = end.error.unwrap_or_default();
                    tracing::warn!(pid = %pid, %reason,
                        "a task's checkpoint could not be put back; it starts again");
                    // Its image goes, and its row says why, at once: whatever the policy.
                    let mut row = resume.row;
                    row.taken = None;
                    row.refused = Some(format!("its checkpoint could not be put back: {reason}"));
                    self.ledger().checkpoint(row.clone());
                    resume_refused = Some(row);
                }
            }
        }
        let started = guarded(|| {
            let mut process = job.version.module.instantiate(pid, limits)?;
            let spec = StartSpec {
                pid,
                name: &job.name,
                duration_secs: job.duration,
                payload: job.payload.as_deref(),
                parent: job.parent,
                attempt: job.attempt,
            };
            let steps = process
                .start(&spec)
                .inspect_err(|_| spent = (process.fuel(), Some(process.capture().take())))?;
            Ok((process, steps))
        });
        let (process, steps) = match started {
            Ok(started) => started,
            Err(end) => {
                // It never ran: what its worker's limits counted of it is given back.
                if let Some((worker, key)) = &limited {
                    self.lanes.release_limits(worker, key.as_ref());
                }
                let mut job = job;
                job.counted = (false, false);
                let (fuel, logs) = spent;
                let ending = Ending {
                    step: 0,
                    fuel,
                    end,
                    ran: Some(begun.elapsed()),
                    attempt: job.attempt,
                };
                return self.end_or_restart(job, permit, ending, logs);
            }
        };
        let worker = Arc::clone(job.version.worker());
        let now = Instant::now();
        self.ledger().started(
            pid,
            &worker,
            steps,
            process.fuel(),
            now - begun,
            now.saturating_duration_since(job.ready_at),
            process.capture().take(),
        );
        tracing::debug!(pid = %pid, steps, attempt = job.attempt, "Task started");
        let checkpointing = checkpointing(&job, resume_refused);
        let slot = self.place(job, permit, limited, process, steps, begun, checkpointing);
        self.advance(slot, Wake::Started);
    }

    /// Makes `process` a live task of this thread; its slot.
    #[allow(
        clippy::too_many_arguments,
        reason = "what a live task is made of, started or resumed"
    )]
    fn place(
        &mut self,
        job: Job,
        permit: Permit<Job>,
        limited: Option<(Arc<str>, Option<Arc<str>>)>,
        process: Process,
        steps: u32,
        begun: Instant,
        checkpointing: Option<Box<Checkpointing>>,
    ) -> usize {
        let (pid, attempt, name) = (job.pid, job.attempt, Arc::clone(&job.name));
        let task = Live {
            process,
            permit,
            limited,
            respawn: (job.attempt < job.max_attempts).then(|| Box::new(job)),
            pid,
            name,
            started: begun,
            attempt,
            steps,
            wake: 0,
            receiving: false,
            awaiting: None,
            checkpointing,
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
        slot
    }

    /// Goes on with a task put back from its checkpoint (`process`): its step count and fuel
    /// as they were then, its resumption recorded, and the wait it was in given back, from
    /// the absolute time it ends.
    fn resumed(
        &mut self,
        job: Job,
        permit: Permit<Job>,
        limited: Option<(Arc<str>, Option<Arc<str>>)>,
        process: Process,
        resume: crate::sched::Resume,
        begun: Instant,
    ) {
        let pid = job.pid;
        let crate::sched::Resume { row, .. } = resume;
        let mut row = row;
        let Some(taken) = row.taken.clone() else {
            // Never so (a resumption needs an image); ended rather than lost if it were.
            let worker = Arc::clone(job.version.worker());
            let ending = Ending::unstarted(
                TaskEnd::host_error("a task resumed from a checkpoint without an image"),
                job.attempt,
            );
            return self.record_end(permit, pid, &worker, &job.name, ending, None);
        };
        let now = SystemTime::now();
        row.resumes += 1;
        if !taken.handed_over {
            row.crash_resumes += 1;
        }
        row.resumed = Some(Resumed {
            from_step: taken.step,
            at: now,
            lost: now.duration_since(taken.at).unwrap_or_default(),
        });
        row.refused = None;
        let steps = resume.steps;
        self.ledger().resumed(
            pid,
            row.clone(),
            Progress {
                step: taken.step,
                steps,
                fuel: process.fuel(),
            },
        );
        tracing::info!(pid = %pid, step = taken.step, lost = ?now.duration_since(taken.at).unwrap_or_default(),
            "Task resumed from its checkpoint");
        let policy = job.checkpoint.0;
        // `every <duration>` counts from the checkpoint it resumed from.
        let since = SystemTime::now()
            .duration_since(taken.at)
            .unwrap_or_default();
        let checkpointing = Box::new(Checkpointing {
            policy,
            last: Instant::now().checked_sub(since),
            row,
            waiting: None,
        });
        let slot = self.place(
            job,
            permit,
            limited,
            process,
            steps,
            begun,
            Some(checkpointing),
        );
        // Its mailbox as it was, before whatever was sent to it since: a `receive` below
        // takes from it.
        self.lanes.actors.restore(pid, taken.mailbox.clone());
        // Its name and whether it traps exits, as they were: a name taken meanwhile stays
        // with whoever took it.
        self.lanes.actors.set_trap_exits(pid, taken.trap_exits);
        if let Some(kernel) = self.lanes.kernel.get().and_then(std::sync::Weak::upgrade) {
            if let Some(name) = taken.name.clone()
                && let Err(error) = crate::runtime::answer_now(kernel.register(pid, name.clone()))
            {
                tracing::warn!(pid = %pid, name, ?error,
                    "a resumed task's name could not be registered again");
            }
            // Linked and monitored again: a task that ended meanwhile sends its exit or its
            // `down` now, as it would have then.
            for linked in &taken.links {
                let linked = linked.to_string();
                if let Err(error) = crate::runtime::answer_now(kernel.link(pid, linked.clone())) {
                    tracing::debug!(pid = %pid, linked, ?error, "a resumed task's link not made");
                }
            }
            for watched in &taken.monitors {
                let watched = watched.to_string();
                if let Err(error) = crate::runtime::answer_now(kernel.monitor(pid, watched.clone()))
                {
                    tracing::debug!(pid = %pid, watched, ?error,
                        "a resumed task's monitor not set");
                }
            }
        }
        let in_time = |until: SystemTime| {
            Instant::now() + until.duration_since(SystemTime::now()).unwrap_or_default()
        };
        self.timer_seq += 1;
        let seq = self.timer_seq;
        let Some(task) = self.tasks[slot].as_mut() else {
            return;
        };
        task.wake = seq;
        let deadline = task.process.deadline();
        let mut waiting = None;
        match taken.waiting {
            Waiting::Sleep { until } => {
                self.timers
                    .push(Reverse((in_time(until).min(deadline), seq, slot)));
                waiting = Some(taken.waiting);
            }
            Waiting::Receive { until } => {
                // Its mailbox as the checkpoint carried it, then what was sent since.
                match self.lanes.actors.take(pid, true) {
                    Some(entry) => self.ready.push_back((slot, seq, Wake::Entry(entry))),
                    None => {
                        task.receiving = true;
                        self.timers
                            .push(Reverse((in_time(until).min(deadline), seq, slot)));
                        waiting = Some(taken.waiting);
                    }
                }
            }
            // The call went with the lost host: it never gets its answer.
            Waiting::Await { ticket, .. } => {
                self.ready
                    .push_back((slot, seq, Wake::Replied(ticket, Reply::Timeout)));
            }
        }
        if let Some(checkpointing) = task.checkpointing.as_mut() {
            checkpointing.waiting = waiting;
        }
    }

    /// Takes a checkpoint of the task in `slot`, which has just stepped and now waits as
    /// `waiting` says, if its policy says one is due.
    fn checkpoint_if_due(&mut self, slot: usize, waiting: Waiting) {
        let Some(task) = self.tasks[slot].as_mut() else {
            return;
        };
        let Some(checkpointing) = task.checkpointing.as_mut() else {
            return;
        };
        checkpointing.waiting = Some(waiting);
        let now = Instant::now();
        if !checkpointing.policy.due(checkpointing.last, now) {
            return;
        }
        checkpointing.last = Some(now);
        let row = &mut checkpointing.row;
        match checkpoint_of(&self.lanes.actors, task.pid, &mut task.process) {
            Ok(image) => {
                let actor = self.lanes.actors.carriage(task.pid);
                taken(
                    row,
                    &task.process,
                    task.attempt,
                    &image,
                    waiting,
                    actor,
                    false,
                );
            }
            Err(refused) => {
                if row.refused.as_deref() == Some(refused.0.as_str()) {
                    return;
                }
                tracing::info!(pid = %task.pid, reason = %refused,
                    "Task not checkpointed; if its host is lost, it runs again from its last \
                     checkpoint, or from its start");
                row.refused = Some(refused.0);
            }
        }
        self.lanes.ledger.checkpoint(row.clone());
    }

    /// Runs one step of the task in `slot`, told what woke it, then files its wake-up (a
    /// timer, a wait on its mailbox, or a place in `ready`) or ends it.
    fn advance(&mut self, slot: usize, wake: Wake) {
        self.step(slot, wake, None);
    }

    /// [`Self::advance`], for a task a timer woke for step `woke`: that progress is recorded
    /// with the lines the step logs, in one write.
    fn step(&mut self, slot: usize, wake: Wake, woke: Option<Progress>) {
        let Some(task) = self.tasks[slot].as_mut() else {
            return;
        };
        // About to step (or to end): no longer waiting as its last checkpoint says.
        if let Some(checkpointing) = task.checkpointing.as_mut() {
            checkpointing.waiting = None;
        }
        if self.lanes.lanes[self.index].interrupts.contains(task.pid) {
            // A kill of it is on its way to this thread, which ends it there: not one more
            // step.
            if let Some(woke) = woke {
                self.lanes.ledger.progress(task.pid, woke);
            }
            return;
        }
        task.receiving = false;
        task.awaiting = None;
        let next = guarded(|| task.process.step(wake));
        let end = match next {
            Ok(Next::Sleep(ms)) => {
                // Lines of a step that ends the task go with its end, in one write.
                self.lanes
                    .ledger
                    .stepped(task.pid, woke, task.process.capture().take());
                // A sleep past the deadline wakes at the deadline, to end there.
                let at = (Instant::now() + Duration::from_millis(u64::from(ms)))
                    .min(task.process.deadline());
                self.timer_seq += 1;
                task.wake = self.timer_seq;
                self.timers.push(Reverse((at, self.timer_seq, slot)));
                let until = system_time(at);
                return self.checkpoint_if_due(slot, Waiting::Sleep { until });
            }
            Ok(Next::Receive(ms)) => {
                self.lanes
                    .ledger
                    .stepped(task.pid, woke, task.process.capture().take());
                self.timer_seq += 1;
                task.wake = self.timer_seq;
                // Marked as waiting under the mailbox's lock when it is empty, so a put from
                // here on sends a wake-up.
                match self.lanes.actors.take(task.pid, ms > 0) {
                    Some(entry) => self
                        .ready
                        .push_back((slot, self.timer_seq, Wake::Entry(entry))),
                    None if ms == 0 => self.ready.push_back((slot, self.timer_seq, Wake::Timeout)),
                    None => {
                        let at = (Instant::now() + Duration::from_millis(u64::from(ms)))
                            .min(task.process.deadline());
                        task.receiving = true;
                        self.timers.push(Reverse((at, self.timer_seq, slot)));
                        let until = system_time(at);
                        return self.checkpoint_if_due(slot, Waiting::Receive { until });
                    }
                }
                return;
            }
            Ok(Next::Await(ticket)) => {
                self.lanes
                    .ledger
                    .stepped(task.pid, woke, task.process.capture().take());
                self.timer_seq += 1;
                task.wake = self.timer_seq;
                // Marked as awaiting under the lock when no answer is there yet, so an answer
                // from here on sends a wake-up.
                match self.lanes.actors.await_call(task.pid, ticket, true) {
                    Awaited::Done(reply) => {
                        let wake = Wake::Replied(ticket, reply);
                        self.ready.push_back((slot, self.timer_seq, wake));
                        return;
                    }
                    Awaited::Until(deadline) => {
                        task.awaiting = Some(ticket);
                        let at = deadline.min(task.process.deadline());
                        self.timers.push(Reverse((at, self.timer_seq, slot)));
                        let until = system_time(at);
                        return self.checkpoint_if_due(slot, Waiting::Await { ticket, until });
                    }
                    Awaited::NoSuchCall => TaskEnd::guest_error(format!(
                        "the task awaited call {ticket}, which it does not hold: it never made \
                         it, or it has taken its answer"
                    )),
                }
            }
            Ok(Next::Done(code, result)) => TaskEnd::returned(code, result),
            Ok(Next::Failed(message)) => TaskEnd::guest_error(message),
            // Interrupted because every task of the thread stops: ended as they all are.
            Err(end) if end.outcome == crate::model::Outcome::Killed => self.lanes.lanes
                [self.index]
                .interrupts
                .stopping_all()
                .unwrap_or(end),
            Err(end) => end,
        };
        if let Some(woke) = woke {
            self.lanes.ledger.progress(task.pid, woke);
        }
        self.finish(slot, end);
    }

    /// Ends the task in `slot`: its store first, then its place, and only then the recorded
    /// end (with its last log lines), so whoever reads the end sees the place given back.
    fn finish(&mut self, slot: usize, end: TaskEnd) {
        let Some(task) = self.tasks[slot].take() else {
            return;
        };
        self.slots.remove(&task.pid);
        self.free.push(slot);
        let capture = task.process.capture();
        capture.flush_partial();
        let logs = Some(capture.take());
        let (step, fuel) = (task.process.steps_done(), task.process.fuel());
        let worker = Arc::clone(task.process.worker());
        let ran = Some(task.started.elapsed());
        let Live {
            process,
            permit,
            limited,
            respawn,
            pid,
            name,
            attempt,
            checkpointing,
            ..
        } = task;
        drop(process);
        // Its image is of no use once the attempt is over; what it was stays in its row. Not
        // when this host lost the task with its lease: the host that takes it back resumes it
        // from that image.
        if let Some(mut checkpointing) = checkpointing
            && end.outcome != crate::model::Outcome::HostLost
            && let Some(taken) = checkpointing.row.taken.as_mut()
        {
            taken.image = None;
            self.lanes.ledger.checkpoint(checkpointing.row);
        }
        if let Some((worker, key)) = limited {
            self.lanes.release_limits(&worker, key.as_ref());
        }
        let ending = Ending {
            step,
            fuel,
            end,
            ran,
            attempt,
        };
        match respawn {
            Some(job) => self.end_or_restart(*job, permit, ending, logs),
            None => self.record_end(permit, pid, &worker, &name, ending, logs),
        }
    }

    /// Ends an attempt of `job`: restarts the task later if its policy allows (keeping its
    /// place), or records its end and gives its place back.
    fn end_or_restart(
        &mut self,
        mut job: Job,
        permit: Permit<Job>,
        ending: Ending,
        logs: Option<FreshLogs>,
    ) {
        let pid = job.pid;
        let closing = self.lane().inbox.is_closed();
        if !ending.end.is_failure() || closing || job.attempt >= job.max_attempts {
            let worker = Arc::clone(job.version.worker());
            return self.record_end(permit, pid, &worker, &job.name, ending, logs);
        }
        let Ending {
            step, fuel, end, ..
        } = ending;
        let wait = backoff(pid, job.attempt);
        tracing::info!(
            pid = %pid,
            name = %Printable(&job.name),
            attempt = job.attempt,
            step,
            outcome = end.outcome.as_str(),
            error = end.error.as_deref(),
            ?wait,
            "Task attempt failed, restarting"
        );
        if let Some(logs) = logs {
            self.ledger().logs(pid, logs);
        }
        // The calls the attempt took are answered with its end; the next knows nothing of them.
        for caller in self.lanes.actors.restart_calls(pid, &end) {
            self.lanes.wake(caller);
        }
        job.attempt += 1;
        // The next attempt is counted by the limits when it starts.
        job.counted = (false, false);
        let ready_at = SystemTime::now() + wait;
        self.ledger()
            .restarting(pid, job.version.worker(), fuel, end, job.attempt, ready_at);
        let due = Instant::now() + wait;
        job.ready_at = due;
        self.restarts.push((due, job, permit));
    }

    /// Starts the tasks whose backoff is over.
    fn restart_due(&mut self) {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restarts)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.restarts = waiting;
        for (_, job, permit) in due {
            self.spawn(job, permit);
        }
    }

    /// Ends `pid` with `end` (a kill), which this thread holds live, about to start, or
    /// waiting out a backoff.
    fn kill(&mut self, pid: Pid, end: TaskEnd) {
        if let Some(slot) = self.slots.get(&pid).copied() {
            self.finish(slot, end);
            return;
        }
        // Kills are taken before new tasks: the task's own `Run` may still wait in the inbox.
        // (An operator's kill is also posted to the interrupt set, which `spawn` reads; a
        // link's is not, so it must find the task here.)
        let lanes = Arc::clone(&self.lanes);
        lanes.lanes[self.index].inbox.take(&mut self.intake);
        let queued = self
            .intake
            .iter()
            .position(|command| matches!(command, Command::Run(job, ..) if job.pid == pid));
        if let Some(Command::Run(job, permit, _)) =
            queued.and_then(|index| self.intake.remove(index))
        {
            return self.end_unstarted(job, permit, end);
        }
        if let Some(index) = self.restarts.iter().position(|(_, job, _)| job.pid == pid) {
            let (_, job, permit) = self.restarts.remove(index);
            return self.end_unstarted(job, permit, end);
        }
        // Held by its paused worker or its worker's limits as this thread was about to start
        // it, after the kill looked there.
        if let Some(job) = lanes
            .paused
            .unqueue(pid)
            .or_else(|| lanes.limits.unqueue(pid))
            .or_else(|| lanes.later.unqueue(pid))
        {
            lanes.record_unstarted(&job, end);
        }
    }

    fn kill_all(&mut self, end: &TaskEnd) {
        let queued: Vec<(Job, Permit<Job>)> = self
            .intake
            .drain(..)
            .filter_map(|command| match command {
                Command::Run(job, permit, _) => Some((job, permit)),
                Command::Kill(..)
                | Command::Wake(_)
                | Command::KillAll(_)
                | Command::HandOver(_) => None,
            })
            .collect();
        let restarting = std::mem::take(&mut self.restarts)
            .into_iter()
            .map(|(_, job, permit)| (job, permit));
        for (job, permit) in queued.into_iter().chain(restarting) {
            self.end_unstarted(job, permit, end.clone());
        }
        let live: Vec<usize> = self.slots.values().copied().collect();
        let hand_over = self
            .lanes
            .hand_over
            .load(std::sync::atomic::Ordering::Acquire);
        for slot in live {
            if hand_over && self.hand_over(slot) {
                continue;
            }
            self.finish(slot, end.clone());
        }
        self.timers.clear();
        self.ready.clear();
        self.lane().interrupts.stopped_all();
    }

    /// Checkpoints the task in `slot`, which waits between two steps, and lets it go without
    /// an end, as its host shuts down: it stays running in the store and resumes from this
    /// checkpoint when a host starts on the store again. False, and nothing done, if it takes
    /// no checkpoints, is about to step, or its checkpoint is refused: it is killed instead.
    fn hand_over(&mut self, slot: usize) -> bool {
        let Some(task) = self.tasks[slot].as_mut() else {
            return false;
        };
        let Some(checkpointing) = task.checkpointing.as_mut() else {
            return false;
        };
        let Some(waiting) = checkpointing.waiting else {
            return false;
        };
        let image = match checkpoint_of(&self.lanes.actors, task.pid, &mut task.process) {
            Ok(image) => image,
            Err(refused) => {
                tracing::info!(pid = %task.pid, reason = %refused,
                    "Task not handed on: its checkpoint was refused");
                return false;
            }
        };
        // It leaves this host's actors first, so that nothing put in its mailbox from now
        // on is accepted and then left out of its checkpoint (a send now finds it gone, as
        // for any task another host holds). It goes on elsewhere, its mailbox, links and
        // monitors with it: nobody here is told it ended; those watching it from here watch
        // it where it goes.
        let moved = self.lanes.actors.moved(task.pid, task.attempt);
        let row = &mut checkpointing.row;
        taken(
            row,
            &task.process,
            task.attempt,
            &image,
            waiting,
            Some(moved.carriage),
            true,
        );
        let row = row.clone();
        let Some(task) = self.tasks[slot].take() else {
            return false;
        };
        self.slots.remove(&task.pid);
        self.free.push(slot);
        let Live {
            process,
            permit,
            limited,
            pid,
            ..
        } = task;
        // Whatever it logged since its last step goes before its checkpoint.
        self.ledger().logs(pid, process.capture().take());
        self.ledger().checkpoint(row);
        drop(process);
        if let Some((worker, key)) = limited {
            self.lanes.release_limits(&worker, key.as_ref());
        }
        self.lanes.release(permit);
        // It keeps its place in the store, running.
        for woken in moved.wake {
            self.lanes.wake(woken);
        }
        if let Some(kernel) = self.lanes.kernel.get().and_then(std::sync::Weak::upgrade) {
            kernel.moved(pid, &moved.watchers, &moved.links);
        }
        self.lane().interrupts.remove(pid);
        tracing::info!(pid = %pid, "Task checkpointed and handed on");
        true
    }

    fn end_unstarted(&self, job: Job, permit: Permit<Job>, end: TaskEnd) {
        self.lanes.uncount(&job);
        let ending = Ending::unstarted(end, job.attempt);
        self.record_end(
            permit,
            job.pid,
            job.version.worker(),
            &job.name,
            ending,
            None,
        );
    }

    /// Records the end of a task whose store is gone: its end time first, then its place
    /// given back (to the next waiting task, if any), then the end recorded, so whoever reads
    /// the end sees the place free, then any kill of it forgotten.
    fn record_end(
        &self,
        permit: Permit<Job>,
        pid: Pid,
        worker: &Arc<str>,
        name: &Arc<str>,
        ending: Ending,
        logs: Option<FreshLogs>,
    ) {
        let at = SystemTime::now();
        self.lanes.release(permit);
        // Once the end is in the store: a kill that looks for the end after posting itself
        // then either sees the end or is taken back here (see `Host::kill`).
        let interrupts = self.lane().interrupts.clone();
        let aftermath = self.lanes.end_actor(pid, &ending.end);
        self.ledger()
            .ended(pid, worker, name, ending, at, logs, move || {
                interrupts.remove(pid)
            });
        self.lanes.follow(pid, aftermath);
    }
}

/// A checkpoint of task `pid`'s `process`, between two steps; refused while the task holds
/// calls, made or taken, which live in the host (`actors`) and would not be carried.
fn checkpoint_of(
    actors: &crate::actor::Actors,
    pid: Pid,
    process: &mut Process,
) -> Result<crate::runtime::Image, crate::runtime::Refused> {
    let held = actors.calls_held(pid);
    if held > 0 {
        return Err(crate::runtime::Refused(format!(
            "it holds {held} call(s), made or taken, which a checkpoint does not carry"
        )));
    }
    process.checkpoint()
}

/// Makes `image`, just taken of `process` (attempt `attempt`) waiting as `waiting`, the latest
/// checkpoint in `row`.
#[allow(
    clippy::too_many_arguments,
    reason = "what a checkpoint is made of: the task, its image, its wait and its actor"
)]
fn taken(
    row: &mut StoredCheckpoint,
    process: &Process,
    attempt: u32,
    image: &crate::runtime::Image,
    waiting: Waiting,
    actor: Option<Carriage>,
    handed_over: bool,
) {
    let Carriage {
        name,
        trap_exits,
        links,
        monitors,
        mailbox,
    } = actor.unwrap_or_default();
    let image: Arc<[u8]> = image.encode().into();
    row.attempt = attempt;
    row.refused = None;
    row.taken = Some(Taken {
        step: process.steps_done(),
        at: SystemTime::now(),
        fuel: process.fuel(),
        waiting,
        bytes: image.len() as u64,
        image: Some(image),
        handed_over,
        name,
        trap_exits,
        links,
        monitors,
        mailbox,
    });
}

/// The wall-clock time of `at`, a moment of this process's monotonic clock.
fn system_time(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    }
}

/// The checkpoints of a task started (not resumed) from `job`: none if its policy takes none.
/// `refused` is why its checkpoint could not be put back, when that is why it starts again.
fn checkpointing(job: &Job, refused: Option<StoredCheckpoint>) -> Option<Box<Checkpointing>> {
    let (policy, own) = job.checkpoint;
    let mut row = match refused {
        Some(row) => row,
        None => StoredCheckpoint {
            pid: job.pid,
            policy: own.then_some(policy),
            attempt: job.attempt,
            taken: None,
            refused: None,
            resumes: 0,
            crash_resumes: 0,
            resumed: None,
        },
    };
    row.attempt = job.attempt;
    if policy.is_off() {
        return None;
    }
    // `every <duration>` counts from the attempt's start: a task shorter than that takes
    // none, and loses no more than that if its host is lost.
    Some(Box::new(Checkpointing {
        policy,
        last: Some(Instant::now()),
        row,
        waiting: None,
    }))
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
        Err(TaskEnd::host_error(&message))
    })
}
