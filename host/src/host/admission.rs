//! Admission: what a task must pass to be accepted (its worker's limits, its idempotency key,
//! the host's health and lag, a place), and its acceptance: recorded, then handed to its
//! scheduler thread.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::{Host, SpawnError};
use crate::actor::Placement;
use crate::model::{NewTask, Pid, Printable, Status, TaskEnd, TaskRecord, TaskSpec};
use crate::registry::Worker;
use crate::sched::{Job, NotScheduled, Placed, Promise, Refused};
use crate::store::{IdempotencyKey, Remembered, StoreError};

/// What [`Host::hold`] gives a submission: its worker, its key dated, and the key held.
type Held<'a> = (&'a Arc<Worker>, Option<IdempotencyKey>, Option<KeyInFlight>);

/// A task being accepted: its pid, and the store's answer to come.
#[derive(Debug)]
pub struct Accepting {
    pub(super) pid: Pid,
    recorded: Option<oneshot::Receiver<Result<(), StoreError>>>,
    /// It waits in a cluster's shared queue: no host holds it yet.
    pub(super) shared: bool,
}

impl Accepting {
    /// A repeat of a request whose key is remembered for `pid`: nothing new to record.
    fn repeat(pid: Pid) -> Self {
        Self {
            pid,
            recorded: None,
            shared: false,
        }
    }

    /// The task's pid once its acceptance is recorded (on disk, with a durable store): what a
    /// `202` may promise.
    pub async fn recorded(self) -> Result<Pid, SpawnError> {
        let answer = match self.recorded {
            None => Ok(Ok(())),
            Some(receiver) => receiver.await,
        };
        Self::pid_if(self.pid, answer)
    }

    /// [`Accepting::recorded`], waiting on this thread: outside an async runtime.
    pub fn wait(self) -> Result<Pid, SpawnError> {
        let answer = match self.recorded {
            None => Ok(Ok(())),
            Some(receiver) => receiver.blocking_recv(),
        };
        Self::pid_if(self.pid, answer)
    }

    /// The pid, if the store's answer says the acceptance is recorded. No answer at all means
    /// the store stopped writing: the host is shutting down.
    fn pid_if(
        pid: Pid,
        answer: Result<Result<(), StoreError>, oneshot::error::RecvError>,
    ) -> Result<Pid, SpawnError> {
        match answer {
            Ok(Ok(())) => Ok(pid),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(SpawnError::ShuttingDown),
        }
    }
}

impl Host {
    /// Accepts a task: promises it a place (or a place in the queue), records it, and once
    /// it is recorded hands it to its scheduler thread. The returned [`Accepting`] resolves
    /// once the store has it; the task runs in the background. A request that carries an
    /// idempotency key already used for the same body gets the first task's pid again and
    /// starts nothing.
    pub fn spawn(
        &self,
        task: NewTask,
        key: Option<IdempotencyKey>,
    ) -> Result<Accepting, SpawnError> {
        self.accept(task, key, None)
    }

    /// [`Host::spawn`], for a task submitted over HTTP (`spawned_by` none) or spawned by a
    /// task: its parent, and the root of their tree.
    pub(super) fn accept(
        &self,
        task: NewTask,
        key: Option<IdempotencyKey>,
        spawned_by: Option<(Pid, Pid)>,
    ) -> Result<Accepting, SpawnError> {
        let (worker, key, in_flight) = self.hold(&task, key)?;
        if let Some(key) = &key
            && let Some(pid) = self.repeat_of(key, self.store.remembered(&key.key)?)?
        {
            return Ok(Accepting::repeat(pid));
        }
        self.admit(task, worker, key, in_flight, spawned_by)
    }

    /// [`Host::spawn`] for an HTTP handler: an idempotency key is looked up in the store
    /// without holding the thread.
    pub async fn spawn_async(
        &self,
        task: NewTask,
        key: Option<IdempotencyKey>,
    ) -> Result<Accepting, SpawnError> {
        let (worker, key, in_flight) = self.hold(&task, key)?;
        if let Some(key) = &key {
            let remembered = self.store.remembered_async(&key.key).await?;
            if let Some(pid) = self.repeat_of(key, remembered)? {
                return Ok(Accepting::repeat(pid));
            }
        }
        self.admit(task, worker, key, in_flight, None)
    }

