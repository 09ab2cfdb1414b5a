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

impl Actors {
    /// What task `pid`'s mailbox holds, oldest first, as its checkpoint carries it.
    pub fn carried(&self, pid: Pid) -> Vec<Carried> {
        self.shard(pid).get(&pid).map_or_else(Vec::new, |actor| {
            actor.mailbox.iter().filter_map(Entry::carried).collect()
        })
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
    use crate::actor::ActorLimits;
    use crate::model::{Outcome, TaskEnd};

    fn limited() -> Actors {
        Actors::new(ActorLimits {
            max_messages: 8,
            max_message_bytes: 1024,
            max_mailbox_bytes: 4096,
            max_mailboxes_bytes: 6144,
            max_watches: 4,
            max_descendants: 4,
            max_spawns_per_sec: 1,
        })
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
        let carried = actors.carried(task);
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
}
