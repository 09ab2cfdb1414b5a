//! Whether a task's actor calls reach another task, as its worker's `actor_scope` says (see
//! [`ActorScope`]). Only a worker held to less than `any` pays for the check: a walk up the
//! target's ancestors, in memory while this host knows them, then through the store's records.

use super::Host;
use crate::actor::ActorScope;
use crate::model::Pid;

/// How many generations a check walks up before it gives up, and the target counts as out of
/// reach: far deeper than any tree a supervisor builds.
const MAX_GENERATIONS: usize = 512;

/// A task's ancestors, parent first, and whether they go up to its tree's root.
struct Ancestry {
    ancestors: Vec<Pid>,
    complete: bool,
}

impl Ancestry {
    /// The root of the tree, when the walk reached it.
    fn root(&self, pid: Pid) -> Option<Pid> {
        self.complete
            .then(|| self.ancestors.last().copied().unwrap_or(pid))
    }
}

impl Host {
    /// The scope of the worker called `worker`: `any` for one this host no longer has.
    pub(super) fn scope_of(&self, worker: &str) -> ActorScope {
        self.workers
            .get(Some(worker))
            .map_or(ActorScope::Any, |worker| worker.settings.actor_scope)
    }

    /// Worker `worker`'s checkpoint policy (`off` for a worker this host does not know).
    pub(super) fn checkpoint_of(&self, worker: &str) -> crate::model::CheckpointPolicy {
        self.workers
            .get(Some(worker))
            .map_or(crate::model::CheckpointPolicy::Off, |worker| {
                worker.settings.checkpoint
            })
    }

    /// A task's checkpoint policy, and whether it is its own: the one its checkpoint row keeps
    /// from its acceptance, else its worker's.
    pub(super) fn checkpoint_policy(
        &self,
        row: Option<&crate::model::StoredCheckpoint>,
        worker: &str,
    ) -> (crate::model::CheckpointPolicy, bool) {
        match row.and_then(|row| row.policy) {
            Some(policy) => (policy, true),
            None => (self.checkpoint_of(worker), false),
        }
    }

    /// Whether `caller`, a running task, may send to, kill, link to or monitor `target`, or
    /// learn that it holds a name.
    pub(super) async fn reaches(&self, caller: Pid, target: Pid) -> bool {
        if let Some(reached) = self.reaches_at_once(caller, target) {
            return reached;
        }
        let Some((scope, bound, _)) = self.actors.reach(caller) else {
            return false;
        };
        let up = self.ancestry(target).await;
        // Within the subtree that bounds it, whatever its scope.
        if bound.is_some_and(|bound| target != bound && !up.ancestors.contains(&bound)) {
            return false;
        }
        if up.ancestors.contains(&caller) {
            return true;
        }
        match scope {
            ActorScope::Any => true,
            ActorScope::Descendants => false,
            ActorScope::Tree => {
                let root = up.root(target);
                root.is_some() && root == self.ancestry(caller).await.root(caller)
            }
        }
    }

    /// [`Host::reaches`] when it needs no walk up the target's ancestors (a worker reaching
    /// any task, or a task itself); none when it does.
    pub(super) fn reaches_at_once(&self, caller: Pid, target: Pid) -> Option<bool> {
        let Some((scope, bound, _)) = self.actors.reach(caller) else {
            // Not a task running here: it makes no calls.
            return Some(false);
        };
        (caller == target || (scope == ActorScope::Any && bound.is_none())).then_some(true)
    }

    /// `pid`'s ancestors: from the lineages this host keeps, and where those end, from the
    /// store's records (a task that ended, runs on another host, or was entered after a crash).
    async fn ancestry(&self, pid: Pid) -> Ancestry {
        let mut ancestors = Vec::new();
        // The task whose ancestors come next: `pid`, then the last one found.
        let mut at = pid;
        while ancestors.len() < MAX_GENERATIONS {
            let parent = match self.actors.reach(at) {
                Some((_, _, None)) => None,
                Some((_, _, Some(lineage))) => {
                    ancestors.extend_from_slice(lineage.ancestors());
                    match lineage.broken_at() {
                        Some(last) => {
                            at = last;
                            continue;
                        }
                        None => None,
                    }
                }
                None => match self.store.get_async(at).await {
                    Ok(Some(record)) => record.parent,
                    // Unknown, or the store cannot say now: out of reach.
                    _ => {
                        return Ancestry {
                            ancestors,
                            complete: false,
                        };
                    }
                },
            };
            match parent {
                Some(parent) => {
                    ancestors.push(parent);
                    at = parent;
                }
                None => {
                    return Ancestry {
                        ancestors,
                        complete: true,
                    };
                }
            }
        }
        Ancestry {
            ancestors,
            complete: false,
        }
    }
}