    /// Whether the host would take `task` as its worker's limits stand now (its worker known,
    /// its duration and deadline within them), accepting nothing: a schedule's task is
    /// checked when the schedule is created.
    pub fn check_task(&self, task: &NewTask) -> Result<(), SpawnError> {
        self.check(task).map(drop)
    }

    /// What comes before a submission's key is looked up: the task checked against its
    /// worker's limits (the worker returned), and its key dated and held. Held before the
    /// store is asked: a first request commits its key before it lets go, so a repeat after
    /// it finds the key remembered.
    fn hold(&self, task: &NewTask, key: Option<IdempotencyKey>) -> Result<Held<'_>, SpawnError> {
        let worker = self.check(task)?;
        let key = self.dated(key);
        let in_flight = key
            .as_ref()
            .map(|key| KeyInFlight::take(&self.keys_in_flight, &key.key))
            .transpose()?;
        Ok((worker, key, in_flight))
    }

    /// Refuses a task its worker's limits do not allow (an unknown worker, too long a
    /// duration or deadline), before anything is taken for it; the worker that will run it.
    fn check(&self, task: &NewTask) -> Result<&Arc<Worker>, SpawnError> {
        let worker = self.workers.get(task.worker.as_deref())?;
        let settings = &worker.settings;
        let too_long = |what, max| SpawnError::TooLong {
            what,
            worker: settings.name.clone(),
            max,
        };
        if task.duration > settings.max_duration_secs {
            return Err(too_long("duration", settings.max_duration_secs));
        }
        let max_deadline = settings
            .max_duration_secs
            .saturating_add(self.deadline_grace_secs);
        if task
            .deadline
            .is_some_and(|deadline| deadline > max_deadline)
        {
            return Err(too_long("deadline", max_deadline));
        }
        Ok(worker)
    }

    /// `key` with the time before which a key remembered is stale.
    fn dated(&self, key: Option<IdempotencyKey>) -> Option<IdempotencyKey> {
        key.map(|key| IdempotencyKey {
            stale_before: SystemTime::now()
                .checked_sub(self.idempotency_ttl)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            ..key
        })
    }

    /// Accepts a task [`Host::check`] let through, its key (if any) held in flight and not
    /// remembered.
    fn admit(
        &self,
        task: NewTask,
        worker: &Arc<Worker>,
        key: Option<IdempotencyKey>,
        in_flight: Option<KeyInFlight>,
        spawned_by: Option<(Pid, Pid)>,
    ) -> Result<Accepting, SpawnError> {
        let parent = spawned_by.map(|(parent, _)| parent);
        let NewTask {
            name,
            duration,
            payload,
            deadline,
            restart,
            on_host_loss,
            run_at,
            priority,
            retry_of,
            schedule,
            concurrency_key,
            checkpoint,
            ..
        } = task;
        let now = SystemTime::now();
        let run_at = run_at.filter(|at| *at > now);
        let settings = &worker.settings;
        let deadline_secs = deadline.unwrap_or(duration.saturating_add(self.deadline_grace_secs));
        if !self.store.healthy() {
            return Err(StoreError::Unavailable(
                "the task store cannot write now; retry later".into(),
            )
            .into());
        }
        // A client's task is refused while the scheduler starts tasks later than
        // `--max-start-lag`: taking it would only lengthen the wait of those accepted before it.
        // A task's own spawns are bounded by its tree's budget instead.
        if spawned_by.is_none()
            && run_at.is_none()
            && let Some(lag) = self.late()
        {
            self.metrics().refused_late();
            return Err(SpawnError::Behind {
                lag_ms: lag.as_millis(),
                max_ms: self.max_start_lag.as_millis(),
            });
        }
        // A task to run later takes no place now: it waits among the scheduled tasks here,
        // or, in a cluster, in the shared queue until it is due, for any host.
        // In a cluster, a task of a worker with limits waits in the shared queue whatever
        // place is free here: its limits are counted there, for all hosts together.
        let limited = self
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.limits_of(&worker.name).any());
        let (promise, later) = match run_at {
            Some(_) => (None, self.promise_later()?),
            None => (self.promise(limited)?, false),
        };
        // In a cluster, a task with no free place here waits in the shared queue, for any
        // host with one; it holds nothing here.
        let shared = promise.is_none() && !later;
        if let Some(cluster) = self.cluster.as_ref().filter(|_| limited) {
            // Claimed from the next poll on (once due, for a task to run later).
            cluster
                .limited_waiting
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        let pid = self.pids.next();
        let version = worker.current();
        let max_attempts = restart.unwrap_or(settings.restart).max_attempts();
        let spec = TaskSpec {
            module_sha256: version.module.digest().hex(),
            payload: payload.clone(),
            deadline_secs,
            max_attempts,
            on_host_loss: on_host_loss.unwrap_or(settings.on_host_loss),
            ready_at: run_at,
            priority: priority.unwrap_or(settings.priority),
        };
        let mut record = TaskRecord::spawned(
            pid,
            name.clone(),
            duration,
            Arc::clone(version.worker()),
            Arc::clone(&version.id),
        );
        record.parent = parent;
        record.priority = spec.priority;
        record.retry_of = retry_of;
        let concurrency: Option<Arc<str>> = concurrency_key.as_deref().map(Arc::from);
        record.concurrency_key = concurrency_key;
        if let Some((name, tick)) = schedule {
            record.schedule = Some(name);
            record.schedule_tick = Some(tick);
        }
        record.run_at = run_at;
        let mut ready_at = Instant::now();
        if let Some(at) = run_at {
            record.status = Status::Scheduled;
            ready_at += at.duration_since(now).unwrap_or_default();
        }
        tracing::info!(pid = %pid, name = %Printable(&name), worker = %worker.name,
            duration, "Task process spawned");
        let job = Job {
            pid,
            name: name.into(),
            version,
            duration,
            payload,
            deadline: Duration::from_secs(u64::from(deadline_secs)),
            max_attempts,
            attempt: 1,
            ready_at,
            parent,
            priority: spec.priority,
            key: concurrency,
            counted: (false, false),
            checkpoint: (
                checkpoint.unwrap_or(settings.checkpoint),
                checkpoint.is_some(),
            ),
            resume: None,
        };
        let own_checkpoint =
            checkpoint.map(|policy| crate::model::StoredCheckpoint::policy(pid, policy, 1));
        // Its mailbox exists from acceptance: it can be sent to while it waits for a place. One
        // waiting in a cluster's shared queue gets its mailbox where it runs; messages wait
        // for it in the store.
        if !shared {
            let root = spawned_by.map_or(pid, |(_, root)| root);
            self.actors.enter_placed(
                pid,
                Placement {
                    parent,
                    root,
                    scope: settings.actor_scope,
                    // A tree reaches no further for its tasks' spawning workers of a wider
                    // scope: a child of a task held to its descendants stays within its
                    // parent's subtree; one of a task held to its tree, within that tree.
                    bound: parent.and_then(|parent| {
                        let (scope, bound, _) = self.actors.reach(parent)?;
                        match scope {
                            crate::actor::ActorScope::Any => bound,
                            crate::actor::ActorScope::Tree => bound.or(Some(root)),
                            crate::actor::ActorScope::Descendants => Some(parent),
                        }
                    }),
                },
            );
        }
        let (sender, receiver) = oneshot::channel();
        let scheduler = self.scheduler.clone();
        let actors = Arc::clone(&self.actors);
        let leftovers = Arc::clone(&self.leftovers);
        self.ledger.accepted(
            record,
            spec,
            key,
            (shared, limited),
            own_checkpoint,
            move |recorded| {
                drop(in_flight);
                match (&recorded, promise) {
                    (Ok(()), Some(promise)) => match scheduler.place(promise, job) {
                        Placed::Running => {}
                        Placed::Queued => {
                            tracing::info!(pid = %pid, "Task queued: every place taken");
                        }
                        // Answered 202 as the host began to shut down: it runs all the same.
                        Placed::Refused(job) => leftovers.keep(&job),
                    },
                    (Ok(()), None) if later => match scheduler.schedule(job, true) {
                        Ok(()) => tracing::info!(pid = %pid, "Task scheduled"),
                        // Answered 202 as the host began to shut down: it runs all the same.
                        Err(job) => leftovers.keep(&job),
                    },
                    (Ok(()), None) if run_at.is_some() => {
                        tracing::info!(pid = %pid, "Task scheduled in the cluster's shared queue");
                    }
                    (Ok(()), None) => {
                        tracing::info!(pid = %pid, step = 0,
                            "Task queued in the cluster: every place here is taken");
                    }
                    (Err(_), promise) => {
                        actors.ended(pid, &TaskEnd::shut_down_before_start(), drop);
                        if let Some(promise) = promise {
                            scheduler.break_promise(promise);
                        }
                        if later {
                            scheduler.break_later();
                        }
                    }
                }
                let _ = sender.send(recorded);
            },
        );
        Ok(Accepting {
            pid,
            recorded: Some(receiver),
            shared,
        })
    }

    /// A place (or a place in the queue) for a new task here, or, in a cluster with no free
    /// place here or for a `limited` task, `None`: a place in the shared queue, while it has
    /// room.
    fn promise(&self, limited: bool) -> Result<Option<Promise>, SpawnError> {
        let full = || SpawnError::Full {
            live: self.scheduler.capacity(),
            queued: self.scheduler.queue_limit(),
        };
        let Some(cluster) = &self.cluster else {
            return self
                .scheduler
                .promise()
                .map(Some)
                .map_err(|refused| match refused {
                    Refused::Full => full(),
                    Refused::Closed => SpawnError::ShuttingDown,
                });
        };
        if !cluster.serving() {
            return Err(StoreError::Unavailable(
                "this host has lost its lease in the cluster and is joining again; retry, or \
                 use another host"
                    .into(),
            )
            .into());
        }
        // A drained host takes no new task of its own: it waits in the shared queue.
        if self.draining() {
            return match self.scheduler.promise() {
                Err(Refused::Closed) => Err(SpawnError::ShuttingDown),
                _ => Ok(None),
            };
        }
        match self.scheduler.promise() {
            Ok(promise) if promise.is_place() && !limited => Ok(Some(promise)),
            Err(Refused::Closed) => Err(SpawnError::ShuttingDown),
            // Held by its limits, it takes no place in the shared queue either, as on one
            // host: limited tasks are bounded by the store alone, as scheduled ones are.
            _ if limited => Ok(None),
            // Waiting is for the cluster's queue: the place promised in this host's is given
            // back as the promise is dropped.
            _ => {
                if cluster.queue_one() {
                    Ok(None)
                } else {
                    Err(full())
                }
            }
        }
    }

    /// A place among the tasks scheduled to run later: here (true), or, in a cluster, in the
    /// shared queue (false), where they wait in the store until due.
    fn promise_later(&self) -> Result<bool, SpawnError> {
        if let Some(cluster) = &self.cluster {
            if !cluster.serving() {
                return Err(StoreError::Unavailable(
                    "this host has lost its lease in the cluster and is joining again; retry, \
                     or use another host"
                        .into(),
                )
                .into());
            }
            return Ok(false);
        }
        self.scheduler
            .promise_later()
            .map(|()| true)
            .map_err(|refused| match refused {
                NotScheduled::Full => SpawnError::TooManyScheduled {
                    max: self.max_scheduled,
                },
                NotScheduled::Closed => SpawnError::ShuttingDown,
            })
    }

    /// `--max-start-lag`.
    pub fn max_start_lag(&self) -> Duration {
        self.max_start_lag
    }

    /// How late the scheduler starts new tasks, if later than `--max-start-lag`: new tasks
    /// from clients are refused meanwhile.
    pub fn late(&self) -> Option<Duration> {
        self.scheduler
            .start_lag()
            .filter(|lag| !self.max_start_lag.is_zero() && *lag > self.max_start_lag)
    }

    /// The pid an idempotency key was first used for, as the store `remembered` it, if it was
    /// used with the same body and is still fresh; an error if it was used with another body.
    fn repeat_of(
        &self,
        key: &IdempotencyKey,
        remembered: Option<Remembered>,
    ) -> Result<Option<Pid>, SpawnError> {
        let Some(remembered) = remembered else {
            return Ok(None);
        };
        let expired = remembered
            .at
            .elapsed()
            .is_ok_and(|age| age > self.idempotency_ttl);
        if expired {
            return Ok(None);
        }
        if remembered.body_sha256 != key.body_sha256 {
            return Err(SpawnError::KeyReused(remembered.pid));
        }
        Ok(Some(remembered.pid))
    }
}

/// An idempotency key held while its first request is answered; let go when dropped.
struct KeyInFlight {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl KeyInFlight {
    fn take(keys: &Arc<Mutex<HashSet<String>>>, key: &str) -> Result<Self, SpawnError> {
        let mut held = keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !held.insert(key.to_owned()) {
            return Err(SpawnError::KeyInFlight);
        }
        Ok(Self {
            keys: Arc::clone(keys),
            key: key.to_owned(),
        })
    }
}

impl Drop for KeyInFlight {
    fn drop(&mut self) {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.key);
    }
}
