//! The task host without HTTP: admission, pids, the process table and the scheduler, with the
//! operations the API offers. The HTTP layer and the benchmarks both drive this.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often a shutdown looks whether the running tasks have ended.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

use anyhow::Context as _;

use crate::capacity::{self, Admission, Admitted, Refused};
use crate::config::Config;
use crate::events::{EventBus, Notifying, Subscription};
pub use crate::ledger::Totals;
use crate::ledger::{Ending, Ledger};
use crate::metrics::{self, Metrics};
use crate::sandbox::killed;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::scheduler::{Scheduler, TaskSpec};
use crate::table::{
    ListQuery, MemoryTable, Outcome, Page, Pid, ProcessTable, Status, TaskEnd, TaskRecord,
};
use crate::workers::Registry;

/// A task as a client asks for it, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub name: String,
    /// The worker to run; the default one when absent.
    pub worker: Option<String>,
    pub duration: u32,
    /// JSON text handed to the guest.
    pub payload: Option<String>,
    /// Wall-clock limit in seconds from start; the duration plus the grace when absent.
    pub deadline: Option<u32>,
    /// How many times it may run in all (1: never restarted; see `TaskSpec::max_attempts`);
    /// the worker's policy when absent.
    pub max_attempts: Option<u32>,
}

/// Why a task was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the host is full ({live} live tasks and {queued} waiting); retry later")]
    Full { live: u32, queued: usize },
    #[error("the host is shutting down")]
    ShuttingDown,
    #[error("no worker named {name:?}; the workers are: {known}")]
    UnknownWorker { name: String, known: String },
    #[error("{what} must be at most {max} seconds for worker {worker:?}")]
    TooLong {
        what: &'static str,
        worker: String,
        max: u32,
    },
}

/// Why a task could not be killed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("no task with pid {0}")]
    NotFound(Pid),
    #[error("task {pid} has already ended ({status})")]
    AlreadyEnded { pid: Pid, status: &'static str },
}

/// The running host.
#[derive(Debug)]
pub struct Host {
    ledger: Arc<Ledger>,
    events: Arc<EventBus>,
    scheduler: Arc<Scheduler>,
    admission: Arc<Admission>,
    pids: PidSource,
    deadline_grace_secs: u32,
    sandbox: Arc<Sandbox>,
    workers: Arc<Registry>,
}

