//! Flow control and schedules as the store keeps them: pausing and resuming a worker on every
//! host of a cluster, what a worker's limits count here, and the store's schedules, whose
//! ticks submit tasks as a client would (see `api::schedules`).

use super::Host;
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

    /// How many of worker `name`'s tasks its limits count as running here, and how many they
    /// hold; none for a worker without limits.
    pub fn worker_limited(&self, name: &str) -> Option<(u32, usize)> {
        self.scheduler.limited(name)
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
