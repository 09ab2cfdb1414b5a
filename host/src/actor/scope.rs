//! Which tasks a task may reach with its actor calls. By default any: Erlang's model, where any
//! process may message, kill, link to or monitor any pid it learns, right for one tenant. A
//! worker may be held to less (`actor_scope` in its registry entry): its tasks then reach only
//! their own tree (`tree`: the task submitted over HTTP and everything spawned from it), or only
//! their own descendants (`descendants`), and themselves. A pid out of reach is answered as one
//! that does not exist. The scope bounds what a worker's tasks reach, not who reaches them.
//!
//! A task's [`Lineage`] is its ancestors as this host knows them. A task run again after a
//! crash, or claimed from a cluster's shared queue, knows its parent's pid but not always its
//! parent's lineage: the rest is then read from the store's records (see `host::reach`).

use crate::model::Pid;

/// How far a worker's tasks reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActorScope {
    /// Any task.
    #[default]
    Any,
    /// Tasks of its own tree: the same root.
    Tree,
    /// Its own descendants.
    Descendants,
}

impl ActorScope {
    /// The scope called `name` in a registry file.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "any" => Some(Self::Any),
            "tree" => Some(Self::Tree),
            "descendants" => Some(Self::Descendants),
            _ => None,
        }
    }

    /// Its name, as the registry file and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Tree => "tree",
            Self::Descendants => "descendants",
        }
    }
}

/// How many of a task's ancestors it keeps in memory, nearest first. Beyond them (a deep
/// tree), or when it was entered without its parent's lineage, the rest is read from the store.
pub const KEPT_ANCESTORS: usize = 64;

/// A task's ancestors as this host knows them: parent first, at most [`KEPT_ANCESTORS`]; a
/// task submitted over HTTP has none, and keeps no lineage at all.
#[derive(Debug)]
pub struct Lineage {
    ancestors: Box<[Pid]>,
    /// Whether the last of `ancestors` is the root of the tree.
    complete: bool,
}

impl Lineage {
    /// The lineage of a child of `parent`, whose own lineage is `up` (`None` when it has none:
    /// a root), or unknown when `known_up` is false.
    pub(super) fn child_of(parent: Pid, up: Option<&Lineage>, known_up: bool) -> Self {
        let mut ancestors = Vec::with_capacity(1 + up.map_or(0, |up| up.ancestors.len()));
        ancestors.push(parent);
        let mut complete = known_up;
        if let Some(up) = up {
            let room = KEPT_ANCESTORS - 1;
            ancestors.extend(up.ancestors.iter().take(room));
            complete = up.complete && up.ancestors.len() <= room;
        }
        Self {
            ancestors: ancestors.into_boxed_slice(),
            complete,
        }
    }

    /// The ancestors kept, parent first.
    pub fn ancestors(&self) -> &[Pid] {
        &self.ancestors
    }

    /// The last kept ancestor, when its own parent is not known here: where a walk through the
    /// store's records goes on.
    pub fn broken_at(&self) -> Option<Pid> {
        if self.complete {
            None
        } else {
            self.ancestors.last().copied()
        }
    }
}

/// Where an accepted task enters: its parent (none: it was submitted over HTTP), the root of its
/// tree for the spawn budget, and the scope of its worker.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub parent: Option<Pid>,
    pub root: Pid,
    pub scope: ActorScope,
    /// The task whose subtree bounds everything this one may reach, whatever its scope: set
    /// for a task spawned under one held to a scope narrower than `any`, so that spawning a
    /// worker of a wider scope never widens what a tree reaches.
    pub bound: Option<Pid>,
}

impl Placement {
    /// A task submitted over HTTP, or one whose tree this host does not know: its own root.
    pub fn root(pid: Pid, parent: Option<Pid>, scope: ActorScope) -> Self {
        Self {
            parent,
            root: pid,
            scope,
            bound: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lineage_keeps_the_nearest_ancestors_and_says_where_it_breaks() {
        let pid = |seq| Pid::new(1, seq);
        // A child of a root: complete.
        let child = Lineage::child_of(pid(1), None, true);
        assert_eq!(child.ancestors(), [pid(1)]);
        assert_eq!(child.broken_at(), None);
        // A child of a task whose lineage this host does not know: broken at its parent.
        let orphan = Lineage::child_of(pid(7), None, false);
        assert_eq!(orphan.broken_at(), Some(pid(7)));
        let below = Lineage::child_of(pid(8), Some(&orphan), true);
        assert_eq!(below.ancestors(), [pid(8), pid(7)]);
        assert_eq!(below.broken_at(), Some(pid(7)));
        // A deep chain keeps the nearest ones, and breaks where it stops keeping.
        let mut lineage = child;
        for seq in 2..=(KEPT_ANCESTORS as u64 + 10) {
            lineage = Lineage::child_of(pid(seq), Some(&lineage), true);
        }
        assert_eq!(lineage.ancestors().len(), KEPT_ANCESTORS);
        assert_eq!(lineage.ancestors()[0], pid(KEPT_ANCESTORS as u64 + 10));
        assert_eq!(lineage.broken_at(), lineage.ancestors().last().copied());
    }
}
