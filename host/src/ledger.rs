//! The one place a task's life is recorded, whichever path it takes (a scheduler thread, a kill
//! while it waited in the queue, a shutdown): its acceptance, start, progress, log lines,
//! restarts and end go to the store, the host's running totals and the metrics, and once the
//! store has them, to the event streams and to whoever waits for the task's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::events::{EventBus, Published};
use crate::metrics::Metrics;
use crate::model::{
    LogLine, Pid, Printable, StoredCheckpoint, TaskEnd, TaskEvent, TaskRecord, TaskSpec,
};
use crate::store::{Change, Done, IdempotencyKey, Store, StoreError};

/// Counters of what the host has done since it started.
#[derive(Debug, Default, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// Tasks accepted.
    pub spawned: u64,
    /// Task attempts instantiated and started.
    pub started: u64,
    /// Tasks ended, however they ended.
    pub ended: u64,
    /// Tasks that exited with code 0.
    pub exited_ok: u64,
}

/// How a task's last attempt ended.
#[derive(Debug)]
pub struct Ending {
    /// Steps it completed.
    pub step: u32,
    /// Fuel it burnt.
    pub fuel: u64,
    pub end: TaskEnd,
    /// How long it ran, if it started.
    pub ran: Option<Duration>,
    /// Which attempt it was, from 1.
    pub attempt: u32,
}

impl Ending {
    /// The end of attempt `attempt` of a task that never started it (killed while waiting,
    /// refused at shutdown).
    pub fn unstarted(end: TaskEnd, attempt: u32) -> Self {
        Self {
            step: 0,
            fuel: 0,
            end,
            ran: None,
            attempt,
        }
    }
}

/// A task woke for step `step` of `steps`, having burnt `fuel` in all.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: u32,
    pub steps: u32,
    pub fuel: u64,
}

impl Progress {
    fn event(self) -> TaskEvent {
        TaskEvent::Progress {
            step: self.step,
            steps: self.steps,
            fuel: self.fuel,
        }
    }
}

/// Log lines a task produced since they were last recorded, with the running total of bytes
/// its capture cap discarded.
pub type FreshLogs = (Vec<LogLine>, u64);

/// What runs once a write is done, told whether it succeeded.
type AfterWrite = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

