//! A task's mailbox carried by its checkpoint (issue #26): what it held when the checkpoint
//! was taken, written with it, and put back in front of whatever came since when the task
//! resumes, on this host or another.
//!
//! Messages and notices are carried; calls waiting in the mailbox are not, since whoever waits
//! for their answer (a task, or an HTTP client's request) is on the host the call was made on:
//! lost with it, or told of the task's leaving when it hands the task on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Actors, EndNotice, Entry};
use crate::model::{Carried, CarriedKind, Pid};

impl EndNotice {
    /// The notice as JSON carries it between hosts and in checkpoints: `{status, outcome,
    /// exit_code, error, result}`, read back by [`EndNotice::from_json`].
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": self.status.map(|status| status.as_str()),
            "outcome": self.outcome.map(|outcome| outcome.as_str()),
            "exit_code": self.exit_code,
            "error": self.error,
            "result": self.result,
        })
    }
}

impl Entry {
    /// The entry as a checkpoint carries it; none for a call.
    fn carried(&self) -> Option<Carried> {
        let notice = |kind, notice: &EndNotice| Carried {
            kind,
            from: Some(notice.pid),
            body: notice.to_json().to_string(),
        };
        match self {
            Entry::Message {
                sender,
                body,
                reply_to: None,
            } => Some(Carried {
                kind: CarriedKind::Message,
                from: *sender,
                body: body.clone(),
            }),
            Entry::Message { .. } => None,
            Entry::Down(end) => Some(notice(CarriedKind::Down, end)),
            Entry::LinkedExit(end) => Some(notice(CarriedKind::LinkedExit, end)),
        }
    }

    /// The entry a checkpoint carried; a notice whose end does not read tells of an unknown
    /// end rather than none.
    fn uncarried(carried: Carried) -> Option<Self> {
        let notice = |carried: &Carried| -> Option<Arc<EndNotice>> {
            let pid = carried.from?;
            let end = serde_json::from_str(&carried.body).unwrap_or(serde_json::Value::Null);
            Some(Arc::new(EndNotice::from_json(pid, &end)))
        };
        Some(match carried.kind {
            CarriedKind::Message => Entry::Message {
                sender: carried.from,
                body: carried.body,
                reply_to: None,
            },
            CarriedKind::Down => Entry::Down(notice(&carried)?),
            CarriedKind::LinkedExit => Entry::LinkedExit(notice(&carried)?),
        })
    }
}

/// What a checkpoint carries of a task as an actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carriage {
    pub name: Option<String>,
    pub trap_exits: bool,
    /// The tasks linked to it, and those it monitors.
    pub links: Vec<Pid>,
    pub monitors: Vec<Pid>,
    /// What its mailbox holds, oldest first, calls left out.
    pub mailbox: Vec<Carried>,
}

impl Carriage {
    fn of(actor: &super::Actor) -> Self {
        Self {
            name: actor.name.as_deref().map(str::to_owned),
            trap_exits: actor.trap_exits,
            links: actor.links.clone(),
            monitors: actor.monitoring.clone(),
            mailbox: actor.mailbox.iter().filter_map(Entry::carried).collect(),
        }
    }
}

/// What must follow a task's leaving this host with its checkpoint.
#[derive(Debug, Default)]
pub struct Moved {
    /// What its checkpoint carries of it, as it left.
    pub carriage: Carriage,
    /// Callers of the calls still in its mailbox, answered that the task was lost to them, to
    /// wake.
    pub wake: Vec<Pid>,
    /// Tasks here that monitor it, and tasks here linked to it: in a cluster they watch it
    /// where it goes on (a task here learns of its end as of any task of another host's).
    pub watchers: Vec<Pid>,
    pub links: Vec<Pid>,
}

