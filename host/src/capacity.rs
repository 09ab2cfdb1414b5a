//! Admission: how many tasks may be live at once, and how many may wait for a place, decided
//! before anything is instantiated.
//!
//! A live task holds a [`Permit`] from the moment it is admitted until its store is dropped.
//! When every permit is out, new tasks wait in a bounded first-in first-out queue (their status
//! stays `spawned`); when a live task ends, its permit passes straight to the oldest waiting
//! task. Past the queue, the API refuses with `429` and `Retry-After` instead of accepting work
//! the pooling allocator could not hold.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::scheduler::TaskSpec;
use crate::table::Pid;

/// What waits in the queue: anything that knows its pid (the host queues [`TaskSpec`]s).
pub trait Queued: Send + 'static {
    fn pid(&self) -> Pid;
}

impl Queued for TaskSpec {
    fn pid(&self) -> Pid {
        self.pid
    }
}

/// Where a task taken off the queue goes: to a scheduler thread, with its permit.
pub type Dispatch<T = TaskSpec> = Box<dyn Fn(T, Permit<T>) + Send + Sync>;

#[derive(Debug)]
struct State<T> {
    live: u32,
    queue: VecDeque<T>,
    closed: bool,
}

/// Live and waiting tasks, shared by the API and the scheduler threads.
pub struct Admission<T: Queued = TaskSpec> {
    state: Mutex<State<T>>,
    limit: u32,
    queue_limit: usize,
    dispatch: OnceLock<Dispatch<T>>,
}

impl<T: Queued> std::fmt::Debug for Admission<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limit", &self.limit)
            .field("queue_limit", &self.queue_limit)
            .finish_non_exhaustive()
    }
}

/// One live task's place. Dropping it hands the place to the oldest waiting task, or frees it.
#[derive(Debug)]
pub struct Permit<T: Queued = TaskSpec>(Arc<Admission<T>>);

/// What admission decided for a new task.
#[derive(Debug)]
pub enum Admitted<T: Queued = TaskSpec> {
    /// A place is free: run it now.
    Now(T, Permit<T>),
    /// It waits in the queue; it will be dispatched when a place frees.
    Queued,
}

/// Why a task was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every place is taken and the queue is full.
    Full,
    /// The host is shutting down.
    Closed,
}

impl<T: Queued> Admission<T> {
    /// Admission for at most `limit` live tasks and `queue_limit` waiting ones.
    pub fn new(limit: u32, queue_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                live: 0,
                queue: VecDeque::new(),
                closed: false,
            }),
            limit,
            queue_limit,
            dispatch: OnceLock::new(),
        })
    }

    /// Sets where queued tasks go when a place frees; once, at start.
    pub fn set_dispatch(&self, dispatch: Dispatch<T>) {
        let _ = self.dispatch.set(dispatch);
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `spec` now, queues it, or refuses it. `record` runs before the task can start,
    /// under the admission lock for a queued task, so its record exists before anything can
    /// happen to it.
    pub fn admit(
        self: &Arc<Self>,
        spec: T,
        record: impl FnOnce(&T),
    ) -> Result<Admitted<T>, Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.live < self.limit {
            state.live += 1;
            drop(state);
            record(&spec);
            return Ok(Admitted::Now(spec, Permit(Arc::clone(self))));
        }
        if state.queue.len() < self.queue_limit {
            record(&spec);
            state.queue.push_back(spec);
            return Ok(Admitted::Queued);
        }
        Err(Refused::Full)
    }

    /// Takes `pid` out of the queue, if it waits there.
    pub fn unqueue(&self, pid: Pid) -> Option<T> {
        let mut state = self.lock();
        let index = state.queue.iter().position(|spec| spec.pid() == pid)?;
        state.queue.remove(index)
    }

    /// Refuses every new task from now on, and hands back the waiting ones.
    pub fn close(&self) -> Vec<T> {
        let mut state = self.lock();
        state.closed = true;
        state.queue.drain(..).collect()
    }

    /// Tasks holding a permit now.
    pub fn live(&self) -> u32 {
        self.lock().live
    }

    /// Tasks waiting for a place.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// The most tasks that may be live at once.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The most tasks that may wait.
    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }
}

impl<T: Queued> Drop for Permit<T> {
    fn drop(&mut self) {
        let next = {
            let mut state = self.0.lock();
            match state.queue.pop_front() {
                // The place passes on: `live` stays as it is.
                Some(next) if !state.closed => Some(next),
                _ => {
                    state.live -= 1;
                    None
                }
            }
        };
        if let (Some(spec), Some(dispatch)) = (next, self.0.dispatch.get()) {
            dispatch(spec, Permit(Arc::clone(&self.0)));
        }
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

    use std::sync::Mutex as StdMutex;

    /// A queued task as these tests need it: just its pid.
    #[derive(Debug)]
    struct Spec {
        pid: Pid,
    }

    impl Queued for Spec {
        fn pid(&self) -> Pid {
            self.pid
        }
    }

    fn spec(seq: u64) -> Spec {
        Spec {
            pid: Pid::new(1, seq),
        }
    }

    #[test]
    fn admits_then_queues_then_refuses_and_passes_places_on_in_order() {
        let admission = Admission::<Spec>::new(1, 2);
        let started = Arc::new(StdMutex::new(Vec::new()));
        let sink = Arc::clone(&started);
        admission.set_dispatch(Box::new(move |spec, permit| {
            sink.lock().expect("lock").push((spec.pid.seq(), permit));
        }));
        let Ok(Admitted::Now(_, first)) = admission.admit(spec(1), |_| {}) else {
            panic!("the first task runs at once");
        };
        assert!(matches!(
            admission.admit(spec(2), |_| {}),
            Ok(Admitted::Queued)
        ));
        assert!(matches!(
            admission.admit(spec(3), |_| {}),
            Ok(Admitted::Queued)
        ));
        assert_eq!(admission.admit(spec(4), |_| {}).err(), Some(Refused::Full));
        assert_eq!((admission.live(), admission.queued()), (1, 2));

        drop(first);
        let seqs = |started: &StdMutex<Vec<(u64, Permit<Spec>)>>| {
            started
                .lock()
                .expect("lock")
                .iter()
                .map(|(seq, _)| *seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(&started), [2], "the oldest waiting task got the place");
        assert_eq!((admission.live(), admission.queued()), (1, 1));

        assert!(admission.unqueue(Pid::new(1, 3)).is_some());
        let permits: Vec<_> = started.lock().expect("lock").drain(..).collect();
        drop(permits);
        assert_eq!((admission.live(), admission.queued()), (0, 0));
        assert!(admission.close().is_empty());
        assert_eq!(
            admission.admit(spec(5), |_| {}).err(),
            Some(Refused::Closed)
        );
    }

    #[test]
    fn map_count_limit() {
        assert_eq!(instances_within_map_count(65_530, 1_000, 0), None);
        assert_eq!(instances_within_map_count(65_530, 1_434, 6), Some(10_000));
        assert_eq!(instances_within_map_count(1_000, 2_000, 2), Some(0));
    }
}