/// Records what happens to tasks.
#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    metrics: Arc<Metrics>,
    waiters: Arc<EndWaiters>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    spawned: AtomicU64,
    started: AtomicU64,
    ended: AtomicU64,
    exited_ok: AtomicU64,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>, events: Arc<EventBus>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            events,
            metrics,
            waiters: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// The host's metrics.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Hands `batch` to the store; once it is written, publishes it and runs `then`. A write
    /// that fails is logged (the store keeps a task's changes and tries them again).
    fn write(&self, pid: Pid, batch: Vec<Change>, then: Option<AfterWrite>) {
        // Built before the store takes the changes, sent only once it has them.
        let published: Vec<Published> = if self.events.listening() {
            batch
                .iter()
                .flat_map(|change| self.events.prepare(change))
                .collect()
        } else {
            Vec::new()
        };
        if published.is_empty() && then.is_none() {
            return self.store.submit(batch, None);
        }
        let events = Arc::clone(&self.events);
        let done: Done = Box::new(move |result| {
            match &result {
                Ok(()) => events.send(published),
                // Another host holds the task now: its events are that host's to publish.
                Err(StoreError::Fenced) => {
                    tracing::debug!(pid = %pid, "a task's change was fenced out");
                }
                Err(error) => {
                    tracing::error!(pid = %pid, %error, "a task's change was not recorded")
                }
            }
            if let Some(then) = then {
                then(&result);
            }
        });
        self.store.submit(batch, Some(done));
    }

    /// A task was accepted: once the store has it, counts it and calls `then` with whether it
    /// was recorded. `spec` is what the task needs to run again after a crash; `key`, the
    /// idempotency key its request carried; `shared`, whether it waits in a cluster's shared
    /// queue rather than on this host, and whether it is `limited` there (see
    /// [`Change::Accepted`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "what an acceptance writes: the task, what it runs again from, its key, its \
                  queue, its own checkpoint policy, and what follows"
    )]
    pub fn accepted(
        &self,
        record: TaskRecord,
        spec: TaskSpec,
        key: Option<IdempotencyKey>,
        (shared, limited): (bool, bool),
        checkpoint: Option<StoredCheckpoint>,
        then: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        let (pid, worker) = (record.pid, Arc::clone(&record.worker));
        let (metrics, counts) = (Arc::clone(&self.metrics), Arc::clone(&self.counts));
        let mut batch = vec![Change::Accepted {
            record: Box::new(record),
            spec,
            key,
            shared,
            limited,
        }];
        // The task's own policy is kept from its acceptance, in the same write: after a
        // crash, it checkpoints as it asked.
        batch.extend(checkpoint.map(|row| Change::Checkpoint(Box::new(row))));
        self.write(
            pid,
            batch,
            Some(Box::new(move |result| {
                if result.is_ok() {
                    metrics.spawned(&worker);
                    counts.spawned.fetch_add(1, Ordering::Relaxed);
                }
                then(result.clone());
            })),
        );
    }

    /// An attempt is up: instantiated in `instantiation`, `since_spawn` after it was accepted
    /// or due to restart. The lines its `start` logged go in the same write.
    #[allow(
        clippy::too_many_arguments,
        reason = "what a start is: the task, its worker, its size, what it cost, its lines"
    )]
    pub fn started(
        &self,
        pid: Pid,
        worker: &Arc<str>,
        steps: u32,
        fuel: u64,
        instantiation: Duration,
        since_spawn: Duration,
        logs: FreshLogs,
    ) {
        self.metrics.started(worker, instantiation, since_spawn);
        self.counts.started.fetch_add(1, Ordering::Relaxed);
        let at = SystemTime::now();
        let event = TaskEvent::Started { at, steps, fuel };
        let mut batch = vec![Change::Event(pid, event)];
        batch.extend(logs_change(pid, logs));
        self.write(pid, batch, None);
    }

    /// The task woke for a step (`woke`, its progress) and the step ran, logging `logs`: one
    /// write for both, in that order. A step that ends the task records its progress with
    /// [`Ledger::progress`] instead, before its end.
    pub fn stepped(&self, pid: Pid, woke: Option<Progress>, logs: FreshLogs) {
        let progress = woke.map(|woke| Change::Event(pid, woke.event()));
        let batch: Vec<Change> = progress.into_iter().chain(logs_change(pid, logs)).collect();
        if !batch.is_empty() {
            self.write(pid, batch, None);
        }
    }

    /// The task woke for step `step` of `steps`, having burnt `fuel` in all.
    pub fn progress(&self, pid: Pid, woke: Progress) {
        self.write(pid, vec![Change::Event(pid, woke.event())], None);
    }

    /// A task's checkpoint row changed: an image taken, refused or dropped, a resumption.
    pub fn checkpoint(&self, row: StoredCheckpoint) {
        self.write(row.pid, vec![Change::Checkpoint(Box::new(row))], None);
    }

    /// The task resumed from its checkpoint: its row with the resumption, and its progress
    /// back at the checkpoint's step.
    pub fn resumed(&self, pid: Pid, row: StoredCheckpoint, at: Progress) {
        let batch = vec![
            Change::Event(pid, at.event()),
            Change::Checkpoint(Box::new(row)),
        ];
        self.write(pid, batch, None);
    }

    /// The task logged or printed `logs` since they were last recorded.
    pub fn logs(&self, pid: Pid, logs: FreshLogs) {
        if let Some(change) = logs_change(pid, logs) {
            self.write(pid, vec![change], None);
        }
    }

    /// An attempt failed (or its host was lost) and the task will run again as
    /// `next_attempt`, from `ready_at`.
    pub fn restarting(
        &self,
        pid: Pid,
        worker: &Arc<str>,
        fuel: u64,
        end: TaskEnd,
        next_attempt: u32,
        ready_at: SystemTime,
    ) {
        self.metrics.restarted(worker, &end, fuel);
        let at = SystemTime::now();
        let event = TaskEvent::Restarting {
            at,
            fuel,
            end,
            next_attempt,
            ready_at,
        };
        self.write(pid, vec![Change::Event(pid, event)], None);
    }

    /// Attempt `attempt` ended the task `at`, which the caller reads before it gives the
    /// task's place back, so that a task that waited for the place never seems to start
    /// before this one ended. Its last log lines are recorded with its end, in one write;
    /// `then` runs once the store has the end.
    #[allow(
        clippy::too_many_arguments,
        reason = "what an end is: the task, how it ended, when, its last lines, what follows"
    )]
    pub fn ended(
        &self,
        pid: Pid,
        worker: &Arc<str>,
        name: &Arc<str>,
        ending: Ending,
        at: SystemTime,
        last_logs: Option<FreshLogs>,
        then: impl FnOnce() + Send + 'static,
    ) {
        let Ending {
            step: _,
            fuel,
            end,
            ran,
            attempt,
        } = ending;
        // The host's one line for the end, worded apart from the worker's own last line.
        tracing::info!(
            pid = %pid,
            name = %Printable(name),
            status = %end.status.as_str(),
            outcome = %end.outcome.as_str(),
            exit_code = end.exit_code,
            ran = %Ran(ran),
            error = end.error.as_deref(),
            "Task process ended"
        );
        self.metrics.ended(worker, &end, fuel, ran);
        if end.exit_code == Some(0) {
            self.counts.exited_ok.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.ended.fetch_add(1, Ordering::Relaxed);
        // Built here, from what the end is, rather than read back from the store once it is
        // written: the store's writer runs this, and must not wait on a read of its own store.
        let exit = self
            .events
            .listening()
            .then(|| self.events.exit_of(pid, name, worker, &end, at));
        let mut batch: Vec<Change> = last_logs
            .and_then(|logs| logs_change(pid, logs))
            .into_iter()
            .collect();
        let event = TaskEvent::Ended {
            at,
            fuel,
            end,
            attempt,
        };
        batch.push(Change::Event(pid, event));
        let (events, waiters) = (Arc::clone(&self.events), Arc::clone(&self.waiters));
        let published = Box::new(move |result: &Result<(), StoreError>| {
            if result.is_ok()
                && let Some(exit) = exit
            {
                events.send(vec![exit]);
            }
            waiters.ended(pid);
            then();
        });
        self.write(pid, batch, Some(published));
    }

    /// Resolves once task `pid`'s end is recorded from now on. Ask before looking whether it
    /// has ended, so that an end in between is not missed.
    pub fn watch_end(&self, pid: Pid) -> EndWatch {
        self.waiters.watch(pid)
    }

    /// What the host has done since it started.
    pub fn totals(&self) -> Totals {
        Totals {
            spawned: self.counts.spawned.load(Ordering::Relaxed),
            started: self.counts.started.load(Ordering::Relaxed),
            ended: self.counts.ended.load(Ordering::Relaxed),
            exited_ok: self.counts.exited_ok.load(Ordering::Relaxed),
        }
    }
}