impl Actors {
    /// Forgets task `pid`, which leaves this host with its checkpoint (handed on at a shutdown
    /// or a drain) and goes on elsewhere: unlike [`Actors::ended`], nobody is told it ended.
    /// The tasks here that monitor it or are linked to it keep it in their lists, so their
    /// own checkpoints carry it, and a check of another host's task settles what they are
    /// told; it is linked and monitors again where it resumes. Calls in its mailbox cannot
    /// follow it: their callers are answered `host_lost`.
    pub fn moved(&self, pid: Pid, attempt: u32) -> Moved {
        let Some(mut actor) = self.leave(pid) else {
            return Moved::default();
        };
        let carriage = Carriage::of(&actor);
        let notice = Arc::new(EndNotice::of(
            pid,
            &crate::model::TaskEnd::host_lost(attempt),
        ));
        let wake = self.end_calls(&mut actor, &notice);
        // The monitors it held go with it, made again where it resumes.
        for target in actor.monitoring {
            if let Some(watched) = self.shard(target).get_mut(&target) {
                super::forget_one(&mut watched.watchers, pid);
            }
        }
        Moved {
            carriage,
            wake,
            watchers: actor.watchers,
            links: actor.links,
        }
    }

    /// Counts `target`, a task of another host (or of the cluster's queue) that `watcher`
    /// monitors from afar, among the tasks it monitors, so that its checkpoint carries it.
    pub fn monitor_remote(&self, watcher: Pid, target: Pid) {
        if let Some(actor) = self.shard(watcher).get_mut(&watcher)
            && !actor.monitoring.contains(&target)
        {
            actor.monitoring.push(target);
        }
    }

    /// Tells `watcher` of the end of `notice.pid`, which it monitored from afar: a `down`,
    /// past the bound, and the monitor forgotten. `Some(true)`: it must be woken.
    pub fn down_remote(&self, watcher: Pid, notice: Arc<EndNotice>) -> Option<bool> {
        let mut shard = self.shard(watcher);
        let actor = shard.get_mut(&watcher)?;
        super::forget_one(&mut actor.monitoring, notice.pid);
        Some(actor.notify(Entry::Down(notice), &self.total_bytes))
    }

    /// What a checkpoint of task `pid` carries of it as an actor; none if it is not live here.
    pub fn carriage(&self, pid: Pid) -> Option<Carriage> {
        self.shard(pid).get(&pid).map(Carriage::of)
    }

