//! The task host without HTTP: the operations the API offers (spawn, kill, get, list, logs,
//! subscribe, shutdown) over the runtime, the registry, the scheduler and the store. The HTTP
//! layer and the benchmarks both drive this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::Config;
use crate::events::{EventBus, Subscription};
use crate::ledger::{EndWatch, Ledger, Totals};
use crate::metrics::{self, Metrics};
use crate::model::{NewTask, Pid, Pids, TaskLogs, TaskRecord};
use crate::registry::{Registry, UnknownWorker};
use crate::runtime::{Sandbox, SandboxConfig};
use crate::sched::{Job, NotPlaced, Placed, Scheduler};
use crate::store::{ListQuery, MemoryStore, Page, Store, StoreError};

/// Why a task was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the host is full ({live} live tasks and {queued} waiting); retry later")]
    Full { live: u32, queued: usize },
    #[error("the host is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    UnknownWorker(#[from] UnknownWorker),
    #[error("{what} must be at most {max} seconds for worker {worker:?}")]
    TooLong {
        what: &'static str,
        worker: String,
        max: u32,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a task could not be killed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("no task with pid {0}")]
    NotFound(Pid),
    #[error("task {pid} has already ended ({status})")]
    AlreadyEnded { pid: Pid, status: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running host.
#[derive(Debug)]
pub struct Host {
    store: Arc<dyn Store>,
    ledger: Arc<Ledger>,
    events: Arc<EventBus>,
    scheduler: Scheduler,
    pids: Pids,
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
        let capacity = crate::sys::effective_capacity(config.capacity, per_task);
        tracing::info!(
            capacity,
            worker_threads = config.worker_threads(),
            workers = %workers.names(),
            "host ready"
        );
        let events = Arc::new(EventBus::new(config.max_subscribers));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(config.max_history));
        let ledger = Arc::new(Ledger::new(
            Arc::clone(&store),
            Arc::clone(&events),
            metrics,
        ));
        let scheduler = Scheduler::start(
            config.worker_threads(),
            capacity,
            config.max_queue,
            Arc::clone(&ledger),
        )
        .context("starting the scheduler threads")?;
        Ok(Self {
            store,
            ledger,
            events,
            scheduler,
            pids: Pids::new(),
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

    /// Accepts a task: admits it (or queues it), records it and hands it to its scheduler
    /// thread. Returns its pid at once; the task runs in the background.
    pub fn spawn(&self, task: NewTask) -> Result<Pid, SpawnError> {
        let NewTask {
            name,
            worker,
            duration,
            payload,
            deadline,
            restart,
        } = task;
        let worker = self.workers.get(worker.as_deref())?;
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
        let job = Job {
            pid,
            name,
            version: worker.current(),
            duration,
            payload,
            deadline,
            max_attempts: restart.unwrap_or(settings.restart).max_attempts(),
            attempt: 1,
            ready_at: Instant::now(),
        };
        let record = |job: &Job| {
            tracing::info!(pid = %pid, worker = %job.version.worker(), step = 0,
                version = %job.version.id, name = %job.name, duration, "Task process spawned");
            self.ledger.accepted(TaskRecord::spawned(
                pid,
                job.name.clone(),
                duration,
                Arc::clone(job.version.worker()),
                Arc::clone(&job.version.id),
            ))
        };
        match self.scheduler.admit(job, record) {
            Ok(Placed::Running) => Ok(pid),
            Ok(Placed::Queued) => {
                tracing::info!(pid = %pid, worker = %worker.name, step = 0,
                    "Task queued: every place taken");
                Ok(pid)
            }
            Err(NotPlaced::Full) => Err(SpawnError::Full {
                live: self.scheduler.capacity(),
                queued: self.scheduler.queue_limit(),
            }),
            Err(NotPlaced::Closed) => Err(SpawnError::ShuttingDown),
            Err(NotPlaced::NotRecorded(error)) => Err(SpawnError::Store(error)),
        }
    }

    /// Asks for a task to be killed: at once if it is queued or sleeping, within an epoch
    /// tick if it is running a step. Its end is recorded as `killed`.
    pub fn kill(&self, pid: Pid) -> Result<(), KillError> {
        let record = self.store.get(pid)?.ok_or(KillError::NotFound(pid))?;
        if record.status.is_terminal() {
            return Err(KillError::AlreadyEnded {
                pid,
                status: record.status.as_str(),
            });
        }
        tracing::info!(pid = %pid, worker = %record.worker, step = record.step, "Killing task");
        self.scheduler.kill(pid);
        // A task that ended after the look above never reads the kill: take it back, so the
        // kill set empties again. Its end is recorded before the kill is forgotten on its
        // thread, so one of the two looks sees the other.
        if self
            .store
            .get(pid)?
            .is_none_or(|record| record.status.is_terminal())
        {
            self.scheduler.forget_kill(pid);
        }
        Ok(())
    }

    /// Resolves once task `pid`'s end is recorded from now on; see [`Ledger::watch_end`].
    pub fn watch_end(&self, pid: Pid) -> EndWatch {
        self.ledger.watch_end(pid)
    }

    /// Shuts down: refuses new tasks at once, gives running ones `grace` to end, kills the
    /// rest, and returns once every task's end is recorded and the scheduler threads are gone.
    pub fn shutdown(&self, grace: Duration) {
        self.scheduler.close();
        // After the waiting tasks' ends are published, before the grace period: open streams
        // must not hold up the HTTP server's shutdown.
        self.events.close();
        self.scheduler.finish(grace);
        tracing::info!(totals = ?self.totals(), "every task has ended");
    }

    /// Subscribes to every task event from now on, if the subscriber limit allows.
    pub fn subscribe(&self) -> Option<Subscription> {
        self.events.subscribe()
    }

    /// Tasks matching `query`, newest first, a page at a time.
    pub fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.store.list(query)
    }

    /// A task's record, if the store still holds it.
    pub fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        self.store.get(pid)
    }

    /// A task's captured log, if the store still holds the task.
    pub fn logs(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        self.store.logs(pid)
    }

    /// Tasks accepted and not yet ended.
    pub fn live(&self) -> u32 {
        self.scheduler.live()
    }

    /// The most tasks that may be live at once.
    pub fn capacity(&self) -> u32 {
        self.scheduler.capacity()
    }

    /// Tasks accepted and waiting for a place.
    pub fn queued(&self) -> usize {
        self.scheduler.queued()
    }

    /// What the host has done since it started.
    pub fn totals(&self) -> Totals {
        self.ledger.totals()
    }
}
