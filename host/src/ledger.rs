//! The one place a task's start, restarts and end are recorded: in the process table, in the
//! host's running totals and in the metrics, whichever path the task took: a scheduler thread,
//! a kill while it waited in the queue, or a shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::metrics::Metrics;
use crate::table::{Pid, ProcessTable, TaskEnd, TaskEvent, TaskRecord};

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

/// Records what happens to tasks.
#[derive(Debug)]
pub struct Ledger {
    table: Arc<dyn ProcessTable>,
    metrics: Arc<Metrics>,
    spawned: AtomicU64,
    started: AtomicU64,
    ended: AtomicU64,
    exited_ok: AtomicU64,
}

impl Ledger {
    pub fn new(table: Arc<dyn ProcessTable>, metrics: Arc<Metrics>) -> Self {
        Self {
            table,
            metrics,
            spawned: AtomicU64::new(0),
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            exited_ok: AtomicU64::new(0),
        }
    }

    /// The process table, for the events that are only the table's business (progress, logs).
    pub fn table(&self) -> &dyn ProcessTable {
        self.table.as_ref()
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A task was accepted.
    pub fn spawned(&self, record: TaskRecord) {
        self.metrics.spawned(&record.worker);
        self.spawned.fetch_add(1, Ordering::Relaxed);
        self.table.insert(record);
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
        self.table
            .apply(pid, TaskEvent::Started { at, steps, fuel });
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
        self.table.apply(pid, event);
    }

    /// The task ended `at`, which the caller reads before it gives the task's place back, so
    /// that a task that waited for the place never seems to start before this one ended.
    pub fn ended(&self, pid: Pid, worker: &Arc<str>, ending: Ending, at: SystemTime) {
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
        self.table.apply(pid, TaskEvent::Ended { at, fuel, end });
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
