//! Flow control and schedules as the store keeps them: pausing and resuming a worker on every
//! host of a cluster, what a worker's limits count here, and the store's schedules, whose
//! ticks submit tasks as a client would (see `api::schedules`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Host;
use super::cluster::Cluster;
use crate::config::FlowLimits;
use crate::registry::UnknownWorker;
use crate::store::{Change, ScheduleChange, StoreError, StoredSchedule, blocking};

/// Why a worker could not be paused or resumed.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error(transparent)]
    Unknown(#[from] crate::registry::UnknownWorker),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Host {
    /// Every schedule, as the store holds them.
    pub fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        let store = &self.store;
        blocking(|| store.schedules())
    }

    /// Pauses (`paused`) or resumes worker `name`, on every host of a cluster: a paused
    /// worker's new tasks are accepted and wait, holding no place, until it is resumed; its
    /// running tasks go on. Written to the store first, so that it outlives a restart.
    pub fn pause_worker(&self, name: &str, paused: bool) -> Result<(), PauseError> {
        let worker = self.workers.get(Some(name))?;
        let name = worker.name.to_string();
        let _one_at_a_time = self
            .pausing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let store = &self.store;
        blocking(|| {
            store.wait(vec![Change::WorkerPaused {
                name: name.clone(),
                paused,
            }])
        })?;
        if paused {
            self.scheduler.pause(&name);
        } else {
            self.scheduler.resume(&name);
        }
        Ok(())
    }

    /// How many of worker `name`'s tasks its limits count as running, and how many they hold
    /// from starting; none for a worker without limits. In a cluster, for all hosts: those
    /// hosts hold, and those waiting in the shared queue.
    pub async fn worker_limited(&self, name: &str) -> Option<(u32, usize)> {
        let Some(cluster) = &self.cluster else {
            return self.scheduler.limited(name);
        };
        if !cluster.limits_of(name).any() {
            return None;
        }
        match cluster.store.limited_of(name).await {
            Ok(counts) => Some(counts),
            Err(error) => {
                tracing::debug!(%error, worker = name, "counting a worker's limited tasks failed");
                None
            }
        }
    }

    /// One claim of tasks of workers with limits from the shared queue, up to `asked`, while
    /// any wait there: each starts here. How many were claimed.
    pub(super) fn claim_limited(&self, cluster: &Cluster, asked: u32) -> u32 {
        if cluster.limited_waiting.load(Ordering::Acquire) == 0 {
            // Another host may have queued one, or one may have fallen due, since this
            // host's heartbeat counted them: while any worker has limits, one probe tells.
            if cluster.limits().is_empty() {
                return 0;
            }
            match cluster.store.limited_queue_waiting() {
                Ok(true) => cluster.limited_waiting.store(1, Ordering::Release),
                Ok(false) => return 0,
                Err(error) => {
                    tracing::debug!(%error, "looking at the limited tasks waiting failed");
                    return 0;
                }
            }
        }
        let turn = cluster.limited_turn.fetch_add(1, Ordering::Relaxed);
        match cluster
            .store
            .claim_limited(Arc::clone(&cluster.file_limits), asked, turn)
        {
            Ok(claimed) => {
                let got = claimed.len() as u32;
                for task in claimed {
                    self.run_claimed(task);
                }
                got
            }
            Err(error) => {
                tracing::debug!(%error, "claiming limited tasks from the shared queue failed");
                0
            }
        }
    }

    /// Whether worker `name` is paused here, and how many of its tasks wait for it.
    pub fn worker_paused(&self, name: &str) -> (bool, usize) {
        (self.scheduler.is_paused(name), self.scheduler.held(name))
    }

    /// Worker `name`'s limits now, and whether they were set over the API (rather than by its
    /// registry file).
    pub fn worker_limits(&self, name: &str) -> Result<(FlowLimits, bool), UnknownWorker> {
        let worker = self.workers.get(Some(name))?;
        let overrides = self
            .limit_overrides
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(match overrides.get(&*worker.name) {
            Some(limits) => (*limits, true),
            None => (worker.settings.limits(), false),
        })
    }

    /// Sets worker `name`'s limits (`None`: back to its registry file's), on every host of a
    /// cluster: written to the store first, so that they outlive a restart; the other hosts
    /// follow at their next heartbeat. Tasks held that they now leave room for start; tasks
    /// running go on, counted.
    pub fn set_worker_limits(
        &self,
        name: &str,
        limits: Option<FlowLimits>,
    ) -> Result<(), PauseError> {
        let worker = self.workers.get(Some(name))?;
        let name = worker.name.to_string();
        let mut overrides = self
            .limit_overrides
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let file = worker.settings.limits();
        let before = overrides.get(&name).copied().unwrap_or(file);
        // Applied before the write: a task this host accepts meanwhile is already limited
        // when the write marks the worker's tasks in a cluster.
        self.apply_limits(&name, limits.unwrap_or(file));
        let store = &self.store;
        if let Err(error) = blocking(|| {
            store.wait(vec![Change::WorkerLimits {
                name: name.clone(),
                limits,
            }])
        }) {
            self.apply_limits(&name, before);
            return Err(error.into());
        }
        match limits {
            Some(limits) => overrides.insert(name.clone(), limits),
            None => overrides.remove(&name),
        };
        Ok(())
    }

    /// Counts worker `name`'s tasks under `limits` from now on: here, or in a cluster in the
    /// shared store.
    fn apply_limits(&self, name: &str, limits: FlowLimits) {
        match &self.cluster {
            Some(cluster) => cluster.set_limits(name, limits),
            None => self.scheduler.set_limits(name, limits),
        }
    }

    /// Follows the workers' limits set over the API that the store holds: at start, and in a
    /// cluster at each heartbeat (another host set some). Limits the store holds that this
    /// host cannot read (written by a newer host) are left as they are, with a warning.
    pub(super) fn follow_limits(&self) -> Result<(), StoreError> {
        // Read under the lock a `PUT` here holds across its write: never older than it.
        let mut overrides = self
            .limit_overrides
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored: HashMap<String, String> = self.store.worker_limits()?.into_iter().collect();
        let names: Vec<String> = stored.keys().chain(overrides.keys()).cloned().collect();
        for name in names {
            let want = match stored.get(&name) {
                None => None,
                Some(text) => match serde_json::from_str(text)
                    .map_err(|error| error.to_string())
                    .and_then(|value| FlowLimits::from_value(&value))
                {
                    Ok(limits) => Some(limits),
                    Err(error) => {
                        tracing::warn!(worker = %name, %error, "the store holds limits for a \
                            worker that this host cannot read; they are left as they are");
                        continue;
                    }
                },
            };
            if overrides.get(&name).copied() == want {
                continue;
            }
            let Ok(worker) = self.workers.get(Some(&name)) else {
                continue;
            };
            match want {
                Some(limits) => overrides.insert(name.clone(), limits),
                None => overrides.remove(&name),
            };
            self.apply_limits(&name, want.unwrap_or_else(|| worker.settings.limits()));
        }
        Ok(())
    }

    /// Follows the paused workers the store holds: at start, and in a cluster at each
    /// heartbeat (another host paused or resumed one).
    pub(super) fn follow_paused(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self
            .pausing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored = self.store.paused_workers()?;
        for name in &stored {
            if !self.scheduler.is_paused(name) {
                self.scheduler.pause(name);
            }
        }
        for name in self.scheduler.paused() {
            if !stored.contains(&name) {
                self.scheduler.resume(&name);
            }
        }
        Ok(())
    }

    /// Writes a schedule's change, and waits until it is written.
    pub fn change_schedule(&self, change: ScheduleChange) -> Result<(), StoreError> {
        let store = &self.store;
        blocking(|| store.wait(vec![Change::Schedule(change)]))
    }
}

