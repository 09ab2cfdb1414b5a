//! Task trees and their spawn budget. A task submitted over HTTP is the root of a tree, and
//! every task it spawns, and they spawn, belongs to it. A tree holds at most `max_descendants`
//! live descendants on this host, and spawns at most `max_spawns_per_sec` a second, in bursts
//! of up to ten seconds' worth (a token bucket): one request, however its guests behave, cannot
//! take the whole host. A spawn past either is refused to the guest as `full`.
//!
//! A tree's entry is made at its first spawn and goes once the root has ended and no
//! descendant of it lives here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::model::Pid;

/// Why a tree has no room for one more child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnRefusal {
    /// It has spawned its share for now (`max_spawns_per_sec`).
    Rate,
    /// It holds `max_descendants` live tasks.
    Descendants,
}

impl SpawnRefusal {
    /// The refusal as metrics and messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Descendants => "descendants",
        }
    }
}

/// One tree's share.
#[derive(Debug)]
struct Tree {
    /// Live descendants here.
    live: usize,
    /// Spawns it may make now.
    tokens: f64,
    refilled: Instant,
}

/// Every tree with descendants or spawns to account for.
#[derive(Debug)]
pub(super) struct Trees {
    trees: Mutex<HashMap<Pid, Tree>>,
    max_descendants: usize,
    per_sec: f64,
    burst: f64,
}

impl Trees {
    pub(super) fn new(max_descendants: usize, max_spawns_per_sec: u32) -> Self {
        let per_sec = f64::from(max_spawns_per_sec);
        Self {
            trees: Mutex::default(),
            max_descendants,
            per_sec,
            burst: (10.0 * per_sec).min(max_descendants as f64).max(per_sec),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, Tree>> {
        self.trees
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Charges one spawn to the tree whose root is `root`, if it has room.
    pub(super) fn charge(&self, root: Pid) -> Result<(), SpawnRefusal> {
        let now = Instant::now();
        let mut trees = self.lock();
        let tree = trees.entry(root).or_insert(Tree {
            live: 0,
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(tree.refilled).as_secs_f64();
        tree.tokens = (tree.tokens + elapsed * self.per_sec).min(self.burst);
        tree.refilled = now;
        if tree.live >= self.max_descendants {
            return Err(SpawnRefusal::Descendants);
        }
        if tree.tokens < 1.0 {
            return Err(SpawnRefusal::Rate);
        }
        tree.tokens -= 1.0;
        tree.live += 1;
        Ok(())
    }

    /// A descendant of `root`'s tree no longer lives here (it ended, or was never placed here);
    /// `root_live`: whether the root itself still lives.
    pub(super) fn release(&self, root: Pid, root_live: bool) {
        let mut trees = self.lock();
        if let Some(tree) = trees.get_mut(&root) {
            tree.live = tree.live.saturating_sub(1);
            if tree.live == 0 && !root_live {
                trees.remove(&root);
            }
        }
    }

    /// The root `root` ended: its tree goes once no descendant lives.
    pub(super) fn root_ended(&self, root: Pid) {
        let mut trees = self.lock();
        if trees.get(&root).is_some_and(|tree| tree.live == 0) {
            trees.remove(&root);
        }
    }

    #[cfg(test)]
    pub(super) fn live(&self, root: Pid) -> Option<usize> {
        self.lock().get(&root).map(|tree| tree.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_spawns_within_its_descendants_and_its_rate() {
        let trees = Trees::new(3, 1); // a burst of three (ten seconds' worth, at most 3)
        let root = Pid::new(1, 1);
        for _ in 0..3 {
            assert_eq!(trees.charge(root), Ok(()));
        }
        assert_eq!(trees.charge(root), Err(SpawnRefusal::Descendants));
        trees.release(root, true);
        // Room again, but the burst (the descendants bound) is spent, and one a second comes
        // back.
        assert_eq!(trees.charge(root), Err(SpawnRefusal::Rate));
        assert_eq!(trees.live(root), Some(2));
        trees.release(root, false);
        trees.release(root, false);
        assert_eq!(
            trees.live(root),
            None,
            "gone with its root and last descendant"
        );
        trees.root_ended(root);
        assert_eq!(
            trees.charge(Pid::new(1, 2)),
            Ok(()),
            "another tree has its own"
        );
    }
}
