//! Admission: how many tasks may be live at once, and how many may wait for a place, decided
//! before anything is instantiated.
//!
//! A live task holds a [`Permit`] from the moment it is admitted until its store is dropped.
//! When every permit is out, new tasks wait in a bounded queue (their status stays `spawned`),
//! ordered by priority, then first in first out; when a live task ends, [`Permit::release`]
//! passes its place straight to the waiting task of the highest priority that waited longest,
//! and hands that task back to the caller to run. Past the queue, the API
//! refuses with `429` and `Retry-After` instead of accepting work the pooling allocator could
//! not hold.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::model::Pid;

/// What waits in the queue: anything that knows its pid and its priority.
pub trait Queued: Send + 'static {
    fn pid(&self) -> Pid;
    /// 0 to 9: higher leaves the queue first.
    fn priority(&self) -> u8 {
        crate::model::DEFAULT_PRIORITY
    }
}

/// The wait queue: one first-in first-out line per priority.
#[derive(Debug)]
struct Waiting<T> {
    lines: [VecDeque<T>; crate::model::MAX_PRIORITY as usize + 1],
    len: usize,
}

impl<T: Queued> Waiting<T> {
    fn new() -> Self {
        Self {
            lines: std::array::from_fn(|_| VecDeque::new()),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push_back(&mut self, item: T) {
        let line = usize::from(item.priority()).min(self.lines.len() - 1);
        self.lines[line].push_back(item);
        self.len += 1;
    }

    /// The waiting task of the highest priority that waited longest.
    fn pop_front(&mut self) -> Option<T> {
        let item = self.lines.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(item)
    }

    fn remove(&mut self, pid: Pid) -> Option<T> {
        for line in &mut self.lines {
            if let Some(index) = line.iter().position(|item| item.pid() == pid) {
                self.len -= 1;
                return line.remove(index);
            }
        }
        None
    }

    /// Every waiting task, in the order they would leave.
    fn drain(&mut self) -> Vec<T> {
        self.len = 0;
        self.lines
            .iter_mut()
            .rev()
            .flat_map(|line| line.drain(..))
            .collect()
    }
}

#[derive(Debug)]
struct State<T> {
    live: u32,
    queue: Waiting<T>,
    /// Places in the queue promised to tasks whose acceptance is being recorded.
    promised: usize,
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

/// What admission decided for a new task, before it is recorded: a place, or a place in the
/// queue. Dropping it gives back what it holds.
#[derive(Debug)]
pub enum Reservation<T> {
    /// A place is free: the task may run as soon as it is recorded.
    Place(Permit<T>),
    /// Every place is taken: the task waits in the queue once it is recorded.
    Queue(QueueSlot<T>),
}

/// A place in the wait queue, promised before the task is recorded. Dropping it gives it back.
#[derive(Debug)]
pub struct QueueSlot<T>(Option<Arc<Admission<T>>>);

/// Where a recorded task went.
#[derive(Debug)]
pub enum Admitted<T> {
    /// A place is free: run it now.
    Now(T, Permit<T>),
    /// It waits in the queue; a released place hands it on.
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
                queue: Waiting::new(),
                promised: 0,
                closed: false,
            }),
            idle: Condvar::new(),
            limit,
            queue_limit,
        })
    }

    /// Promises a new task a place, or a place in the queue, or refuses it; the task is
    /// recorded next, and then placed with [`Admission::fill`] (or its reservation dropped if
    /// it could not be recorded).
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation<T>, Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.live < self.limit {
            state.live += 1;
            return Ok(Reservation::Place(Permit(Some(Arc::clone(self)))));
        }
        if state.queue.len() + state.promised < self.queue_limit {
            state.promised += 1;
            return Ok(Reservation::Queue(QueueSlot(Some(Arc::clone(self)))));
        }
        Err(Refused::Full)
    }

    /// Puts a recorded task in the queue place promised to it, or gives it a place if one has
    /// freed meanwhile and nobody waits for it. Gives it back once admission is closed.
    pub fn fill(self: &Arc<Self>, mut slot: QueueSlot<T>, item: T) -> Result<Admitted<T>, T> {
        slot.0 = None;
        let mut state = self.lock();
        state.promised -= 1;
        if state.closed {
            return Err(item);
        }
        if state.live < self.limit && state.queue.is_empty() {
            state.live += 1;
            return Ok(Admitted::Now(item, Permit(Some(Arc::clone(self)))));
        }
        state.queue.push_back(item);
        Ok(Admitted::Queued)
    }

    /// Admits a task recovered from the store at start: like any other, except that the
    /// queue takes it even past its limit, since its acceptance was answered long ago. Gives
    /// it back once admission is closed.
    pub fn readmit(self: &Arc<Self>, item: T) -> Result<Admitted<T>, T> {
        let mut state = self.lock();
        if state.closed {
            return Err(item);
        }
        if state.live < self.limit && state.queue.is_empty() {
            state.live += 1;
            return Ok(Admitted::Now(item, Permit(Some(Arc::clone(self)))));
        }
        state.queue.push_back(item);
        Ok(Admitted::Queued)
    }

    /// Takes `pid` out of the queue, if it waits there.
    pub fn unqueue(&self, pid: Pid) -> Option<T> {
        self.lock().queue.remove(pid)
    }

    /// Hands back the waiting tasks; admission stays open.
    pub fn drain(&self) -> Vec<T> {
        self.lock().queue.drain()
    }

    /// Refuses every new task from now on, and hands back the waiting ones.
    pub fn close(&self) -> Vec<T> {
        let mut state = self.lock();
        state.closed = true;
        state.queue.drain()
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

    /// Gives one place back: to the first waiting task (by priority, then age) unless
    /// admission is closed, or frees it.
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
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

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

impl<T> Drop for QueueSlot<T> {
    fn drop(&mut self) {
        if let Some(admission) = self.0.take() {
            admission.lock().promised -= 1;
        }
    }
}

impl<T> Drop for Permit<T> {
    fn drop(&mut self) {
        if let Some(admission) = self.0.take() {
            admission.free(&mut admission.lock());
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
        priority: u8,
    }

    impl Queued for Spec {
        fn pid(&self) -> Pid {
            self.pid
        }
        fn priority(&self) -> u8 {
            self.priority
        }
    }

    fn spec(seq: u64) -> Spec {
        Spec {
            pid: Pid::new(1, seq),
            priority: crate::model::DEFAULT_PRIORITY,
        }
    }

    #[test]
    fn a_place_goes_to_the_highest_priority_then_the_oldest() {
        let admission = Admission::<Spec>::new(1, 10);
        let Ok(Admitted::Now(_, mut permit)) = admit(&admission, spec(1)) else {
            panic!("the first task runs at once");
        };
        for (seq, priority) in [(2, 5), (3, 1), (4, 9), (5, 5), (6, 9)] {
            let task = Spec {
                pid: Pid::new(1, seq),
                priority,
            };
            assert!(matches!(admit(&admission, task), Ok(Admitted::Queued)));
        }
        assert!(admission.unqueue(Pid::new(1, 5)).is_some());
        let mut order = Vec::new();
        while let Some((next, place)) = permit.release() {
            order.push(next.pid.seq());
            permit = place;
        }
        assert_eq!(order, [4, 6, 2, 3]);
        assert_eq!((admission.live(), admission.queued()), (0, 0));
    }

    /// Reserves and fills at once, as for a task recorded in no time.
    fn admit(admission: &Arc<Admission<Spec>>, spec: Spec) -> Result<Admitted<Spec>, Refused> {
        match admission.reserve()? {
            Reservation::Place(permit) => Ok(Admitted::Now(spec, permit)),
            Reservation::Queue(slot) => Ok(admission
                .fill(slot, spec)
                .unwrap_or_else(|_| panic!("admission closed meanwhile"))),
        }
    }

    #[test]
    fn admits_then_queues_then_refuses_and_passes_places_on_in_order() {
        let admission = Admission::<Spec>::new(1, 2);
        let Ok(Admitted::Now(_, first)) = admit(&admission, spec(1)) else {
            panic!("the first task runs at once");
        };
        assert!(matches!(admit(&admission, spec(2)), Ok(Admitted::Queued)));
        assert!(matches!(admit(&admission, spec(3)), Ok(Admitted::Queued)));
        assert!(matches!(admit(&admission, spec(4)), Err(Refused::Full)));
        assert_eq!((admission.live(), admission.queued()), (1, 2));

        let (next, second) = first.release().expect("a task waits");
        assert_eq!(next.pid.seq(), 2, "the oldest waiting task got the place");
        assert_eq!((admission.live(), admission.queued()), (1, 1));

        assert!(admission.unqueue(Pid::new(1, 3)).is_some());
        assert!(second.release().is_none(), "nothing waits any more");
        assert_eq!((admission.live(), admission.queued()), (0, 0));
        assert!(admission.wait_idle(Instant::now()));
        assert!(admission.close().is_empty());
        assert!(matches!(admit(&admission, spec(5)), Err(Refused::Closed)));
    }

    #[test]
    fn a_promise_not_kept_is_given_back() {
        let admission = Admission::<Spec>::new(1, 1);
        let place = admission.reserve().expect("a place");
        let slot = admission.reserve().expect("a queue place");
        assert!(matches!(admission.reserve(), Err(Refused::Full)));
        drop(slot);
        drop(place);
        assert_eq!((admission.live(), admission.queued()), (0, 0));
        let Ok(Reservation::Place(_)) = admission.reserve() else {
            panic!("the place is free again");
        };
    }

    #[test]
    fn a_queue_place_filled_after_a_place_freed_runs_at_once() {
        let admission = Admission::<Spec>::new(1, 1);
        let Ok(Reservation::Place(permit)) = admission.reserve() else {
            panic!("a place");
        };
        let Ok(Reservation::Queue(slot)) = admission.reserve() else {
            panic!("a queue place");
        };
        assert!(permit.release().is_none(), "nobody waits in the queue yet");
        assert!(matches!(
            admission.fill(slot, spec(2)),
            Ok(Admitted::Now(..))
        ));
        assert_eq!(admission.queued(), 0);
    }
}