impl Host {
    /// Forgets in the store the keys of limited workers idle for an hour (or their longest
    /// rate period): what a key that never ran has, its turn and full tokens.
    pub(super) fn prune_limit_keys(&self, cluster: &Cluster) {
        let limits = cluster.limits();
        if limits.is_empty() {
            return;
        }
        let idle = limits
            .values()
            .filter_map(|limits| limits.rate.map(|rate| rate.per))
            .fold(std::time::Duration::from_secs(3_600), std::cmp::max);
        if let Err(error) = cluster.store.prune_limit_keys(idle) {
            tracing::debug!(%error, "pruning the idle keys of limited workers failed");
        }
    }
}

impl Cluster {
    /// The workers' limits, as this host counts them in the shared store.
    pub(crate) fn limits(&self) -> Arc<HashMap<String, FlowLimits>> {
        Arc::clone(
            &self
                .limits
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Worker `name`'s limits, as this host counts them in the shared store.
    pub(crate) fn limits_of(&self, name: &str) -> FlowLimits {
        self.limits().get(name).copied().unwrap_or_default()
    }

    /// Sets worker `name`'s limits here: its tasks are claimed under them from now on.
    fn set_limits(&self, name: &str, limits: FlowLimits) {
        let mut current = self
            .limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut map = HashMap::clone(&current);
        if limits.any() {
            map.insert(name.to_owned(), limits);
        } else {
            map.remove(name);
        }
        *current = Arc::new(map);
    }
}
