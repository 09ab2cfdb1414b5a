//! Tasks accepted to run later: held, with no place, no instance and no timer of their own,
//! until they are due, then admitted like any other.
//!
//! One ordered map holds every scheduled task by when it is due, and one thread sleeps until
//! the first of them is: thousands of scheduled tasks cost a map entry each. A task due is
//! handed to admission under the map's lock, so that [`Later::close`] never misses one that was
//! on its way (a shutdown finds it either here or in admission's queue).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::admission::Queued;
use crate::model::Pid;

#[derive(Debug)]
struct State<T> {
    due: BTreeMap<(Instant, Pid), T>,
    at: HashMap<Pid, Instant>,
    /// Places promised to tasks whose acceptance is being recorded.
    promised: usize,
    closed: bool,
}

/// The tasks waiting for their time.
#[derive(Debug)]
pub struct Later<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    limit: usize,
}

/// Why a task may not be scheduled.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `--max-scheduled` tasks wait already.
    Full,
    /// The host is shutting down.
    Closed,
}

impl<T: Queued> Later<T> {
    /// Room for `limit` scheduled tasks.
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                due: BTreeMap::new(),
                at: HashMap::new(),
                promised: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Promises a new task a place here before it is recorded; [`Later::fill`] or
    /// [`Later::unpromise`] follows.
    pub fn promise(&self) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.due.len() + state.promised >= self.limit {
            return Err(Refused::Full);
        }
        state.promised += 1;
        Ok(())
    }

    /// Gives back a promise whose task could not be recorded.
    pub fn unpromise(&self) {
        let mut state = self.lock();
        state.promised = state.promised.saturating_sub(1);
    }

    /// Holds `item` until `due`, in the place promised to it (`promised`), or past the limit
    /// for a task recovered from the store. Gives it back once the host shuts down.
    pub fn fill(&self, item: T, due: Instant, promised: bool) -> Result<(), T> {
        let mut state = self.lock();
        if promised {
            state.promised = state.promised.saturating_sub(1);
        }
        if state.closed {
            return Err(item);
        }
        let pid = item.pid();
        let first = state.due.keys().next().is_none_or(|&(at, _)| due < at);
        state.at.insert(pid, due);
        state.due.insert((due, pid), item);
        if first {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Takes `pid` out, if it waits here.
    pub fn unqueue(&self, pid: Pid) -> Option<T> {
        let mut state = self.lock();
        let due = state.at.remove(&pid)?;
        state.due.remove(&(due, pid))
    }

    /// Makes due at `now` the tasks that `pick` picks (it may change them as it looks); how
    /// many. Walks every task waiting: for a rare change, not a task's way.
    pub fn hurry(&self, mut pick: impl FnMut(&mut T) -> bool, now: Instant) -> usize {
        let mut state = self.lock();
        let keys: Vec<(Instant, Pid)> = state.due.keys().copied().collect();
        let mut hurried = 0;
        for key in keys {
            let picked = state.due.get_mut(&key).is_some_and(&mut pick);
            if picked && let Some(item) = state.due.remove(&key) {
                state.at.insert(key.1, now);
                state.due.insert((now, key.1), item);
                hurried += 1;
            }
        }
        if hurried > 0 {
            self.changed.notify_one();
        }
        hurried
    }

    /// Tasks waiting for their time.
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// Hands back every task waiting, and takes no more.
    pub fn close(&self) -> Vec<T> {
        let mut state = self.lock();
        state.closed = true;
        state.at.clear();
        let waiting = std::mem::take(&mut state.due).into_values().collect();
        self.changed.notify_all();
        waiting
    }

    /// Hands back every task waiting; more may be scheduled.
    pub fn drain(&self) -> Vec<T> {
        let mut state = self.lock();
        state.at.clear();
        std::mem::take(&mut state.due).into_values().collect()
    }

    /// The thread's loop: hands each task to `admit` once it is due, until closed.
    pub fn run(&self, mut admit: impl FnMut(T)) {
        let mut state = self.lock();
        loop {
            if state.closed {
                return;
            }
            let now = Instant::now();
            let next = state.due.keys().next().copied();
            match next {
                Some((due, pid)) if due <= now => {
                    state.at.remove(&pid);
                    if let Some(item) = state.due.remove(&(due, pid)) {
                        // Under the lock: see the module's comment.
                        admit(item);
                    }
                }
                Some((due, _)) => {
                    state = self
                        .changed
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                }
                None => {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[derive(Debug)]
    struct Item(Pid);

    impl Queued for Item {
        fn pid(&self) -> Pid {
            self.0
        }
    }

    #[test]
    fn hands_tasks_on_in_the_order_they_fall_due_and_gives_back_the_rest() {
        let later = Arc::new(Later::<Item>::new(3));
        let now = Instant::now();
        for (seq, ms) in [(1, 60), (2, 20), (3, 10_000)] {
            later.promise().expect("room");
            later
                .fill(
                    Item(Pid::new(1, seq)),
                    now + Duration::from_millis(ms),
                    true,
                )
                .expect("open");
        }
        assert_eq!(later.promise(), Err(Refused::Full));
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = {
            let later = Arc::clone(&later);
            std::thread::spawn(move || later.run(|item| sender.send(item.0.seq()).expect("open")))
        };
        let got: Vec<u64> = (0..2)
            .map(|_| receiver.recv_timeout(Duration::from_secs(5)).expect("due"))
            .collect();
        assert_eq!(got, [2, 1]);
        assert!(now.elapsed() >= Duration::from_millis(60));
        assert!(later.unqueue(Pid::new(1, 9)).is_none());
        let left = later.close();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0.seq(), 3);
        thread.join().expect("the thread ends once closed");
        assert_eq!(later.promise(), Err(Refused::Closed));
    }

    #[test]
    fn hurried_tasks_fall_due_at_once_and_the_others_keep_their_time() {
        let later = Arc::new(Later::<Item>::new(10));
        let now = Instant::now();
        for seq in 1..=3 {
            later
                .fill(
                    Item(Pid::new(1, seq)),
                    now + Duration::from_secs(3_600),
                    false,
                )
                .expect("open");
        }
        assert_eq!(later.hurry(|item| item.0.seq() != 2, now), 2);
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = {
            let later = Arc::clone(&later);
            std::thread::spawn(move || later.run(|item| sender.send(item.0.seq()).expect("open")))
        };
        let mut got: Vec<u64> = (0..2)
            .map(|_| receiver.recv_timeout(Duration::from_secs(5)).expect("due"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 3]);
        let left = later.close();
        assert_eq!(left.len(), 1, "the one not picked waits its hour");
        assert_eq!(left[0].0.seq(), 2);
        thread.join().expect("the thread ends once closed");
    }
}
