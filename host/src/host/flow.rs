//! Flow control and schedules as the store keeps them: pausing and resuming a worker on every
//! host of a cluster, what a worker's limits count here, and the store's schedules, whose
//! ticks submit tasks as a client would (see `api::schedules`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Host;
use super::cluster::Cluster;
use crate::config::FlowLimits;
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
            return 0;
        }
        let turn = cluster.limited_turn.fetch_add(1, Ordering::Relaxed);
        match cluster
            .store
            .claim_limited(Arc::clone(&cluster.limits), asked, turn)
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
        if cluster.limits.is_empty() {
            return;
        }
        let idle = cluster
            .limits
            .values()
            .filter_map(|limits| limits.rate.map(|rate| rate.per))
            .fold(std::time::Duration::from_secs(3_600), std::cmp::max);
        if let Err(error) = cluster.store.prune_limit_keys(idle) {
            tracing::debug!(%error, "pruning the idle keys of limited workers failed");
        }
    }
}

impl Cluster {
    /// Worker `name`'s limits, as this host counts them in the shared store.
    pub(crate) fn limits_of(&self, name: &str) -> FlowLimits {
        self.limits.get(name).copied().unwrap_or_default()
    }
}
