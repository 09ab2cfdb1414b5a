//! Admission: how many tasks may be live at once, decided before anything is instantiated.
//!
//! A task holds a [`Permit`] from the moment it is accepted until its store is dropped. When
//! every permit is out, the API refuses new tasks with `503` and `Retry-After` instead of
//! accepting work the pooling allocator could not hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Live-task accounting, shared by the API and the scheduler threads.
#[derive(Debug)]
pub struct Admission {
    live: AtomicU32,
    limit: u32,
}

/// One live task's place. Dropping it gives the place back.
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Admission {
    /// Admission for at most `limit` live tasks.
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicU32::new(0),
            limit,
        })
    }

    /// A permit if a place is free.
    pub fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < self.limit).then_some(live + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(self)))
    }

    /// Tasks holding a permit now.
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Acquire)
    }

    /// The most tasks that may be live at once.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The value Elasticsearch and others ask for.
const RECOMMENDED_MAX_MAP_COUNT: u64 = 262_144;

/// The configured capacity, lowered if the kernel's `vm.max_map_count` could not hold that many
/// live instances at `per_task` mappings each (as measured by the sandbox at start); says so,
/// and how to raise the limit, as Elasticsearch does.
pub fn effective_capacity(configured: u32, per_task: u64) -> u32 {
    let (Some(max), Some(in_use)) = (max_map_count(), map_count()) else {
        return configured;
    };
    match instances_within_map_count(max, in_use, per_task) {
        Some(fits) if fits < u64::from(configured) => {
            tracing::warn!(
                vm.max_map_count = max,
                mappings_in_use = in_use,
                mappings_per_task = per_task,
                configured,
                capacity = fits,
                "vm.max_map_count is too low for the configured capacity; capacity lowered. \
                 Raise it with `sudo sysctl -w vm.max_map_count={RECOMMENDED_MAX_MAP_COUNT}` \
                 (persist it in /etc/sysctl.d/) and restart"
            );
            fits as u32
        }
        _ => {
            tracing::info!(
                vm.max_map_count = max,
                mappings_in_use = in_use,
                mappings_per_task = per_task,
                capacity = configured,
                "capacity"
            );
            configured
        }
    }
}

/// Where Linux keeps the per-process limit on memory mappings.
const MAX_MAP_COUNT_PATH: &str = "/proc/sys/vm/max_map_count";

/// Mappings kept free for everything else the process maps: thread stacks, the allocator's
/// arenas, compiled code, sockets.
const MAP_HEADROOM: u64 = 4096;

/// The kernel's limit on this process's memory mappings, if it can be read.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string(MAX_MAP_COUNT_PATH)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many memory mappings this process holds now, if it can tell.
pub fn map_count() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// How many live instances fit under `max_map_count` when each costs `per_instance` mappings
/// beyond the `in_use` ones the process holds already. `None` when mappings do not limit it.
pub fn instances_within_map_count(
    max_map_count: u64,
    in_use: u64,
    per_instance: u64,
) -> Option<u64> {
    (per_instance > 0).then(|| max_map_count.saturating_sub(in_use + MAP_HEADROOM) / per_instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_reuses_places() {
        let admission = Admission::new(2);
        let first = admission.try_admit().expect("first place");
        let _second = admission.try_admit().expect("second place");
        assert!(admission.try_admit().is_none(), "third refused");
        assert_eq!(admission.live(), 2);
        drop(first);
        assert!(admission.try_admit().is_some(), "a freed place is reused");
    }

    #[test]
    fn map_count_limit() {
        assert_eq!(instances_within_map_count(65_530, 1_000, 0), None);
        assert_eq!(instances_within_map_count(65_530, 1_434, 6), Some(10_000));
        assert_eq!(instances_within_map_count(1_000, 2_000, 2), Some(0));
    }
}