    /// Puts `carried`, what task `pid`'s mailbox held at the checkpoint it resumes from, back
    /// in front of whatever was sent to it since. Past the bounds if need be (it held them
    /// once), counted in them. `Some(true)`: it waited and must be woken; `None`: not live.
    pub fn restore(&self, pid: Pid, carried: Vec<Carried>) -> Option<bool> {
        let entries: VecDeque<Entry> = carried.into_iter().filter_map(Entry::uncarried).collect();
        let mut shard = self.shard(pid);
        let actor = shard.get_mut(&pid)?;
        if entries.is_empty() {
            return Some(false);
        }
        let bytes: usize = entries.iter().map(Entry::bytes).sum();
        actor.messages += entries
            .iter()
            .filter(|entry| matches!(entry, Entry::Message { .. }))
            .count();
        actor.bytes += bytes;
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        let since = std::mem::replace(&mut actor.mailbox, entries);
        actor.mailbox.extend(since);
        Some(std::mem::take(&mut actor.waiting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, TaskEnd};

    fn limited() -> Actors {
        crate::actor::tests::actors(8)
    }

    fn pid(n: u64) -> Pid {
        Pid::new(1, n)
    }

    #[test]
    fn a_mailbox_is_carried_and_put_back_in_front_of_what_came_since() {
        let actors = limited();
        let (task, sender, watched) = (pid(1), pid(2), pid(3));
        actors.enter(task);
        actors.enter(watched);
        assert_eq!(actors.monitor(task, watched), Ok(true));
        assert_eq!(
            actors.put(task, Some(sender), "{\"n\":1}".into(), || {}),
            Ok(false)
        );
        assert_eq!(actors.put(task, None, "two".into(), || {}), Ok(false));
        actors.ended(
            watched,
            &TaskEnd::failed(Outcome::Trap, "boom".into()),
            drop,
        );
        let carried = actors.carriage(task).expect("live").mailbox;
        assert_eq!(carried.len(), 3, "{carried:?}");
        assert_eq!(carried[0].kind, CarriedKind::Message);
        assert_eq!(carried[0].from, Some(sender));
        assert_eq!(carried[2].kind, CarriedKind::Down);
        assert_eq!(carried[2].from, Some(watched));

        // On another host: what came since the checkpoint follows what it carried.
        let other = limited();
        other.enter(task);
        assert_eq!(other.put(task, None, "since".into(), || {}), Ok(false));
        assert_eq!(other.restore(task, carried), Some(false));
        let mut bodies = Vec::new();
        while let Some(entry) = other.take(task, false) {
            bodies.push(match entry {
                Entry::Message { sender, body, .. } => format!("{sender:?} {body}"),
                Entry::Down(end) => format!("down {} {:?}", end.pid, end.error),
                Entry::LinkedExit(end) => format!("exit {}", end.pid),
            });
        }
        assert_eq!(
            bodies,
            [
                format!("{:?} {{\"n\":1}}", Some(sender)),
                "None two".to_owned(),
                format!("down {watched} {:?}", Some("boom")),
                "None since".to_owned(),
            ]
        );
        // What it held is counted, and given back as it is taken.
        assert_eq!(other.mailboxes_bytes(), 0);
        assert_eq!(other.restore(pid(9), Vec::new()), None);
    }

    #[test]
    fn a_task_that_moves_is_still_watched_and_linked_and_its_callers_are_answered() {
        let actors = limited();
        let (task, watcher, linked, watched) = (pid(1), pid(2), pid(3), pid(4));
        for each in [task, watcher, linked, watched] {
            actors.enter(each);
        }
        assert_eq!(actors.monitor(watcher, task), Ok(true));
        assert_eq!(actors.link(linked, task), Ok(true));
        assert_eq!(actors.monitor(task, watched), Ok(true));
        assert_eq!(actors.register(task, "mover"), Ok(()));
        let (client, mut answer) = tokio::sync::oneshot::channel();
        let caller = crate::actor::Caller::Client(client);
        assert_eq!(
            actors.put_call(task, None, "q".into(), caller, || {}),
            Ok(false)
        );

        let moved = actors.moved(task, 1);
        assert_eq!(moved.carriage.name.as_deref(), Some("mover"));
        assert_eq!(moved.carriage.monitors, [watched]);
        // The call waiting in its mailbox is not carried.
        assert_eq!(moved.carriage.mailbox, []);
        assert_eq!(moved.watchers, [watcher]);
        assert_eq!(moved.links, [linked]);
        assert!(!actors.holds(task));
        assert_eq!(actors.whereis("mover"), None);
        // Nobody was told it ended; they keep it, for their own checkpoints.
        assert_eq!(actors.monitoring(watcher), [task]);
        assert!(actors.linked(linked, task));
        assert_eq!(actors.take(watcher, false), None);
        assert_eq!(actors.take(linked, false), None);
        // What it monitored forgets it; the call in its mailbox is answered.
        actors.ended(watched, &TaskEnd::exited(0), drop);
        assert_eq!(actors.take(task, false), None);
        match answer.try_recv() {
            Ok(crate::actor::Reply::Ended(end)) => {
                assert_eq!(end.outcome, Some(Outcome::HostLost));
            }
            other => panic!("the caller got {other:?}"),
        }
        // Told from afar of its end, a watcher forgets the monitor.
        let end = Arc::new(EndNotice::of(task, &TaskEnd::exited(0)));
        assert_eq!(actors.down_remote(watcher, end), Some(false));
        assert!(actors.monitoring(watcher).is_empty());
        assert!(matches!(actors.take(watcher, false), Some(Entry::Down(_))));
    }
}
