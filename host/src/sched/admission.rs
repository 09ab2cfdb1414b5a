//! Admission: how many tasks may be live at once, and how many may wait for a place, decided
//! before anything is instantiated.
//!
//! A live task holds a [`Permit`] from the moment it is admitted until its store is dropped.
//! When every permit is out, new tasks wait in a bounded first-in first-out queue (their status
//! stays `spawned`); when a live task ends, [`Permit::release`] passes its place straight to the
//! oldest waiting task and hands that task back to the caller to run. Past the queue, the API
//! refuses with `429` and `Retry-After` instead of accepting work the pooling allocator could
//! not hold.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::model::Pid;

/// What waits in the queue: anything that knows its pid.
pub trait Queued: Send + 'static {
    fn pid(&self) -> Pid;
}

#[derive(Debug)]
struct State<T> {
    live: u32,
    queue: VecDeque<T>,
    closed: bool,
}

/// Live and waiting tasks, shared by the API and the scheduler threads.
#[derive(Debug)]
pub struct Admission<T> {
    state: Mutex<State<T>>,
    /// Signalled when the last live task gives its place back.
    idle: Condvar,
    limit: u32,
    queue_limit: usize,
}

/// One live task's place. [`Permit::release`] gives it back and hands on the next waiting
/// task; dropping it gives the place back without handing anything on, which is only right
/// once admission is closed (a shutdown) or when nothing waits.
#[derive(Debug)]
pub struct Permit<T>(Option<Arc<Admission<T>>>);

/// What admission decided for a new task.
#[derive(Debug)]
pub enum Admitted<T> {
    /// A place is free: run it now.
    Now(T, Permit<T>),
    /// It waits in the queue; a released place hands it on.
    Queued,
}

/// Why a task was not admitted.
#[derive(Debug)]
pub enum Refused<T, E> {
    /// Every place is taken and the queue is full.
    Full,
    /// The host is shutting down.
    Closed,
    /// Recording the task failed; it holds no place. The place it took for a moment comes back
    /// as a permit to release, since a task may have queued behind it meanwhile.
    NotRecorded(E, Option<Permit<T>>),
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
            idle: Condvar::new(),
            limit,
            queue_limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `item` now, queues it, or refuses it. `record` runs before the task can start
    /// (under the admission lock for a queued task), so its record exists before anything can
    /// happen to it; if it fails, the task is not admitted.
    pub fn admit<E>(
        self: &Arc<Self>,
        item: T,
        record: impl FnOnce(&T) -> Result<(), E>,
    ) -> Result<Admitted<T>, Refused<T, E>> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.live < self.limit {
            state.live += 1;
            drop(state);
            let permit = Permit(Some(Arc::clone(self)));
            return match record(&item) {
                Ok(()) => Ok(Admitted::Now(item, permit)),
                Err(error) => Err(Refused::NotRecorded(error, Some(permit))),
            };
        }
        if state.queue.len() < self.queue_limit {
            record(&item).map_err(|error| Refused::NotRecorded(error, None))?;
            state.queue.push_back(item);
            return Ok(Admitted::Queued);
        }
        Err(Refused::Full)
    }

    /// Takes `pid` out of the queue, if it waits there.
    pub fn unqueue(&self, pid: Pid) -> Option<T> {
        let mut state = self.lock();
        let index = state.queue.iter().position(|item| item.pid() == pid)?;
        state.queue.remove(index)
    }

    /// Refuses every new task from now on, and hands back the waiting ones.
    pub fn close(&self) -> Vec<T> {
        let mut state = self.lock();
        state.closed = true;
        state.queue.drain(..).collect()
    }

    /// Waits until no task holds a place, or until `deadline`: whether none does.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        while state.live > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
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

    /// Gives one place back: to the oldest waiting task unless admission is closed, or frees
    /// it.
    fn give_back(self: &Arc<Self>) -> Option<(T, Permit<T>)> {
        let mut state = self.lock();
        if !state.closed
            && let Some(next) = state.queue.pop_front()
        {
            // The place passes on: `live` stays as it is.
            return Some((next, Permit(Some(Arc::clone(self)))));
        }
        self.free(&mut state);
        None
    }
}

impl<T> Admission<T> {
    fn free(&self, state: &mut State<T>) {
        state.live -= 1;
        if state.live == 0 {
            self.idle.notify_all();
        }
    }
}

impl<T: Queued> Permit<T> {
    /// Gives the place back. If a task waits for one, it gets this place: it is returned with
    /// its permit, for the caller to run.
    pub fn release(mut self) -> Option<(T, Permit<T>)> {
        self.0.take()?.give_back()
    }
}

impl<T> Drop for Permit<T> {
    fn drop(&mut self) {
        if let Some(admission) = self.0.take() {
            let mut state = admission
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            admission.free(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn ok(_: &Spec) -> Result<(), ()> {
        Ok(())
    }

    #[test]
    fn admits_then_queues_then_refuses_and_passes_places_on_in_order() {
        let admission = Admission::<Spec>::new(1, 2);
        let Ok(Admitted::Now(_, first)) = admission.admit(spec(1), ok) else {
            panic!("the first task runs at once");
        };
        assert!(matches!(admission.admit(spec(2), ok), Ok(Admitted::Queued)));
        assert!(matches!(admission.admit(spec(3), ok), Ok(Admitted::Queued)));
        assert!(matches!(admission.admit(spec(4), ok), Err(Refused::Full)));
        assert_eq!((admission.live(), admission.queued()), (1, 2));

        let (next, second) = first.release().expect("a task waits");
        assert_eq!(next.pid.seq(), 2, "the oldest waiting task got the place");
        assert_eq!((admission.live(), admission.queued()), (1, 1));

        assert!(admission.unqueue(Pid::new(1, 3)).is_some());
        assert!(second.release().is_none(), "nothing waits any more");
        assert_eq!((admission.live(), admission.queued()), (0, 0));
        assert!(admission.wait_idle(Instant::now()));
        assert!(admission.close().is_empty());
        assert!(matches!(admission.admit(spec(5), ok), Err(Refused::Closed)));
    }

    #[test]
    fn a_task_that_cannot_be_recorded_takes_no_place() {
        let admission = Admission::<Spec>::new(1, 1);
        let refused = admission.admit(spec(1), |_| Err("disk full"));
        let Err(Refused::NotRecorded("disk full", Some(permit))) = refused else {
            panic!("refused with its place to give back");
        };
        assert!(permit.release().is_none());
        assert_eq!(admission.live(), 0);
    }
}
