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

use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::model::{LogLine, Pid, TaskEnd, TaskEvent, TaskRecord};
use crate::store::{Change, Store, StoreError};

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
}

impl Ending {
    /// The end of a task that never started (killed while waiting, refused at shutdown).
    pub fn unstarted(end: TaskEnd) -> Self {
        Self {
            step: 0,
            fuel: 0,
            end,
            ran: None,
        }
    }
}

/// Log lines a task produced since they were last recorded, with the running total of bytes
/// its capture cap discarded.
pub type FreshLogs = (Vec<LogLine>, u64);

/// Records what happens to tasks.
#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    metrics: Arc<Metrics>,
    waiters: EndWaiters,
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
            waiters: EndWaiters::default(),
            spawned: AtomicU64::new(0),
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            exited_ok: AtomicU64::new(0),
        }
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Writes `batch` and publishes it. A write that fails is logged: the task itself goes on.
    fn commit(&self, pid: Pid, batch: Vec<Change>) -> Result<(), StoreError> {
        // Built before the store takes the changes, sent only once it has them.
        let published = if self.events.listening() {
            batch
                .iter()
                .flat_map(|change| self.events.prepare(change))
                .collect()
        } else {
            Vec::new()
        };
        if let Err(error) = self.store.commit(batch) {
            tracing::error!(pid = %pid, %error, "a task's change was not recorded");
            return Err(error);
        }
        self.events.send(published);
        Ok(())
    }

    /// A task was accepted. Fails, and nothing is recorded, if the store cannot take it.
    pub fn accepted(&self, record: TaskRecord) -> Result<(), StoreError> {
        let (pid, worker) = (record.pid, Arc::clone(&record.worker));
        self.commit(pid, vec![Change::Accepted(record)])?;
        self.metrics.spawned(&worker);
        self.spawned.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// An attempt is up: instantiated in `instantiation`, `since_spawn` after it was accepted
    /// or due to restart.
    pub fn started(
        &self,
        pid: Pid,
        worker: &Arc<str>,
        steps: u32,
        fuel: u64,
        instantiation: Duration,
        since_spawn: Duration,
    ) {
        self.metrics.started(worker, instantiation, since_spawn);
        self.started.fetch_add(1, Ordering::Relaxed);
        let at = SystemTime::now();
        let event = TaskEvent::Started { at, steps, fuel };
        let _ = self.commit(pid, vec![Change::Event(pid, event)]);
    }

    /// The task woke for step `step` of `steps`, having burnt `fuel` in all.
    pub fn progress(&self, pid: Pid, step: u32, steps: u32, fuel: u64) {
        let event = TaskEvent::Progress { step, steps, fuel };
        let _ = self.commit(pid, vec![Change::Event(pid, event)]);
    }

    /// The task logged or printed `logs` since they were last recorded.
    pub fn logs(&self, pid: Pid, logs: FreshLogs) {
        if let Some(change) = logs_change(pid, logs) {
            let _ = self.commit(pid, vec![change]);
        }
    }

    /// An attempt failed and the task will run again as `next_attempt`.
    pub fn restarting(
        &self,
        pid: Pid,
        worker: &Arc<str>,
        fuel: u64,
        end: TaskEnd,
        next_attempt: u32,
    ) {
        self.metrics.restarted(worker, &end, fuel);
        let at = SystemTime::now();
        let event = TaskEvent::Restarting {
            at,
            fuel,
            end,
            next_attempt,
        };
        let _ = self.commit(pid, vec![Change::Event(pid, event)]);
    }

    /// The task ended `at`, which the caller reads before it gives the task's place back, so
    /// that a task that waited for the place never seems to start before this one ended. Its
    /// last log lines are recorded with its end, in one write.
    pub fn ended(
        &self,
        pid: Pid,
        worker: &Arc<str>,
        ending: Ending,
        at: SystemTime,
        last_logs: Option<FreshLogs>,
    ) {
        let Ending {
            step,
            fuel,
            end,
            ran,
        } = ending;
        tracing::info!(
            pid = %pid,
            worker = %worker,
            step,
            status = end.status.as_str(),
            outcome = end.outcome.as_str(),
            exit_code = end.exit_code,
            error = end.error.as_deref(),
            fuel,
            "Worker done, exiting"
        );
        self.metrics.ended(worker, &end, fuel, ran);
        if end.exit_code == Some(0) {
            self.exited_ok.fetch_add(1, Ordering::Relaxed);
        }
        self.ended.fetch_add(1, Ordering::Relaxed);
        let mut batch: Vec<Change> = last_logs
            .and_then(|logs| logs_change(pid, logs))
            .into_iter()
            .collect();
        batch.push(Change::Event(pid, TaskEvent::Ended { at, fuel, end }));
        if self.commit(pid, batch).is_ok()
            && self.events.listening()
            && let Ok(Some(record)) = self.store.get(pid)
        {
            self.events.exit(&record);
        }
        self.waiters.ended(pid);
    }

    /// Resolves once task `pid`'s end is recorded from now on. Ask before looking whether it
    /// has ended, so that an end in between is not missed.
    pub fn watch_end(self: &Arc<Self>, pid: Pid) -> EndWatch {
        self.waiters.watch(pid, Arc::clone(self))
    }

    /// What the host has done since it started.
    pub fn totals(&self) -> Totals {
        Totals {
            spawned: self.spawned.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            ended: self.ended.load(Ordering::Relaxed),
            exited_ok: self.exited_ok.load(Ordering::Relaxed),
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
struct EndWaiters {
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

    fn watch(&self, pid: Pid, ledger: Arc<Ledger>) -> EndWatch {
        let (sender, receiver) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.lock();
        waiting.entry(pid).or_default().push((id, sender));
        self.count.fetch_add(1, Ordering::Release);
        EndWatch {
            pid,
            id,
            receiver,
            ledger,
        }
    }

    fn ended(&self, pid: Pid) {
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
    ledger: Arc<Ledger>,
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
        self.ledger.waiters.forget(self.pid, self.id);
    }
}
