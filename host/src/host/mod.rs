//! The task host without HTTP: the operations the API offers (spawn, kill, get, list, logs,
//! subscribe, shutdown) over the runtime, the registry, the scheduler and the store. The HTTP
//! layer and the benchmarks both drive this. What tasks ask of it as actors (send, spawn,
//! monitor, link, names) is in `actors`.

mod actors;
mod admission;
mod calls;
mod cluster;
mod flow;
mod reach;
mod relay;
mod retry;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use crate::actor::{ActorLimits, Actors, Kernel, Placement};
use crate::config::{Config, StoreLocation};
use crate::events::{EventBus, StreamLimits, StreamRefused, Subscription};
use crate::ledger::{EndWatch, Ending, Ledger, Totals};
use crate::metrics::{self, Metrics};
use crate::model::{
    OnHostLoss, Outcome, Pid, Pids, Status, StoredCheckpoint, TaskEnd, TaskLogs, TaskRecord,
    TaskSpec,
};
use crate::registry::{Registry, UnknownWorker};
use crate::runtime::{Image, Sandbox, SandboxConfig};
use crate::sched::{Job, Places, Resume, Scheduler};
use crate::store::{
    Change, Forward, ListQuery, MemoryStore, NodeInfo, NodeSpec, Page, PgStore, SqliteStore, Store,
    StoreError,
};
pub use admission::Accepting;
pub use calls::CallFailed;
use cluster::Cluster;
pub use cluster::{DrainAnswer, DrainError, Drained};
pub use flow::PauseError;
pub use relay::RELAYED;
pub use retry::{MAX_BULK_RETRY, RetryError, RetryFilter};

/// Host losses after which a task ends `failed`/`host_lost` instead of running again.
const MAX_HOST_LOSSES: u32 = 3;

/// How often a wait for the store looks whether the host lost its lease meanwhile.
const FENCE_POLL: Duration = Duration::from_millis(10);

/// How often ended tasks past the history and expired idempotency keys are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a task was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the host is full ({live} live tasks and {queued} waiting); retry later")]
    Full { live: u32, queued: usize },
    #[error(
        "the host starts new tasks {lag_ms} ms after they are accepted, past its \
         --max-start-lag of {max_ms} ms: it is taking no more until it catches up; retry later"
    )]
    Behind { lag_ms: u128, max_ms: u128 },
    #[error("{max} tasks wait to run later already (--max-scheduled); retry later")]
    TooManyScheduled { max: usize },
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
    #[error(
        "the Idempotency-Key was used before with a different request body (for task {0}); \
         use a new key for a new request"
    )]
    KeyReused(Pid),
    #[error("a request with this Idempotency-Key is in progress; retry once it is answered")]
    KeyInFlight,
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
    idempotency_ttl: Duration,
    /// `--max-start-lag`: zero never refuses for it.
    max_start_lag: Duration,
    /// `--max-scheduled`.
    max_scheduled: usize,
    /// Held while a worker is paused or resumed, so that the store and the scheduler agree.
    pausing: Mutex<()>,
    /// Workers' limits set over the API, as this host follows them from the store (a worker
    /// missing has its registry file's); held while they change.
    limit_overrides: Mutex<HashMap<String, crate::config::FlowLimits>>,
    /// Idempotency keys whose first request is being answered.
    keys_in_flight: Arc<Mutex<HashSet<String>>>,
    sandbox: Arc<Sandbox>,
    workers: Arc<Registry>,
    actors: Arc<Actors>,
    /// Its place in a cluster, when its store is shared.
    cluster: Option<Arc<Cluster>>,
    /// Accepted tasks that the shutdown left unstarted.
    leftovers: Arc<Leftovers>,
    /// The largest payload a task may give a child: a request body's bound.
    max_child_payload_bytes: usize,
    /// The bearer token a call relayed to another host of the cluster carries: this host's
    /// first API token (a cluster's hosts share theirs), if it has any.
    relay_token: Option<String>,
    /// `--max-result-bytes`: what a relayed answer may carry of a task's end.
    max_result_bytes: usize,
    /// `--checkpoint-on-shutdown`.
    checkpoint_on_shutdown: bool,
}

