//! Paused workers: their new tasks are accepted but do not start; they wait here, holding no
//! place, until the worker is resumed, while the worker's running tasks go on.
//!
//! A task is held as it is about to start (on its scheduler thread, its place given back at
//! once), so that whatever brought it there (a free place, the wait queue, its time come, a
//! restart) is held alike. While no worker is paused, the check is one atomic load.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::admission::Queued;
use crate::model::Pid;

#[derive(Debug)]
struct State<T> {
    paused: HashSet<String>,
    /// By worker, in the order they were held.
    held: HashMap<String, Vec<T>>,
    closed: bool,
}

/// The paused workers and the tasks they hold.
#[derive(Debug)]
pub struct Paused<T> {
    any: AtomicBool,
    state: Mutex<State<T>>,
}

impl<T: Queued> Paused<T> {
    pub fn new() -> Self {
        Self {
            any: AtomicBool::new(false),
            state: Mutex::new(State {
                paused: HashSet::new(),
                held: HashMap::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `worker` is paused.
    pub fn is_paused(&self, worker: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.lock().paused.contains(worker)
    }

    /// Holds `item`, a task of `worker` about to start, if `worker` is paused; gives it back
    /// to start if it is not (resumed meanwhile), or once the host shuts down.
    pub fn hold(&self, worker: &str, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed || !state.paused.contains(worker) {
            return Err(item);
        }
        state.held.entry(worker.to_owned()).or_default().push(item);
        Ok(())
    }

    /// Pauses `worker`.
    pub fn pause(&self, worker: &str) {
        let mut state = self.lock();
        state.paused.insert(worker.to_owned());
        self.any.store(true, Ordering::Release);
    }

    /// Resumes `worker`: each task it held, in the order they were held, to `admit`, under
    /// the lock (a kill looking here meanwhile finds it admitted). One `admit` gives back (the
    /// host shutting down) stays held, for [`Paused::close`] to hand back.
    pub fn resume(&self, worker: &str, mut admit: impl FnMut(T) -> Result<(), Box<T>>) {
        let mut state = self.lock();
        state.paused.remove(worker);
        self.any.store(!state.paused.is_empty(), Ordering::Release);
        let mut kept = Vec::new();
        for item in state.held.remove(worker).unwrap_or_default() {
            if let Err(item) = admit(item) {
                kept.push(*item);
            }
        }
        if !kept.is_empty() {
            state.held.insert(worker.to_owned(), kept);
        }
    }

    /// The paused workers.
    pub fn workers(&self) -> Vec<String> {
        self.lock().paused.iter().cloned().collect()
    }

    /// How many tasks `worker` holds.
    pub fn held(&self, worker: &str) -> usize {
        self.lock().held.get(worker).map_or(0, Vec::len)
    }

    /// Takes `pid` out, if it is held.
    pub fn unqueue(&self, pid: Pid) -> Option<T> {
        let mut state = self.lock();
        for held in state.held.values_mut() {
            if let Some(index) = held.iter().position(|item| item.pid() == pid) {
                return Some(held.remove(index));
            }
        }
        None
    }

    /// Hands back every task held; more may be held.
    pub fn drain(&self) -> Vec<T> {
        self.lock()
            .held
            .drain()
            .flat_map(|(_, held)| held)
            .collect()
    }

    /// Hands back every task held, and holds no more.
    pub fn close(&self) -> Vec<T> {
        let mut state = self.lock();
        state.closed = true;
        state.held.drain().flat_map(|(_, held)| held).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Item(Pid);

    impl Queued for Item {
        fn pid(&self) -> Pid {
            self.0
        }
    }

    #[test]
    fn a_paused_worker_holds_its_tasks_until_resumed() {
        let paused = Paused::<Item>::new();
        assert!(!paused.is_paused("w"));
        assert!(paused.hold("w", Item(Pid::new(1, 1))).is_err());
        paused.pause("w");
        assert!(paused.is_paused("w") && !paused.is_paused("other"));
        for seq in 1..=3 {
            assert!(paused.hold("w", Item(Pid::new(1, seq))).is_ok());
        }
        assert!(paused.hold("other", Item(Pid::new(1, 9))).is_err());
        assert_eq!(paused.held("w"), 3);
        assert!(paused.unqueue(Pid::new(1, 2)).is_some());
        let mut resumed = Vec::new();
        paused.resume("w", |item| {
            resumed.push(item.0.seq());
            Ok(())
        });
        assert_eq!(resumed, [1, 3]);
        assert!(!paused.is_paused("w"));
        paused.pause("w");
        assert!(paused.close().is_empty());
        assert!(paused.hold("w", Item(Pid::new(1, 4))).is_err(), "closed");
    }
}