impl Host {
    /// Loads the workers, sizes the pool and admission, and starts the scheduler threads.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let sandbox = Arc::new(Sandbox::new(SandboxConfig {
            max_memory_bytes: config.pool_slot_bytes(),
            max_log_bytes: config.max_log_bytes,
            capacity: config.capacity,
            epoch_interruption: config.epoch_interruption,
            cache_dir: config.module_cache_dir(),
        })?);
        let metrics = Metrics::new();
        let workers = Arc::new(Registry::start(
            Arc::clone(&sandbox),
            &config.workers,
            Arc::clone(&metrics),
        )?);
        if config.watch_interval_ms > 0 {
            workers
                .watch(Duration::from_millis(config.watch_interval_ms))
                .context("starting the module watcher")?;
        }
        let per_task = workers.get(None).map_or(0, |worker| {
            sandbox.mappings_per_instance(&worker.current().module)
        });
        let capacity = capacity::effective_capacity(config.capacity, per_task);
        tracing::info!(
            capacity,
            worker_threads = config.worker_threads(),
            workers = %workers.names(),
            "host ready"
        );
        let events = Arc::new(EventBus::new(config.max_subscribers));
        let table: Arc<dyn ProcessTable> = Arc::new(Notifying::new(
            MemoryTable::new(config.max_history),
            Arc::clone(&events),
        ));
        let ledger = Arc::new(Ledger::new(table, metrics));
        let scheduler = Arc::new(
            Scheduler::start(config.worker_threads(), Arc::clone(&ledger))
                .context("starting the scheduler threads")?,
        );
        let admission = Admission::new(capacity, config.max_queue);
        {
            // A waiting task that gets a place goes to a scheduler thread. Admission closes
            // before the scheduler does, so this submit is never refused in practice; if it
            // were, the task's end is still recorded.
            let (scheduler, ledger) = (Arc::clone(&scheduler), Arc::clone(&ledger));
            admission.set_dispatch(Box::new(move |spec, permit| {
                if let Err(spec) = scheduler.submit(spec, permit) {
                    record_end(&ledger, &spec, shutting_down());
                }
            }));
        }
        Ok(Self {
            ledger,
            events,
            scheduler,
            admission,
            pids: PidSource::new(),
            deadline_grace_secs: config.deadline_grace_secs,
            sandbox,
            workers,
        })
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.ledger.metrics()
    }

    /// The Prometheus exposition of the metrics, with the gauges read now.
    pub fn render_metrics(&self) -> String {
        let metrics = self.ledger.metrics();
        metrics.gauge(metrics::TASKS_RUNNING, f64::from(self.live()));
        metrics.gauge(metrics::TASKS_QUEUED, self.queued() as f64);
        metrics.gauge(metrics::CAPACITY, f64::from(self.capacity()));
        metrics.gauge(metrics::EVENT_SUBSCRIBERS, self.events.subscribers() as f64);
        if let Some(pool) = self.sandbox.pool_metrics() {
            metrics.gauge(
                metrics::POOL_COMPONENT_INSTANCES,
                pool.component_instances() as f64,
            );
            metrics.gauge(metrics::POOL_CORE_INSTANCES, pool.core_instances() as f64);
            metrics.gauge(metrics::POOL_MEMORIES, pool.memories() as f64);
            metrics.gauge(metrics::POOL_TABLES, pool.tables() as f64);
            metrics.gauge(
                metrics::POOL_UNUSED_WARM_MEMORIES,
                f64::from(pool.unused_warm_memories()),
            );
            metrics.gauge(
                metrics::POOL_UNUSED_MEMORY_RESIDENT,
                pool.unused_memory_bytes_resident() as f64,
            );
        }
        metrics.render()
    }

    /// The worker registry.
    pub fn workers(&self) -> &Arc<Registry> {
        &self.workers
    }

    /// Accepts a task: admits it (or queues it), records it and hands it to a scheduler
    /// thread. Returns its pid at once; the task runs in the background.
    pub fn spawn(&self, task: NewTask) -> Result<Pid, SpawnError> {
        let NewTask {
            name,
            worker,
            duration,
            payload,
            deadline,
            max_attempts,
        } = task;
        let worker =
            self.workers
                .get(worker.as_deref())
                .ok_or_else(|| SpawnError::UnknownWorker {
                    name: worker.unwrap_or_default(),
                    known: self.workers.names(),
                })?;
        let settings = &worker.settings;
        let too_long = |what, max| SpawnError::TooLong {
            what,
            worker: settings.name.clone(),
            max,
        };
        if duration > settings.max_duration_secs {
            return Err(too_long("duration", settings.max_duration_secs));
        }
        let max_deadline = settings
            .max_duration_secs
            .saturating_add(self.deadline_grace_secs);
        if deadline.is_some_and(|deadline| deadline > max_deadline) {
            return Err(too_long("deadline", max_deadline));
        }
        let deadline = Duration::from_secs(u64::from(
            deadline.unwrap_or(duration.saturating_add(self.deadline_grace_secs)),
        ));
        let pid = self.pids.next();
        let spec = TaskSpec {
            pid,
            name,
            version: worker.current(),
            duration,
            payload,
            deadline,
            max_attempts: max_attempts.unwrap_or(settings.max_attempts).max(1),
            attempt: 1,
            ready_at: Instant::now(),
        };
        let record = |spec: &TaskSpec| {
            tracing::info!(pid = %pid, worker = %spec.version.worker(), step = 0,
                version = %spec.version.id, name = %spec.name, duration, "Task process spawned");
            self.ledger.spawned(TaskRecord::spawned(
                pid,
                spec.name.clone(),
                duration,
                Arc::clone(spec.version.worker()),
                Arc::clone(&spec.version.id),
            ));
        };
        match self.admission.admit(spec, record) {
            Ok(Admitted::Now(spec, permit)) => {
                if let Err(spec) = self.scheduler.submit(spec, permit) {
                    record_end(&self.ledger, &spec, shutting_down());
                    return Err(SpawnError::ShuttingDown);
                }
            }
            Ok(Admitted::Queued) => {
                tracing::info!(pid = %pid, worker = %worker.name, step = 0,
                    "Task queued: every place taken");
            }
            Err(Refused::Full) => {
                return Err(SpawnError::Full {
                    live: self.admission.limit(),
                    queued: self.admission.queue_limit(),
                });
            }
            Err(Refused::Closed) => return Err(SpawnError::ShuttingDown),
        }
        Ok(pid)
    }

    /// Asks for a task to be killed: at once if it is queued or sleeping, when its step returns
    /// if it is running one. Its end is recorded as `killed`.
    pub fn kill(&self, pid: Pid) -> Result<(), KillError> {
        let record = self
            .ledger
            .table()
            .get(pid)
            .ok_or(KillError::NotFound(pid))?;
        if record.status.is_terminal() {
            return Err(KillError::AlreadyEnded {
                pid,
                status: record.status.as_str(),
            });
        }
        tracing::info!(pid = %pid, worker = %record.worker, step = record.step, "Killing task");
        match self.admission.unqueue(pid) {
            Some(spec) => record_end(&self.ledger, &spec, killed()),
            None => self.scheduler.kill(pid),
        }
        Ok(())
    }

    /// Shuts down: refuses new tasks at once, gives running ones `grace` to end, kills the
    /// rest, and returns once every task's end is recorded and the scheduler threads are gone.
    pub fn shutdown(&self, grace: Duration) {
        // Admission first: from here no waiting task is handed to the scheduler.
        for waiting in self.admission.close() {
            record_end(&self.ledger, &waiting, killed());
        }
        self.scheduler.close();
        self.events.close();
        let deadline = Instant::now() + grace;
        while self.live() > 0 && Instant::now() < deadline {
            std::thread::sleep(SHUTDOWN_POLL);
        }
        let remaining = self.live();
        if remaining > 0 {
            tracing::warn!(remaining, "grace period over; killing the remaining tasks");
            self.scheduler.kill_all();
        }
        self.scheduler.join();
        tracing::info!(totals = ?self.totals(), "every task has ended");
    }

    /// Subscribes to every task event from now on, if the subscriber limit allows.
    pub fn subscribe(&self) -> Option<Subscription> {
        self.events.subscribe()
    }

    /// Tasks matching `query`, newest first, a page at a time.
    pub fn list(&self, query: &ListQuery) -> Page {
        self.ledger.table().list(query)
    }

    /// A task's record, if the table still holds it.
    pub fn get(&self, pid: Pid) -> Option<TaskRecord> {
        self.ledger.table().get(pid)
    }

    /// Tasks accepted and not yet ended.
    pub fn live(&self) -> u32 {
        self.admission.live()
    }

    /// The most tasks that may be live at once.
    pub fn capacity(&self) -> u32 {
        self.admission.limit()
    }

    /// Tasks accepted and waiting for a place.
    pub fn queued(&self) -> usize {
        self.admission.queued()
    }

    /// What the host has done since it started.
    pub fn totals(&self) -> Totals {
        self.ledger.totals()
    }
}

/// Records the end of a task the scheduler never took.
fn record_end(ledger: &Ledger, spec: &TaskSpec, end: TaskEnd) {
    let at = SystemTime::now();
    ledger.ended(spec.pid, spec.version.worker(), Ending::unstarted(end), at);
}

fn shutting_down() -> TaskEnd {
    TaskEnd {
        status: Status::Failed,
        outcome: Outcome::InstantiationFailed,
        exit_code: None,
        error: Some(SpawnError::ShuttingDown.to_string()),
    }
}

/// Hands out pids: this host's random boot id and a counter that never wraps in practice.
#[derive(Debug)]
struct PidSource {
    boot: u32,
    next: AtomicU64,
}

impl PidSource {
    fn new() -> Self {
        // RandomState is seeded from the OS's randomness, once per process.
        let boot = RandomState::new().hash_one(std::process::id()) as u32;
        Self {
            boot,
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> Pid {
        Pid::new(self.boot, self.next.fetch_add(1, Ordering::Relaxed))
    }
}