/// Tasks a shutdown leaves accepted and unstarted: those waiting for a place, and those whose
/// acceptance was answered as admission closed. With a store that outlives the host, none of
/// them ends: they run after the restart, or, in a cluster, go back to the shared queue. With
/// the store in memory, which is forgotten anyway, they end `failed` (or `killed`, for those
/// that waited), so that every task the host knew of has its end.
#[derive(Debug)]
struct Leftovers {
    durable: bool,
    scheduler: Scheduler,
    actors: Arc<Actors>,
    pids: Mutex<Vec<Pid>>,
}

impl Leftovers {
    /// Keeps `job`, accepted and not started, for after the shutdown.
    fn keep(&self, job: &Job) {
        if !self.durable {
            self.scheduler
                .end_unstarted(job, TaskEnd::shut_down_before_start());
            return;
        }
        // Its mailbox goes with this host; the task keeps its acceptance.
        self.actors
            .ended(job.pid, &TaskEnd::host_lost(job.attempt), drop);
        self.pids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(job.pid);
    }

    /// The tasks kept so far.
    fn take(&self) -> Vec<Pid> {
        std::mem::take(
            &mut *self
                .pids
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl Host {
    /// Opens the store, loads the workers, sizes the pool and admission, starts the scheduler
    /// threads, and runs again every task the store holds unfinished (a host lost before it
    /// ended them), before anything else is accepted.
    pub fn start(config: &Config) -> anyhow::Result<Arc<Self>> {
        // A shared store's lease is set as it opens, from a moment after this.
        let joined = Instant::now();
        let (store, shared) = open_store(config)?;
        let sandbox = Arc::new(Sandbox::new(SandboxConfig {
            max_memory_bytes: config.pool_slot_bytes(),
            max_log_bytes: config.max_log_bytes,
            max_sends_per_step: config.max_sends_per_step,
            max_result_bytes: config.max_result_bytes,
            capacity: config.capacity,
            epoch_interruption: config.epoch_interruption,
            cache_dir: config.module_cache_dir(),
        })?);
        let metrics = Metrics::new();
        let workers = Arc::new(Registry::start(
            Arc::clone(&sandbox),
            &config.workers,
            Arc::clone(&metrics),
            Arc::clone(&store),
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
        let events = Arc::new(EventBus::new(StreamLimits {
            max: config.max_subscribers,
            per_client: config.max_subscribers_per_client,
        }));
        let ledger = Arc::new(Ledger::new(
            Arc::clone(&store),
            Arc::clone(&events),
            metrics,
        ));
        let actors = Arc::new(Actors::new(ActorLimits {
            max_messages: config.max_mailbox_messages,
            max_message_bytes: config.max_message_bytes,
            max_mailbox_bytes: config.max_mailbox_bytes,
            max_mailboxes_bytes: config.max_mailboxes_bytes,
            max_watches: config.max_watches,
            max_descendants: config.max_descendants,
            max_spawns_per_sec: config.max_spawns_per_sec,
        }));
        let scheduler = Scheduler::start(
            config.worker_threads(),
            i32::from(config.guest_nice),
            Places {
                capacity,
                max_queue: config.max_queue,
                max_scheduled: config.max_scheduled,
            },
            // In a cluster, the workers' limits are counted in the shared store, for all hosts.
            shared.is_none().then_some(config.workers.as_slice()),
            Arc::clone(&ledger),
            Arc::clone(&actors),
            shared
                .as_ref()
                .and_then(|_| tokio::runtime::Handle::try_current().ok()),
        )
        .context("starting the scheduler threads")?;
        let pids = match &shared {
            // Its id in the cluster: no other host has it.
            Some(shared) => Pids::with_boot(shared.node()),
            None => Pids::new(),
        };
        let last = store.last_seq(pids.boot())?;
        let cluster = shared.map(|shared| Arc::new(Cluster::new(shared, config, joined)));
        let leftovers = Arc::new(Leftovers {
            durable: store.durable(),
            scheduler: scheduler.clone(),
            actors: Arc::clone(&actors),
            pids: Mutex::default(),
        });
        let host = Arc::new(Self {
            store,
            ledger,
            events,
            scheduler,
            pids: pids.after(last),
            deadline_grace_secs: config.deadline_grace_secs,
            idempotency_ttl: config.idempotency_ttl,
            max_start_lag: config.max_start_lag,
            max_scheduled: config.max_scheduled,
            pausing: Mutex::new(()),
            limit_overrides: Mutex::new(HashMap::new()),
            keys_in_flight: Arc::default(),
            sandbox,
            workers,
            actors,
            cluster,
            leftovers,
            max_child_payload_bytes: config.max_body_bytes,
            relay_token: config.api_tokens.first().cloned(),
            max_result_bytes: config.max_result_bytes,
            checkpoint_on_shutdown: config.checkpoint_on_shutdown,
        });
        let kernel: Arc<dyn Kernel> = host.clone();
        host.scheduler.connect(Arc::downgrade(&kernel));
        // Before recovery: a paused worker's recovered tasks wait too.
        host.follow_paused()
            .context("reading the paused workers from the store")?;
        host.follow_limits()
            .context("reading the workers' limits from the store")?;
        host.recover()?;
        host.join_cluster()
            .context("starting the cluster's heartbeat")?;
        start_pruner(
            Arc::downgrade(&host.store),
            config.max_history,
            config.history_ttl,
            config.idempotency_ttl,
        )?;
        Ok(host)
    }

    /// Runs again, in the order they were accepted, the tasks the store holds unfinished.
    fn recover(&self) -> anyhow::Result<()> {
        let begun = Instant::now();
        let unfinished = self
            .store
            .unfinished()
            .context("reading the unfinished tasks from the store")?;
        if unfinished.is_empty() {
            return Ok(());
        }
        let (mut rerun, mut resumed, mut failed, mut waiting) = (0u64, 0u64, 0u64, 0u64);
        // Every recovered task has its mailbox before any runs, so that a task resumed from
        // its checkpoint links to and monitors again the others as it was, whichever comes
        // first.
        let mut placing = Vec::new();
        for (record, spec) in unfinished {
            match self.recover_task(record, spec, &mut placing) {
                Recovered::Rerun => rerun += 1,
                Recovered::Resumed => resumed += 1,
                Recovered::Failed => failed += 1,
                Recovered::Waiting => waiting += 1,
            }
        }
        for (job, scheduled) in placing {
            let placed = if scheduled {
                self.scheduler.schedule(job, false)
            } else {
                self.scheduler.readmit(job)
            };
            if let Err(job) = placed {
                // Recovery runs before admission could close: this is a bug, and the task
                // waits for the next start.
                tracing::error!(pid = %job.pid, "a recovered task found admission closed");
            }
        }
        // What recovery decided (a new attempt, an end) is in the store before the API
        // answers: a client reading a task just after a restart sees its recovered state, not
        // the one the lost host left. The store writes in order, so an empty batch waited for
        // is a barrier.
        self.store
            .wait(Vec::new())
            .context("writing what recovery decided")?;
        tracing::warn!(
            rerun, resumed, failed, waiting,
            took = ?begun.elapsed(),
            "recovered the tasks a lost host left unfinished: those that were running resume \
             from their checkpoint if they have one, or run again from the start (or ended \
             failed, host_lost, where on_host_loss is fail); those waiting wait again, in order"
        );
        Ok(())
    }

    /// Decides what comes of one task the store holds unfinished: ended, or entered and
    /// pushed onto `placing` (with whether it waits for its time) to be placed.
    fn recover_task(
        &self,
        record: TaskRecord,
        spec: TaskSpec,
        placing: &mut Vec<(Job, bool)>,
    ) -> Recovered {
        let pid = record.pid;
        let worker = Arc::clone(&record.worker);
        // An attempt that had started was lost with the host.
        let lost = record.status == Status::Running;
        // One accepted to run later waits for its time again (at once, if it passed).
        let scheduled = record.status == Status::Scheduled;
        let name: Arc<str> = record.name.as_str().into();
        let end_unstarted = |end: TaskEnd| {
            let ending = Ending::unstarted(end, record.attempt);
            self.ledger
                .ended(pid, &worker, &name, ending, SystemTime::now(), None, || {});
        };
        let mut host_losses = record
            .attempts
            .iter()
            .filter(|attempt| attempt.outcome == Outcome::HostLost)
            .count() as u32;
        if lost {
            host_losses += 1;
        }
        // Its checkpoint row: its own policy, and the image to resume it from.
        let row = self.store.checkpoint(pid).unwrap_or_else(|error| {
            tracing::warn!(pid = %pid, %error, "a recovered task's checkpoint could not be read; \
                it runs as if it had none");
            None
        });
        // Handed on at a shutdown, it was not lost: it goes on whatever `on_host_loss` says.
        let handed_over = row.as_ref().is_some_and(|row| {
            row.attempt == record.attempt
                && row.taken.as_ref().is_some_and(|taken| taken.handed_over)
        });
        // A task whose attempts keep going down with their host may be what brings it down:
        // it is not run again without end.
        if lost
            && !handed_over
            && (spec.on_host_loss == OnHostLoss::Fail || host_losses >= MAX_HOST_LOSSES)
        {
            end_unstarted(TaskEnd::host_lost(record.attempt));
            return Recovered::Failed;
        }
        let version = match self.workers.version_of(&worker, &spec.module_sha256) {
            Ok(version) => version,
            Err(error) => {
                tracing::error!(pid = %pid, worker = %worker, %error,
                    "a recovered task's module version cannot be loaded");
                end_unstarted(TaskEnd::failed(
                    Outcome::InstantiationFailed,
                    format!(
                        "after the host was lost, its module version could not be loaded: {error}"
                    ),
                ));
                return Recovered::Failed;
            }
        };
        let checkpoint = self.checkpoint_policy(row.as_ref(), &worker);
        let resume = if lost { resumable(row, &record) } else { None };
        let mut attempt = record.attempt;
        let mut ready_at = Instant::now();
        if resume.is_some() {
            // The same attempt goes on from its checkpoint: no new attempt.
            host_losses -= 1;
        } else if lost {
            attempt += 1;
            let end = TaskEnd::host_lost(record.attempt);
            self.ledger.restarting(
                pid,
                &worker,
                record.fuel_consumed,
                end,
                attempt,
                SystemTime::now(),
            );
        } else if let Some(due) = spec.ready_at {
            // A restart waiting out its backoff waits out what is left of it.
            ready_at += due.duration_since(SystemTime::now()).unwrap_or_default();
        }
        // A mailbox, empty: messages are not kept across a crash, as in Erlang. The root of
        // its own tree for the spawn budget (its tree's live count was lost with the host).
        self.actors.enter_placed(
            pid,
            Placement::root(pid, record.parent, self.scope_of(&worker)),
        );
        let resumed = resume.is_some();
        let mut job = Job::again(
            record,
            spec,
            version,
            attempt,
            host_losses,
            ready_at,
            checkpoint,
        );
        job.resume = resume;
        placing.push((job, scheduled));
        if resumed {
            Recovered::Resumed
        } else if lost {
            Recovered::Rerun
        } else {
            Recovered::Waiting
        }
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
        metrics.gauge(metrics::TASKS_SCHEDULED, self.scheduler.scheduled() as f64);
        metrics.gauge(metrics::CAPACITY, f64::from(self.capacity()));
        metrics.gauge(metrics::EVENT_SUBSCRIBERS, self.events.subscribers() as f64);
        metrics.total(metrics::LOG_LINES_DROPPED, crate::logging::dropped_lines());
        metrics.gauge(
            metrics::MAILBOXES_BYTES,
            self.actors.mailboxes_bytes() as f64,
        );
        metrics.total(metrics::CALL_REPLIES_LATE, self.actors.late_replies());
        let stats = self.store.stats();
        metrics.total(metrics::STORE_COMMITS, stats.commits);
        metrics.total(metrics::STORE_BATCHES, stats.batches);
        metrics.total(metrics::STORE_LOG_LINES_SHED, stats.log_lines_shed);
        metrics.gauge(metrics::STORE_BACKLOG_CHANGES, stats.backlog.changes as f64);
        metrics.gauge(metrics::STORE_BACKLOG_BYTES, stats.backlog.bytes as f64);
        for (cause, failures) in ["environment", "conflict", "content"]
            .into_iter()
            .zip(stats.failures)
        {
            metrics.total_of(metrics::STORE_WRITE_FAILURES, "cause", cause, failures);
        }
        for (change, refused) in stats.refused {
            metrics.total_of(metrics::STORE_REFUSED_CHANGES, "change", change, refused);
        }
        if let Some(cluster) = &self.cluster {
            metrics.total(metrics::STORE_FENCED_WRITES, stats.fenced_writes);
            metrics.gauge(metrics::CLUSTER_QUEUED, cluster.waiting() as f64);
        }
        metrics.gauge(
            metrics::STORE_HEALTHY,
            if self.store.healthy() { 1.0 } else { 0.0 },
        );
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

    /// Asks for a task to be killed: at once if it is queued or sleeping, within an epoch
    /// tick if it is running a step. Its end is recorded as `killed`. For an HTTP handler or a
    /// task's own kill of another: waits for the store without holding the thread.
    pub async fn kill_async(&self, pid: Pid) -> Result<(), KillError> {
        match self.kill_of(pid, self.store.get_async(pid).await?)? {
            Kill::Forward(batch) => forwarded(self.written(batch).await),
            Kill::Here => {
                self.scheduler.kill(pid);
                let record = self.store.get_async(pid).await?;
                self.kill_sent(pid, record);
                Ok(())
            }
        }
    }

    /// How to kill `pid`, whose record the store holds as `record`.
    fn kill_of(&self, pid: Pid, record: Option<TaskRecord>) -> Result<Kill, KillError> {
        let record = record.ok_or(KillError::NotFound(pid))?;
        if record.status.is_terminal() {
            return Err(KillError::AlreadyEnded {
                pid,
                status: record.status.as_str(),
            });
        }
        tracing::info!(pid = %pid, worker = %record.worker, step = record.step, "Killing task");
        if self.cluster.is_some() && !self.actors.holds(pid) {
            // Another host holds it, or it waits in the shared queue: the store keeps the kill
            // for that host (or whichever holds the task next), or ends it at once. Answered
            // once the store has it.
            return Ok(Kill::Forward(vec![Change::Forward {
                to: pid,
                what: Forward::Kill(TaskEnd::killed()),
            }]));
        }
        Ok(Kill::Here)
    }

    /// After a kill sent to this host's scheduler: a task that ended after the look before it
    /// (the store now holds `record`) never reads the kill, so it is taken back and the kill
    /// set empties again. Its thread forgets the kill only once the store has the end, so one
    /// of the two looks sees the other.
    fn kill_sent(&self, pid: Pid, record: Option<TaskRecord>) {
        if record.is_none_or(|record| record.status.is_terminal()) {
            self.scheduler.forget_kill(pid);
        }
    }

    /// Why a wait for the store stops early: this host of a cluster lost its lease (its tasks
    /// are stopped, and what they wait for will not come).
    fn lease_lost(&self) -> Option<StoreError> {
        self.cluster
            .as_ref()
            .is_some_and(|cluster| !cluster.serving())
            .then(|| StoreError::Unavailable("this host has lost its lease in the cluster".into()))
    }

    /// Writes `batch` and waits until the store has it (or has refused it), holding no thread.
    /// A host of a cluster that loses its lease meanwhile stops waiting: its tasks are
    /// stopped, and what they wait for will not come.
    async fn written(&self, batch: Vec<Change>) -> Result<(), StoreError> {
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        self.store.submit(
            batch,
            Some(Box::new(move |result| {
                let _ = sender.send(result);
            })),
        );
        loop {
            match tokio::time::timeout(FENCE_POLL, &mut receiver).await {
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => {
                    return Err(StoreError::Unavailable("the store stopped writing".into()));
                }
                Err(_) => {
                    if let Some(lost) = self.lease_lost() {
                        return Err(lost);
                    }
                }
            }
        }
    }

    /// Resolves once task `pid`'s end is recorded from now on; see [`Ledger::watch_end`].
    pub fn watch_end(&self, pid: Pid) -> EndWatch {
        self.ledger.watch_end(pid)
    }

    /// Task `pid`'s record once it has ended, or as it stands at `deadline` if it has not by
    /// then; `None` for no such task. The wait holds no thread: a task's end here wakes it as
    /// the end is recorded; in a cluster, the end of one another host holds (or that waits in
    /// the shared queue) is looked for in the store each `--cluster-poll`, one query for every
    /// wait. A caller that stops waiting (a client gone) leaves nothing behind.
    pub async fn await_end(
        &self,
        pid: Pid,
        deadline: tokio::time::Instant,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut seen = None;
        loop {
            // Listened for before looking, so that an end in between is heard.
            let mut here = self.ledger.watch_end(pid);
            let mut there = self.watch_remote_end(pid);
            let Some(record) = self.get_async(pid).await?.or(seen) else {
                return Ok(None);
            };
            if record.status.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(Some(record));
            }
            seen = Some(record);
            match &mut there {
                Some(there) => {
                    tokio::select! {
                        _ = here.ended_by(deadline) => {}
                        _ = there.ended_by(deadline) => {}
                    }
                }
                None => {
                    here.ended_by(deadline).await;
                }
            }
            // Then looked at again: ended, or the wait is up (a record evicted meanwhile has
            // ended too, and is answered as last seen).
        }
    }

    /// Shuts down: refuses new tasks at once, gives running ones `grace` to end, kills the
    /// rest, and returns once every task's end is recorded and the scheduler threads are gone.
    /// Tasks accepted and not started stay accepted where the store outlives the host: they run
    /// after the restart, or on another host of a cluster (see [`Leftovers`]).
    pub fn shutdown(&self, grace: Duration) {
        if self.cluster.is_some() {
            // Before admission closes: a claim in flight then would end its tasks here.
            self.stop_claiming();
        }
        let waiting = self.scheduler.close();
        if self.cluster.is_some() {
            self.leave_cluster(waiting);
        } else if self.store.durable() {
            for job in &waiting {
                self.leftovers.keep(job);
            }
        } else {
            for job in &waiting {
                self.scheduler.end_unstarted(job, TaskEnd::killed());
            }
        }
        // After the waiting tasks' ends are published, before the grace period: open streams
        // must not hold up the HTTP server's shutdown.
        self.events.close();
        // With a durable store, tasks that take checkpoints are handed on rather than killed
        // once the grace is over: to the host's next start, or, in a cluster, to the host that
        // takes back this one's tasks once it has left.
        let hand_over = self.checkpoint_on_shutdown && self.store.durable();
        self.scheduler.finish(grace, hand_over);
        // Every end is submitted by now; wait until the store has them all, and every
        // acceptance is answered.
        if let Err(error) = self.store.wait(Vec::new()) {
            tracing::error!(%error, "the store could not take the last ends");
        }
        let left = self.leftovers.take();
        if !left.is_empty() {
            self.hand_back_left(&left);
            tracing::warn!(
                tasks = left.len(),
                "tasks accepted and not started stay accepted: they run after the restart, or \
                 on another host of the cluster"
            );
        }
        self.left_cluster();
        tracing::info!(totals = ?self.totals(), "every task has ended");
    }

    /// Whether this host runs `pid` (or holds it waiting for a place): its events and kills
    /// are local. In a cluster, other tasks are another host's, or wait in the shared queue.
    pub fn holds(&self, pid: Pid) -> bool {
        self.cluster.is_none() || self.actors.holds(pid)
    }

    /// Whether this host is one of a cluster.
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// This host's id and name in its cluster, if it is in one.
    pub fn node(&self) -> Option<(u32, &str)> {
        self.cluster
            .as_ref()
            .map(|cluster| (cluster.store.node(), cluster.store.spec().name.as_str()))
    }

    /// The hosts of this host's cluster; empty for a host alone.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        match &self.cluster {
            Some(cluster) => cluster.nodes().await,
            None => Ok(Vec::new()),
        }
    }

    /// The host's event bus: how events are shaped.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Subscribes `client` to every task event from now on, if the bounds on streams allow
    /// (see [`EventBus::subscribe`]).
    pub fn subscribe(
        &self,
        client: IpAddr,
        dashboard: bool,
    ) -> Result<Subscription, StreamRefused> {
        self.events.subscribe(client, dashboard)
    }

    /// Tasks matching `query`, newest first, a page at a time. For an HTTP handler: a store
    /// that waits for a database waits without holding the handler's thread (see
    /// [`Store::get_async`]).
    pub async fn list_async(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut page = self.store.list_async(query).await?;
        page.tasks = page
            .tasks
            .into_iter()
            .map(|record| self.with_actor(record))
            .collect();
        Ok(page)
    }

    /// A task's record, if the store still holds it, with its mailbox, links and monitors
    /// while it is live; waiting as [`Host::list_async`] does.
    pub async fn get_async(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        let Some(record) = self.store.get_async(pid).await? else {
            return Ok(None);
        };
        let mut record = self.with_actor(record);
        let policy = self.checkpoint_of(&record.worker);
        let row = match self.store.checkpoint_async(pid).await {
            Ok(row) => row,
            Err(error) => {
                tracing::warn!(pid = %pid, %error, "a task's checkpoint row could not be read");
                None
            }
        };
        record.checkpoint = match row {
            Some(row) => Some(Box::new(row.view(policy))),
            None if !policy.is_off() => {
                let row = StoredCheckpoint::policy(pid, policy, record.attempt);
                Some(Box::new(row.view(policy)))
            }
            None => None,
        };
        Ok(Some(record))
    }

    /// A task's record as the store holds it, waiting on this thread: outside an async
    /// runtime (the schedules' thread).
    pub fn get(&self, pid: Pid) -> Result<Option<TaskRecord>, StoreError> {
        self.store.get(pid)
    }

    /// A task's captured log, if the store still holds the task; waiting as
    /// [`Host::list_async`] does.
    pub async fn logs_async(&self, pid: Pid) -> Result<Option<TaskLogs>, StoreError> {
        self.store.logs_async(pid).await
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

/// What became of a task found unfinished at start.
enum Recovered {
    /// Its attempt was lost with the host; it runs again.
    Rerun,
    /// Its attempt was lost with the host; it resumes from its checkpoint.
    Resumed,
    /// It ends: `on_host_loss` is `fail`, or its module is gone.
    Failed,
    /// It had not started (or waited out a backoff); it waits again.
    Waiting,
}

/// What a task whose attempt was lost resumes from: its checkpoint row's image, if it has one
/// of that attempt that reads back, and it has not resumed so often that it may be what brings
/// its host down.
fn resumable(row: Option<StoredCheckpoint>, record: &TaskRecord) -> Option<Box<Resume>> {
    let row = row.filter(|row| row.attempt == record.attempt)?;
    let handed_over = row.taken.as_ref().is_some_and(|taken| taken.handed_over);
    if row.crash_resumes >= MAX_HOST_LOSSES && !handed_over {
        tracing::warn!(pid = %record.pid, resumes = row.crash_resumes,
            "a task resumed from its checkpoint as often as its host may be lost; it runs \
             again from its start instead");
        return None;
    }
    let image = row.taken.as_ref()?.image.as_ref()?;
    match Image::decode(image) {
        Ok(image) => Some(Box::new(Resume {
            image,
            row,
            steps: record.steps,
            started_at: record.started_at,
        })),
        Err(reason) => {
            tracing::warn!(pid = %record.pid, %reason,
                "a task's checkpoint does not read back; it runs again from its start");
            None
        }
    }
}

/// A store opened: as the host uses it, and, when it is shared, as the cluster does.
type Opened = (Arc<dyn Store>, Option<Arc<PgStore>>);

/// Opens the store `config` names; a shared one also as itself, for the cluster.
fn open_store(config: &Config) -> anyhow::Result<Opened> {
    Ok(match config.store_location() {
        StoreLocation::Memory => {
            tracing::warn!(
                "the task store is in memory: tasks, logs and uploaded worker versions are \
                 forgotten at a restart, and tasks accepted but not ended are lost in a crash"
            );
            (Arc::new(MemoryStore::new(config.max_history)), None)
        }
        StoreLocation::Sqlite(path) => {
            let store = SqliteStore::open(
                &path,
                config.store_sync,
                config.store_backlog,
                config.store_log_flush,
                config.store_commit_spacing,
            )?;
            tracing::info!(path = %path.display(), sync = ?config.store_sync, "task store opened");
            (Arc::new(store), None)
        }
        StoreLocation::Postgres(url) => {
            let spec = NodeSpec {
                name: config.node_name(),
                address: config.advertised_address(),
                capacity: config.capacity,
                lease: config.lease,
                max_messages: config.max_mailbox_messages,
            };
            let store = Arc::new(PgStore::open(&url, spec, config.store_backlog)?);
            (store.clone(), Some(store))
        }
    })
}

/// Prunes the store every [`PRUNE_INTERVAL`] while it lives: ended tasks past `max_history`
/// or older than `history_ttl`, and idempotency keys older than `idempotency_ttl`.
fn start_pruner(
    store: Weak<dyn Store>,
    max_history: usize,
    history_ttl: Duration,
    idempotency_ttl: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("store-prune".into())
        .spawn(move || {
            loop {
                std::thread::sleep(PRUNE_INTERVAL);
                let Some(store) = store.upgrade() else {
                    return;
                };
                let now = SystemTime::now();
                let prune = Change::Prune {
                    max_history,
                    ended_before: now
                        .checked_sub(history_ttl)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    keys_before: now
                        .checked_sub(idempotency_ttl)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                };
                if let Err(error) = store.wait(vec![prune]) {
                    tracing::debug!(%error, "pruning the store failed; it is tried again");
                }
            }
        })
        .map(drop)
}

/// How a kill reaches its task.
enum Kill {
    /// Through the store, for the host that holds the task (or holds it next).
    Forward(Vec<Change>),
    /// Through this host's scheduler.
    Here,
}

/// A kill forwarded through the store: done once the store has it, or once the task ended
/// meanwhile (the caller reads how).
fn forwarded(written: Result<(), StoreError>) -> Result<(), KillError> {
    match written {
        Ok(()) | Err(StoreError::NotDelivered) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
