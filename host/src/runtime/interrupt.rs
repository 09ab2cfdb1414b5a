//! Kills that reach a task while one of its steps runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{Pid, TaskEnd};

/// The tasks of one scheduler thread that were asked to die and have not ended yet: written by
/// whoever asks for a kill, read at every epoch tick of a running step (so a compute-bound step
/// is stopped within a tick) and before a task is instantiated. One set per scheduler thread,
/// since a kill goes only to the thread that owns the task. Nearly always empty, so an empty set
/// is answered from a counter without taking the lock.
#[derive(Debug, Clone, Default)]
pub struct Interrupts(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    pids: Mutex<HashSet<Pid>>,
    /// `pids.len()`, written under the lock. Sequentially consistent: a kill writes the set
    /// and then reads the store, a task's end writes the store and then reads the set, and
    /// one of the two must see the other's write.
    len: AtomicUsize,
    /// Set while every task of the thread is to stop (a lost lease, the end of a shutdown's
    /// grace), until the thread has stopped them all.
    all: AtomicBool,
    /// How they end.
    all_end: Mutex<Option<TaskEnd>>,
}

impl Interrupts {
    fn lock(&self) -> MutexGuard<'_, HashSet<Pid>> {
        self.0
            .pids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut HashSet<Pid>)) {
        let mut pids = self.lock();
        change(&mut pids);
        self.0.len.store(pids.len(), Ordering::SeqCst);
    }

    /// Asks for `pid` to be stopped.
    pub fn add(&self, pid: Pid) {
        self.update(|pids| {
            pids.insert(pid);
        });
    }

    /// Forgets `pid`, whose end is recorded.
    pub fn remove(&self, pid: Pid) {
        if self.0.len.load(Ordering::SeqCst) > 0 {
            self.update(|pids| {
                pids.remove(&pid);
            });
        }
    }

    /// Whether `pid` is to be stopped.
    pub fn contains(&self, pid: Pid) -> bool {
        self.0.all.load(Ordering::SeqCst)
            || (self.0.len.load(Ordering::SeqCst) > 0 && self.lock().contains(&pid))
    }

    /// Asks for every task of the thread to stop, ending as `end`.
    pub fn stop_all(&self, end: TaskEnd) {
        *self
            .0
            .all_end
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(end);
        self.0.all.store(true, Ordering::SeqCst);
    }

    /// How every task is to end, while they all are to stop.
    pub fn stopping_all(&self) -> Option<TaskEnd> {
        if !self.0.all.load(Ordering::SeqCst) {
            return None;
        }
        self.0
            .all_end
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The thread has stopped every task it held: new ones run.
    pub fn stopped_all(&self) {
        self.0.all.store(false, Ordering::SeqCst);
    }
}