fn logs_change(pid: Pid, (lines, dropped_bytes): FreshLogs) -> Option<Change> {
    let fresh = !lines.is_empty() || dropped_bytes > 0;
    fresh.then_some(Change::Event(
        pid,
        TaskEvent::Logs {
            lines,
            dropped_bytes,
        },
    ))
}

/// The waits for each task's end, each with its id.
type Waiting = HashMap<Pid, Vec<(u64, oneshot::Sender<()>)>>;

/// Who waits for which task's end. Nearly always empty: an end then costs one atomic read.
#[derive(Debug, Default)]
pub(crate) struct EndWaiters {
    waiting: Mutex<Waiting>,
    /// Waiters registered, kept under the lock.
    count: AtomicUsize,
    next_id: AtomicU64,
}

impl EndWaiters {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A wait for `pid`'s end, which [`EndWaiters::ended`] resolves.
    pub(crate) fn watch(self: &Arc<Self>, pid: Pid) -> EndWatch {
        let (sender, receiver) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.lock();
        waiting.entry(pid).or_default().push((id, sender));
        self.count.fetch_add(1, Ordering::Release);
        EndWatch {
            pid,
            id,
            receiver,
            waiters: Arc::clone(self),
        }
    }

    /// `pid` has ended: its waits resolve.
    pub(crate) fn ended(&self, pid: Pid) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut waiting = self.lock();
        if let Some(senders) = waiting.remove(&pid) {
            self.count.fetch_sub(senders.len(), Ordering::Release);
            for (_, sender) in senders {
                let _ = sender.send(());
            }
        }
    }

    /// The tasks waited for now.
    pub(crate) fn pids(&self) -> Vec<Pid> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.lock().keys().copied().collect()
    }

    fn forget(&self, pid: Pid, id: u64) {
        let mut waiting = self.lock();
        if let Some(senders) = waiting.get_mut(&pid) {
            let before = senders.len();
            senders.retain(|(other, _)| *other != id);
            self.count
                .fetch_sub(before - senders.len(), Ordering::Release);
            if senders.is_empty() {
                waiting.remove(&pid);
            }
        }
    }
}

/// A wait for one task's end; dropping it stops waiting.
#[derive(Debug)]
pub struct EndWatch {
    pid: Pid,
    id: u64,
    receiver: oneshot::Receiver<()>,
    waiters: Arc<EndWaiters>,
}

impl EndWatch {
    /// Resolves when the task's end is recorded, or at `deadline`: whether it ended.
    pub async fn ended_by(&mut self, deadline: tokio::time::Instant) -> bool {
        matches!(
            tokio::time::timeout_at(deadline, &mut self.receiver).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        self.waiters.forget(self.pid, self.id);
    }
}

/// How long an attempt ran, for the console: `7.01s`, or `-` for one that never started.
struct Ran(Option<Duration>);

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ran) => write!(f, "{:.2}s", ran.as_secs_f64()),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::model::{TaskEnd, TaskLogs};
    use crate::store::{ListQuery, MemoryStore, Page, Remembered};

    /// A store in memory that counts the records read from it.
    #[derive(Debug)]
    struct Counting {
        inner: MemoryStore,
        reads: AtomicUsize,
    }

    impl Store for Counting {
        fn submit(&self, batch: Vec<Change>, done: Option<Done>) {
            self.inner.submit(batch, done);
        }
        fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(pid)
        }
        fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
            self.inner.logs(pid)
        }
        fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
            self.inner.list(query)
        }
        fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
            self.inner.remembered(key)
        }
        fn submission(&self, pid: Pid) -> Result<Option<(TaskRecord, TaskSpec)>, StoreError> {
            self.inner.submission(pid)
        }
        fn schedules(&self) -> Result<Vec<crate::store::StoredSchedule>, StoreError> {
            self.inner.schedules()
        }
        fn paused_workers(&self) -> Result<Vec<String>, StoreError> {
            self.inner.paused_workers()
        }
        fn worker_limits(&self) -> Result<Vec<(String, String)>, StoreError> {
            self.inner.worker_limits()
        }
        fn checkpoint(
            &self,
            pid: Pid,
        ) -> Result<Option<crate::model::StoredCheckpoint>, StoreError> {
            self.inner.checkpoint(pid)
        }
    }

    /// Issue #20, item 6: an end published to an open event stream is built from the end
    /// itself; the store's writer, which runs the publishing, never waits on a read of it.
    #[test]
    fn an_end_is_published_without_reading_the_store() {
        let store = Arc::new(Counting {
            inner: MemoryStore::new(100),
            reads: AtomicUsize::new(0),
        });
        let events = Arc::new(EventBus::new(crate::events::StreamLimits {
            max: 4,
            per_client: 4,
        }));
        let ledger = Ledger::new(store.clone(), Arc::clone(&events), Metrics::new());
        let mut subscription = events
            .subscribe(std::net::Ipv4Addr::LOCALHOST.into(), false)
            .expect("a place");
        let pid = Pid::new(1, 1);
        let (worker, name): (Arc<str>, Arc<str>) = (Arc::from("w"), Arc::from("report"));
        let record = TaskRecord::spawned(pid, "report".into(), 0, Arc::clone(&worker), "v".into());
        let spec = TaskSpec {
            module_sha256: String::new(),
            payload: None,
            deadline_secs: 30,
            max_attempts: 1,
            on_host_loss: crate::model::OnHostLoss::Restart,
            ready_at: None,
            priority: crate::model::DEFAULT_PRIORITY,
        };
        ledger.accepted(record, spec, None, (false, false), None, drop);
        let end = TaskEnd::exited(7);
        let ending = Ending {
            step: 3,
            fuel: 10,
            end,
            ran: None,
            attempt: 1,
        };
        ledger.ended(pid, &worker, &name, ending, SystemTime::now(), None, || {});
        assert_eq!(store.reads.load(Ordering::SeqCst), 0, "the store was read");
        let mut exit = None;
        while let Ok(event) = subscription.receiver.try_recv() {
            if event.kind == "exit" {
                exit = Some(event);
            }
        }
        let exit = exit.expect("an exit event");
        let data: serde_json::Value = serde_json::from_str(&exit.data).expect("JSON");
        let written = store.inner.get(pid).expect("read").expect("the task");
        assert_eq!(
            data,
            crate::events::exit_data(&written),
            "as the record says"
        );
    }
}
