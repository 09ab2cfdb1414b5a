//! Tasks as actors: every live task's mailbox, its links and monitors, and the names tasks
//! register, as Erlang keeps them beside each process.
//!
//! This module is bookkeeping and nothing else: it never runs a task, wakes a thread or writes
//! the store. Each operation says what must follow (a task to wake, one to kill, a notice
//! delivered) and the caller, which owns the scheduler, carries it out. A task's entry is made
//! when it is accepted (so it can be sent to while it waits for a place) and removed when its
//! end is recorded; between attempts of a restarted task it stays, mailbox and all. Mailboxes
//! live in memory only: a task run again after a crash starts with an empty one, as an Erlang
//! process does, unless it resumes from a checkpoint, which carries its mailbox (`carry`).
//!
//! What one task may make the host hold is bounded here, per task and in all: a mailbox holds
//! at most `max_messages` messages and `max_mailbox_bytes` bytes of messages and notices, all
//! mailboxes together `max_mailboxes_bytes`; a notice is shared by every task it goes to; a
//! task monitors another once however often it asks; and a task tree (a task submitted over
//! HTTP and everything it spawned, and they spawned) holds at most `max_descendants` live
//! descendants and spawns at most `max_spawns_per_sec` of them a second (`tree`).
//!
//! Locks: one per shard of entries, one for names, one for the trees; none is held while
//! another is taken, except names before a shard (in `register`), so there is no lock order to
//! get wrong.

mod calls;
mod carry;
mod kernel;
mod scope;
mod tree;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use calls::Calls;
pub use calls::{Awaited, CallError, Caller, Reply, ReplyError, ReplyTo};
pub use carry::Carriage;
pub use kernel::{Answer, ChildError, ChildRequest, Kernel, NameError, SendError, WatchError};
pub use scope::{ActorScope, Lineage, Placement};
pub use tree::SpawnRefusal;
use tree::Trees;

use crate::model::{ActorState, JsonText, Outcome, Pid, Status, TaskEnd};

/// Entries are spread over this many locks, by pid, so tasks on different scheduler threads
/// rarely meet on one.
const SHARDS: usize = 16;

/// Ends remembered after their entry is gone, for monitors and links that come after the end
/// but before the store has it.
const RECENT_ENDS: usize = 4096;

/// The longest name a task may register.
pub const MAX_NAME_LEN: usize = 64;

/// How big mailboxes, watch lists and task trees may grow.
#[derive(Debug, Clone, Copy)]
pub struct ActorLimits {
    /// Messages one mailbox holds; a send past it is refused (`429` over HTTP).
    pub max_messages: usize,
    /// The largest message body, in bytes (`413` over HTTP).
    pub max_message_bytes: usize,
    /// Bytes of messages and notices one mailbox holds; a message past it is refused.
    pub max_mailbox_bytes: usize,
    /// Bytes of messages and notices every mailbox of the host holds together; a message past
    /// it is refused.
    pub max_mailboxes_bytes: usize,
    /// Links plus monitors one task may hold.
    pub max_watches: usize,
    /// Live descendants one task tree may hold.
    pub max_descendants: usize,
    /// Children one task tree may spawn a second, in bursts of up to ten seconds' worth.
    pub max_spawns_per_sec: u32,
}

/// What an entry costs its mailbox beyond its text: its place in the queue, the notice's
/// fields.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// How a task ended, as monitors and links report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndNotice {
    pub pid: Pid,
    /// `None`: no such task exists, or the host forgot it.
    pub status: Option<Status>,
    pub outcome: Option<Outcome>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// What it returned, when it exited with a result.
    pub result: Option<JsonText>,
}

impl EndNotice {
    /// The notice of `end`, the end of `pid`.
    pub fn of(pid: Pid, end: &TaskEnd) -> Self {
        Self {
            pid,
            status: Some(end.status),
            outcome: Some(end.outcome),
            exit_code: end.exit_code,
            error: end.error.clone(),
            result: end.result.clone(),
        }
    }

    /// The notice of `pid`'s end as JSON carries it between hosts (an `exit` command in the
    /// store, a relayed call's `504`): `{status, outcome, exit_code, error, result}`, any of
    /// them missing or null.
    pub fn from_json(pid: Pid, end: &serde_json::Value) -> Self {
        let text = |field: &str| end[field].as_str();
        Self {
            pid,
            status: text("status").and_then(Status::parse),
            outcome: text("outcome").and_then(Outcome::parse),
            exit_code: end["exit_code"]
                .as_i64()
                .and_then(|code| i32::try_from(code).ok()),
            error: text("error").map(str::to_owned),
            result: match &end["result"] {
                serde_json::Value::Null => None,
                result => JsonText::parse(result.to_string()).ok(),
            },
        }
    }

    /// The notice for a pid no task has (or the host no longer remembers).
    pub fn unknown(pid: Pid) -> Self {
        Self {
            pid,
            status: None,
            outcome: None,
            exit_code: None,
            error: None,
            result: None,
        }
    }

    /// Whether the end was abnormal, as Erlang means it: anything but exiting with code 0. An
    /// unknown pid counts as abnormal (Erlang's `noproc`).
    pub fn is_abnormal(&self) -> bool {
        !(self.status == Some(Status::Exited) && self.exit_code == Some(0))
    }

    /// How it ended, in a few words: `exit code 3`, `trap`, `no_such_process`, ...
    pub fn describe(&self) -> String {
        match (self.outcome, self.exit_code) {
            (Some(Outcome::Exit), Some(code)) => format!("exit code {code}"),
            _ => self.outcome_str().to_owned(),
        }
    }

    /// The status as the API and the WIT name it.
    pub fn status_str(&self) -> &'static str {
        self.status.map_or("unknown", Status::as_str)
    }

    /// The outcome as the API and the WIT name it.
    pub fn outcome_str(&self) -> &'static str {
        self.outcome.map_or("no_such_process", Outcome::as_str)
    }
}

/// One entry of a mailbox, taken in order by `receive`. A notice is shared by every mailbox
/// it goes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// A message: from a task, or from an HTTP client (`sender` none); a call when it asks
    /// for an answer.
    Message {
        sender: Option<Pid>,
        body: String,
        reply_to: Option<ReplyTo>,
    },
    /// A task this one monitors ended.
    Down(Arc<EndNotice>),
    /// A task linked to this one ended abnormally, and this one traps exits.
    LinkedExit(Arc<EndNotice>),
}

impl Entry {
    /// What it costs a mailbox, in bytes.
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD_BYTES
            + match self {
                Entry::Message { body, .. } => body.len(),
                Entry::Down(notice) | Entry::LinkedExit(notice) => {
                    notice.error.as_ref().map_or(0, String::len)
                        + notice.result.as_ref().map_or(0, JsonText::len)
                }
            }
    }
}

/// What woke a task for a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// The first step after `start`.
    Started,
    /// A sleep ran out.
    Slept,
    /// `receive` took this entry.
    Entry(Entry),
    /// `receive` waited its whole timeout.
    Timeout,
    /// What came of the call with this ticket, which the task awaited.
    Replied(u64, Reply),
}

/// Why a put into a mailbox failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutError {
    /// No live task has this pid: it has ended, or never existed; the caller tells which.
    NotLive,
    /// The mailbox holds its limit of messages or bytes, or every mailbox together holds
    /// theirs.
    Full,
}

/// A notice a task's end put in a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// A `down` to a monitor.
    Down { watcher: Pid },
    /// A `linked-exit` to a linked task that traps exits.
    Trapped { linked: Pid },
}

/// What must follow a task's end.
#[derive(Debug, Default)]
pub struct Aftermath {
    /// Tasks whose mailbox got a notice while they waited in `receive`: wake them.
    pub wake: Vec<Pid>,
    /// Linked tasks that do not trap exits: kill them, `linked_exit`.
    pub kill: Vec<Pid>,
    /// Linked tasks another host of the cluster holds, to be told of an abnormal end there.
    pub remote: Vec<Pid>,
    /// How the task ended, as its monitors and links were told.
    pub notice: Option<Arc<EndNotice>>,
}

/// One live task as an actor.
#[derive(Debug)]
struct Actor {
    mailbox: VecDeque<Entry>,
    /// Messages in `mailbox`: notices do not count against the bound of messages, so that a
    /// monitor's `down` is never refused.
    messages: usize,
    /// What `mailbox` costs, notices included.
    bytes: usize,
    /// The task at the root of its tree: itself, if it was submitted over HTTP.
    root: Pid,
    /// Its ancestors, as far as this host knows them; none for a task submitted over HTTP.
    lineage: Option<Arc<Lineage>>,
    /// How far its actor calls reach.
    scope: ActorScope,
    /// The task whose subtree bounds its reach, whatever its scope (see [`Placement::bound`]).
    bound: Option<Pid>,
    /// The task waits in `receive` for its mailbox: the next put must wake it.
    waiting: bool,
    links: Vec<Pid>,
    /// Tasks monitoring this one, each once however often it asked.
    watchers: Vec<Pid>,
    /// Tasks still live this one monitors, each once.
    monitoring: Vec<Pid>,
    trap_exits: bool,
    name: Option<Arc<str>>,
    /// Its calls, made and taken, once it has any.
    calls: Option<Box<Calls>>,
}

impl Actor {
    fn new(
        root: Pid,
        lineage: Option<Arc<Lineage>>,
        scope: ActorScope,
        bound: Option<Pid>,
    ) -> Self {
        Self {
            bound,
            mailbox: VecDeque::new(),
            messages: 0,
            bytes: 0,
            root,
            lineage,
            scope,
            waiting: false,
            links: Vec::new(),
            watchers: Vec::new(),
            monitoring: Vec::new(),
            trap_exits: false,
            name: None,
            calls: None,
        }
    }

    fn watches(&self) -> usize {
        self.links.len() + self.monitoring.len()
    }

    /// Puts a notice (never refused), counted in `total`, and says whether the task must be
    /// woken.
    fn notify(&mut self, entry: Entry, total: &AtomicUsize) -> bool {
        let bytes = entry.bytes();
        self.bytes += bytes;
        total.fetch_add(bytes, Ordering::Relaxed);
        self.mailbox.push_back(entry);
        std::mem::take(&mut self.waiting)
    }
}

/// Every live task's actor state.
#[derive(Debug)]
pub struct Actors {
    shards: Box<[Mutex<HashMap<Pid, Actor>>]>,
    /// Ends remembered, sharded like the entries so a task's end takes no lock shared by
    /// every thread.
    names: Mutex<HashMap<Arc<str>, Pid>>,
    recent: Box<[Mutex<Recent>]>,
    limits: ActorLimits,
    /// What every mailbox holds, in bytes.
    total_bytes: AtomicUsize,
    trees: Trees,
    /// Answers to calls dropped because nobody waited for them any more.
    late_replies: AtomicU64,
}

#[derive(Debug, Default)]
struct Recent {
    ends: HashMap<Pid, Arc<EndNotice>>,
    order: VecDeque<Pid>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes one `pid` from `pids` (a monitor is counted once per call).
fn forget_one(pids: &mut Vec<Pid>, pid: Pid) {
    if let Some(at) = pids.iter().position(|p| *p == pid) {
        pids.swap_remove(at);
    }
}

/// Whether `name` may be registered: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_`
/// and `.`, so it is safe in a URL path and a log line.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Actors {
    pub fn new(limits: ActorLimits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            names: Mutex::default(),
            recent: (0..SHARDS).map(|_| Mutex::default()).collect(),
            limits,
            total_bytes: AtomicUsize::new(0),
            trees: Trees::new(limits.max_descendants, limits.max_spawns_per_sec),
            late_replies: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> ActorLimits {
        self.limits
    }

    fn shard(&self, pid: Pid) -> MutexGuard<'_, HashMap<Pid, Actor>> {
        lock(&self.shards[(pid.seq() as usize) % SHARDS])
    }

    fn recent(&self, pid: Pid) -> MutexGuard<'_, Recent> {
        lock(&self.recent[(pid.seq() as usize) % SHARDS])
    }

    /// Gives an accepted task its (empty) mailbox, as the root of its own tree, reaching any
    /// task.
    #[cfg(test)]
    pub fn enter(&self, pid: Pid) {
        self.enter_placed(pid, Placement::root(pid, None, ActorScope::Any));
    }

    /// Gives an accepted task its (empty) mailbox, placed as `placement` says.
    pub fn enter_placed(&self, pid: Pid, placement: Placement) {
        let lineage = placement.parent.map(|parent| {
            // The parent's lineage, if this host holds the parent: it does for a child spawned
            // here, not for a task run again after a crash or claimed from a shared queue.
            let up = self
                .shard(parent)
                .get(&parent)
                .map(|actor| actor.lineage.clone());
            Arc::new(match up {
                Some(up) => Lineage::child_of(parent, up.as_deref(), true),
                None => Lineage::child_of(parent, None, false),
            })
        });
        self.shard(pid).entry(pid).or_insert_with(|| {
            Actor::new(placement.root, lineage, placement.scope, placement.bound)
        });
    }

    /// How far a live task's actor calls reach (its scope, and the task whose subtree bounds
    /// them, if any), and its ancestors as this host knows them.
    pub fn reach(&self, pid: Pid) -> Option<(ActorScope, Option<Pid>, Option<Arc<Lineage>>)> {
        self.shard(pid)
            .get(&pid)
            .map(|actor| (actor.scope, actor.bound, actor.lineage.clone()))
    }

    /// Charges a spawn by `parent` to its tree: the root it is charged to, or why the tree
    /// has no room for it. A child that then does not count among the tree's live tasks here
    /// (it was not recorded, or waits in a cluster's shared queue) is given back with
    /// [`Actors::release_spawn`].
    pub fn charge_spawn(&self, parent: Pid) -> Result<Pid, SpawnRefusal> {
        let root = self
            .shard(parent)
            .get(&parent)
            .map_or(parent, |actor| actor.root);
        self.trees.charge(root).map(|()| root)
    }

    /// Takes back a spawn charged to `root` that holds no place in its tree.
    pub fn release_spawn(&self, root: Pid) {
        let root_live = self.holds(root);
        self.trees.release(root, root_live);
    }

    /// Puts a message into `to`'s mailbox, and calls `put` while nobody can take it yet (so
    /// an event it publishes comes before anything the message leads to). `Ok(true)`: the
    /// receiver waits in `receive` and must be woken.
    pub fn put(
        &self,
        to: Pid,
        sender: Option<Pid>,
        body: String,
        put: impl FnOnce(),
    ) -> Result<bool, PutError> {
        let entry = Entry::Message {
            sender,
            body,
            reply_to: None,
        };
        self.put_entry(to, entry, put)
    }

    /// Puts the message `entry` into `to`'s mailbox, as [`Actors::put`] says. Calls the task
    /// took and has not answered count as messages it holds.
    fn put_entry(&self, to: Pid, entry: Entry, put: impl FnOnce()) -> Result<bool, PutError> {
        let mut shard = self.shard(to);
        let actor = shard.get_mut(&to).ok_or(PutError::NotLive)?;
        let bytes = entry.bytes();
        if actor.messages + actor.open_calls() >= self.limits.max_messages {
            actor.forget_abandoned_calls();
        }
        if actor.messages + actor.open_calls() >= self.limits.max_messages
            || actor.bytes + bytes > self.limits.max_mailbox_bytes
            || !self.take_bytes(bytes)
        {
            return Err(PutError::Full);
        }
        actor.messages += 1;
        actor.bytes += bytes;
        actor.mailbox.push_back(entry);
        put();
        Ok(std::mem::take(&mut actor.waiting))
    }

    /// Counts `bytes` more in every mailbox together, if they fit.
    fn take_bytes(&self, bytes: usize) -> bool {
        self.total_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                (total + bytes <= self.limits.max_mailboxes_bytes).then_some(total + bytes)
            })
            .is_ok()
    }

    /// Puts a notice into `to`'s mailbox, past the bound: one a task's end sends to those that
    /// watch it. `Some(true)`: it must be woken; `None`: it is not live.
    pub fn notify(&self, to: Pid, entry: Entry) -> Option<bool> {
        self.shard(to)
            .get_mut(&to)
            .map(|actor| actor.notify(entry, &self.total_bytes))
    }

    /// Puts a notice into `to`'s mailbox within its bound, as a message: one `to` asked for
    /// itself (a monitor or a link of a task that has ended), which it may ask for without end.
    /// `Ok(true)`: it must be woken.
    pub fn notify_within(&self, to: Pid, entry: Entry) -> Result<bool, PutError> {
        let mut shard = self.shard(to);
        let actor = shard.get_mut(&to).ok_or(PutError::NotLive)?;
        let bytes = entry.bytes();
        // Within every mailbox's bound too; `notify` counts its bytes in the total.
        if actor.mailbox.len() >= self.limits.max_messages
            || actor.bytes + bytes > self.limits.max_mailbox_bytes
            || self.total_bytes.load(Ordering::Acquire) + bytes > self.limits.max_mailboxes_bytes
        {
            return Err(PutError::Full);
        }
        Ok(actor.notify(entry, &self.total_bytes))
    }

    /// Takes the oldest entry of `pid`'s mailbox. When there is none and `wait` is set, the
    /// task is marked as waiting, so that the next put says to wake it.
    pub fn take(&self, pid: Pid, wait: bool) -> Option<Entry> {
        let mut shard = self.shard(pid);
        let actor = shard.get_mut(&pid)?;
        let mut entry = actor.mailbox.pop_front();
        match &mut entry {
            Some(taken) => {
                actor.open_call(taken);
                if let Entry::Message { .. } = taken {
                    actor.messages -= 1;
                }
                let bytes = taken.bytes();
                actor.bytes -= bytes;
                self.total_bytes.fetch_sub(bytes, Ordering::AcqRel);
                actor.waiting = false;
            }
            None => actor.waiting = wait,
        }
        entry
    }

    /// Adds a monitor of `target` held by `watcher`, once however often it asks: one `down`
    /// when it ends. `Ok(true)`: `target` is live and will send its `down` when it ends;
    /// `Ok(false)`: it is not, and the caller sends the notice now.
    pub fn monitor(&self, watcher: Pid, target: Pid) -> Result<bool, WatchError> {
        {
            let mut shard = self.shard(watcher);
            let actor = shard.get_mut(&watcher).ok_or(WatchError::BadPid)?;
            if actor.monitoring.contains(&target) {
                return Ok(true);
            }
            if actor.watches() >= self.limits.max_watches {
                return Err(WatchError::TooMany);
            }
            actor.monitoring.push(target);
        }
        let live = match self.shard(target).get_mut(&target) {
            Some(actor) => {
                if !actor.watchers.contains(&watcher) {
                    actor.watchers.push(watcher);
                }
                true
            }
            None => false,
        };
        if !live && let Some(actor) = self.shard(watcher).get_mut(&watcher) {
            forget_one(&mut actor.monitoring, target);
        }
        Ok(live)
    }

    /// Links `pid` and `target` both ways. `Ok(true)`: linked; `Ok(false)`: `target` is not
    /// live, and the caller acts on how it ended.
    pub fn link(&self, pid: Pid, target: Pid) -> Result<bool, WatchError> {
        if pid == target {
            return Ok(true);
        }
        {
            let mut shard = self.shard(pid);
            let actor = shard.get_mut(&pid).ok_or(WatchError::BadPid)?;
            if actor.links.contains(&target) {
                return Ok(true);
            }
            if actor.watches() >= self.limits.max_watches {
                return Err(WatchError::TooMany);
            }
            actor.links.push(target);
        }
        let live = match self.shard(target).get_mut(&target) {
            Some(actor) => {
                if !actor.links.contains(&pid) {
                    actor.links.push(pid);
                }
                true
            }
            None => false,
        };
        if !live && let Some(actor) = self.shard(pid).get_mut(&pid) {
            actor.links.retain(|linked| *linked != target);
        }
        Ok(live)
    }

    /// Links `pid` to `target`, a task another host of the cluster holds: only `pid`'s side is
    /// here, so that `pid`'s abnormal end is sent there.
    pub fn link_remote(&self, pid: Pid, target: Pid) -> Result<(), WatchError> {
        let mut shard = self.shard(pid);
        let actor = shard.get_mut(&pid).ok_or(WatchError::BadPid)?;
        if actor.links.contains(&target) {
            return Ok(());
        }
        if actor.watches() >= self.limits.max_watches {
            return Err(WatchError::TooMany);
        }
        actor.links.push(target);
        Ok(())
    }

    /// Whether `pid` traps exits; `None` if it is not a live task here.
    pub fn traps_exits(&self, pid: Pid) -> Option<bool> {
        self.shard(pid).get(&pid).map(|actor| actor.trap_exits)
    }

    /// Whether `pid`, live here, is linked to `other`.
    pub fn linked(&self, pid: Pid, other: Pid) -> bool {
        self.shard(pid)
            .get(&pid)
            .is_some_and(|actor| actor.links.contains(&other))
    }

    /// Forgets the name `pid` holds, if any: a name the cluster gave to another task first.
    pub fn unregister(&self, pid: Pid) {
        let name = self
            .shard(pid)
            .get_mut(&pid)
            .and_then(|actor| actor.name.take());
        if let Some(name) = name {
            let mut names = lock(&self.names);
            if names.get(&name) == Some(&pid) {
                names.remove(&name);
            }
        }
    }

    /// Removes a link both ways, if there was one.
    pub fn unlink(&self, pid: Pid, target: Pid) {
        for (one, other) in [(pid, target), (target, pid)] {
            if let Some(actor) = self.shard(one).get_mut(&one) {
                actor.links.retain(|linked| *linked != other);
            }
        }
    }

    /// Whether `pid` takes abnormal ends of linked tasks as notices.
    pub fn set_trap_exits(&self, pid: Pid, on: bool) {
        if let Some(actor) = self.shard(pid).get_mut(&pid) {
            actor.trap_exits = on;
        }
    }

    /// Registers `name` for `pid` until it ends.
    pub fn register(&self, pid: Pid, name: &str) -> Result<(), NameError> {
        if !valid_name(name) {
            return Err(NameError::Invalid);
        }
        let mut names = lock(&self.names);
        if names.contains_key(name) {
            return Err(NameError::Taken);
        }
        let mut shard = self.shard(pid);
        let actor = shard.get_mut(&pid).ok_or(NameError::Invalid)?;
        if actor.name.is_some() {
            return Err(NameError::AlreadyNamed);
        }
        let name: Arc<str> = name.into();
        actor.name = Some(Arc::clone(&name));
        names.insert(name, pid);
        Ok(())
    }

    /// The live task holding `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        lock(&self.names).get(name).copied()
    }

    /// Every registered name and its task, sorted by name.
    pub fn names(&self) -> Vec<(Arc<str>, Pid)> {
        let mut names: Vec<_> = lock(&self.names)
            .iter()
            .map(|(name, pid)| (Arc::clone(name), *pid))
            .collect();
        names.sort();
        names
    }

    /// Whether `pid` is a live task of this host.
    pub fn holds(&self, pid: Pid) -> bool {
        self.shard(pid).contains_key(&pid)
    }

    /// What a live task's record shows of it as an actor.
    pub fn info(&self, pid: Pid) -> Option<ActorState> {
        self.shard(pid).get(&pid).map(|actor| ActorState {
            mailbox: actor.mailbox.len(),
            links: actor.links.clone(),
            monitors: actor.monitoring.len(),
            name: actor.name.as_deref().map(str::to_owned),
            trap_exits: actor.trap_exits,
        })
    }

    /// The tasks `pid` monitors, still live as far as it knows.
    #[cfg(test)]
    pub fn monitoring(&self, pid: Pid) -> Vec<Pid> {
        self.shard(pid)
            .get(&pid)
            .map(|actor| actor.monitoring.clone())
            .unwrap_or_default()
    }

    /// How `pid` ended, if it ended recently enough to be remembered here.
    pub fn recent_end(&self, pid: Pid) -> Option<Arc<EndNotice>> {
        self.recent(pid).ends.get(&pid).cloned()
    }

    /// What every mailbox holds, in bytes.
    pub fn mailboxes_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Removes task `pid`'s entry as it leaves this host: what its mailbox held given back to
    /// the total, its place in its tree and its name freed. The entry, to settle the rest.
    fn leave(&self, pid: Pid) -> Option<Actor> {
        let actor = self.shard(pid).remove(&pid)?;
        self.total_bytes.fetch_sub(actor.bytes, Ordering::AcqRel);
        if actor.root != pid {
            let root_live = self.holds(actor.root);
            self.trees.release(actor.root, root_live);
        } else {
            self.trees.root_ended(pid);
        }
        if let Some(name) = &actor.name {
            let mut names = lock(&self.names);
            if names.get(name) == Some(&pid) {
                names.remove(name);
            }
        }
        Some(actor)
    }

    /// Forgets a task that ends, and tells its monitors and linked tasks: each monitor gets
    /// its `down`; each linked task either gets a `linked-exit` notice (it traps exits) or is
    /// to be killed (abnormal ends only). `told` is called for each notice while its receiver
    /// cannot take it yet. Returns what the caller must do next.
    pub fn ended(&self, pid: Pid, end: &TaskEnd, mut told: impl FnMut(Told)) -> Aftermath {
        let Some(mut actor) = self.leave(pid) else {
            return Aftermath::default();
        };
        let notice = Arc::new(EndNotice::of(pid, end));
        {
            let mut recent = self.recent(pid);
            if recent.order.len() >= RECENT_ENDS / SHARDS
                && let Some(oldest) = recent.order.pop_front()
            {
                recent.ends.remove(&oldest);
            }
            recent.order.push_back(pid);
            recent.ends.insert(pid, Arc::clone(&notice));
        }
        let mut aftermath = Aftermath {
            wake: self.end_calls(&mut actor, &notice),
            ..Aftermath::default()
        };
        for watcher in actor.watchers {
            let mut shard = self.shard(watcher);
            if let Some(watching) = shard.get_mut(&watcher) {
                forget_one(&mut watching.monitoring, pid);
                if watching.notify(Entry::Down(Arc::clone(&notice)), &self.total_bytes) {
                    aftermath.wake.push(watcher);
                }
                told(Told::Down { watcher });
            }
        }
        // The monitors this task held die with it: their targets forget it, so a long-lived
        // task watched by many short-lived ones does not keep a list of the dead.
        for target in actor.monitoring {
            if let Some(watched) = self.shard(target).get_mut(&target) {
                forget_one(&mut watched.watchers, pid);
            }
        }
        let abnormal = notice.is_abnormal();
        for linked in actor.links {
            let mut shard = self.shard(linked);
            let Some(peer) = shard.get_mut(&linked) else {
                // Not here: another host's (a link across hosts), or ended meanwhile.
                if abnormal {
                    aftermath.remote.push(linked);
                }
                continue;
            };
            peer.links.retain(|other| *other != pid);
            if !abnormal {
                continue;
            }
            if peer.trap_exits {
                if peer.notify(Entry::LinkedExit(Arc::clone(&notice)), &self.total_bytes) {
                    aftermath.wake.push(linked);
                }
                told(Told::Trapped { linked });
            } else {
                aftermath.kill.push(linked);
            }
        }
        aftermath.notice = Some(notice);
        aftermath
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Actors with small bounds, `max_messages` messages a mailbox.
    pub(super) fn actors(max_messages: usize) -> Actors {
        Actors::new(ActorLimits {
            max_messages,
            max_message_bytes: 1024,
            max_mailbox_bytes: 4096,
            max_mailboxes_bytes: 6144,
            max_watches: 4,
            max_descendants: 4,
            max_spawns_per_sec: 1,
        })
    }

    fn message(body: &str) -> Entry {
        Entry::Message {
            sender: None,
            body: body.into(),
            reply_to: None,
        }
    }

    #[test]
    fn a_mailbox_is_first_in_first_out_and_bounded_but_notices_always_fit() {
        let actors = actors(2);
        let pid = Pid::new(1, 1);
        actors.enter(pid);
        assert_eq!(actors.put(pid, None, "a".into(), || {}), Ok(false));
        assert_eq!(actors.put(pid, None, "b".into(), || {}), Ok(false));
        assert_eq!(
            actors.put(pid, None, "c".into(), || {}),
            Err(PutError::Full)
        );
        let notice = Arc::new(EndNotice::unknown(Pid::new(1, 9)));
        let down = Entry::Down(Arc::clone(&notice));
        assert_eq!(actors.notify(pid, Entry::Down(notice)), Some(false));
        assert_eq!(actors.take(pid, true), Some(message("a")));
        assert_eq!(actors.put(pid, None, "c".into(), || {}), Ok(false));
        assert_eq!(actors.take(pid, true), Some(message("b")));
        assert_eq!(actors.take(pid, true), Some(down));
        assert_eq!(actors.take(pid, true), Some(message("c")));
        assert_eq!(actors.take(pid, true), None);
        assert_eq!(
            actors.put(Pid::new(1, 2), None, "x".into(), || {}),
            Err(PutError::NotLive)
        );
    }

    #[test]
    fn a_put_wakes_a_waiting_receiver_once() {
        let actors = actors(8);
        let pid = Pid::new(1, 1);
        actors.enter(pid);
        assert_eq!(actors.take(pid, true), None);
        assert_eq!(actors.put(pid, None, "a".into(), || {}), Ok(true));
        assert_eq!(actors.put(pid, None, "b".into(), || {}), Ok(false));
        assert_eq!(actors.take(pid, false), Some(message("a")));
    }

    #[test]
    fn an_end_downs_each_monitor_once_and_kills_or_notifies_links() {
        let actors = actors(8);
        let (dying, watcher, linked, trapping) = (
            Pid::new(1, 1),
            Pid::new(1, 2),
            Pid::new(1, 3),
            Pid::new(1, 4),
        );
        for pid in [dying, watcher, linked, trapping] {
            actors.enter(pid);
        }
        assert_eq!(actors.monitor(watcher, dying), Ok(true));
        assert_eq!(actors.link(linked, dying), Ok(true));
        assert_eq!(actors.link(trapping, dying), Ok(true));
        actors.set_trap_exits(trapping, true);
        assert_eq!(actors.take(watcher, true), None);
        let mut told = Vec::new();
        let aftermath = actors.ended(dying, &TaskEnd::guest_error("boom".into()), |t| {
            told.push(t)
        });
        assert_eq!(aftermath.wake, vec![watcher]);
        assert_eq!(aftermath.kill, vec![linked]);
        assert_eq!(
            told,
            [Told::Down { watcher }, Told::Trapped { linked: trapping }]
        );
        assert!(matches!(actors.take(watcher, false), Some(Entry::Down(n)) if n.pid == dying));
        assert_eq!(actors.take(watcher, false), None);
        assert!(matches!(
            actors.take(trapping, false),
            Some(Entry::LinkedExit(_))
        ));
        assert_eq!(actors.info(linked).map(|info| info.links), Some(vec![]));
        assert_eq!(actors.monitor(watcher, dying), Ok(false));
        assert!(actors.recent_end(dying).is_some_and(|n| n.is_abnormal()));
        // Ending twice tells nobody twice.
        assert!(
            actors
                .ended(dying, &TaskEnd::killed(), drop)
                .kill
                .is_empty()
        );
    }

    #[test]
    fn a_normal_end_does_not_propagate_through_links() {
        let actors = actors(8);
        let (a, b) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(a);
        actors.enter(b);
        assert_eq!(actors.link(a, b), Ok(true));
        let mut told = Vec::new();
        let aftermath = actors.ended(a, &TaskEnd::exited(0), |t| told.push(t));
        assert!(aftermath.kill.is_empty() && told.is_empty());
        assert!(actors.ended(b, &TaskEnd::exited(3), drop).kill.is_empty());
    }

    #[test]
    fn names_are_unique_valid_and_released_at_the_end() {
        let actors = actors(8);
        let (a, b) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(a);
        actors.enter(b);
        assert_eq!(actors.register(a, "bad name"), Err(NameError::Invalid));
        assert_eq!(actors.register(a, "cache"), Ok(()));
        assert_eq!(actors.register(a, "other"), Err(NameError::AlreadyNamed));
        assert_eq!(actors.register(b, "cache"), Err(NameError::Taken));
        assert_eq!(actors.whereis("cache"), Some(a));
        actors.ended(a, &TaskEnd::exited(0), drop);
        assert_eq!(actors.whereis("cache"), None);
        assert_eq!(actors.register(b, "cache"), Ok(()));
    }

    #[test]
    fn a_watcher_monitors_once_and_is_forgotten_when_it_ends_first() {
        let actors = actors(8);
        let (server, client) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(server);
        actors.enter(client);
        for _ in 0..10 {
            assert_eq!(actors.monitor(client, server), Ok(true));
        }
        assert_eq!(actors.info(client).map(|info| info.monitors), Some(1));
        let watchers =
            |actors: &Actors| actors.shard(server).get(&server).map(|a| a.watchers.len());
        assert_eq!(watchers(&actors), Some(1));
        actors.ended(client, &TaskEnd::exited(0), drop);
        assert_eq!(watchers(&actors), Some(0));
    }

    #[test]
    fn mailboxes_are_bounded_in_bytes_each_and_together() {
        // 4,096 bytes a mailbox, 6,144 in all; each entry costs 64 bytes beyond its text.
        let actors = actors(100);
        let (a, b) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(a);
        actors.enter(b);
        let big = "x".repeat(1000);
        for _ in 0..3 {
            assert_eq!(actors.put(a, None, big.clone(), || {}), Ok(false));
        }
        assert_eq!(
            actors.put(a, None, big.clone(), || {}),
            Err(PutError::Full),
            "a's bytes"
        );
        assert_eq!(actors.put(b, None, big.clone(), || {}), Ok(false));
        assert_eq!(actors.put(b, None, big.clone(), || {}), Ok(false));
        assert_eq!(
            actors.put(b, None, big.clone(), || {}),
            Err(PutError::Full),
            "every mailbox's bytes"
        );
        assert_eq!(actors.mailboxes_bytes(), 5 * 1064);
        actors.take(a, false);
        assert_eq!(actors.put(b, None, big.clone(), || {}), Ok(false));
        // An end gives back what its mailbox held.
        actors.ended(b, &TaskEnd::exited(0), drop);
        assert_eq!(actors.mailboxes_bytes(), 2 * 1064);
    }

    #[test]
    fn a_notice_a_task_asks_for_itself_is_bounded_like_a_message() {
        let actors = actors(2);
        let pid = Pid::new(1, 1);
        actors.enter(pid);
        let down = || Entry::Down(Arc::new(EndNotice::unknown(Pid::new(1, 9))));
        assert_eq!(actors.notify_within(pid, down()), Ok(false));
        assert_eq!(actors.notify_within(pid, down()), Ok(false));
        assert_eq!(actors.notify_within(pid, down()), Err(PutError::Full));
        assert_eq!(
            actors.notify(pid, down()),
            Some(false),
            "an end's always fits"
        );
    }

    #[test]
    fn a_tree_is_charged_for_its_descendants_until_they_end() {
        let actors = actors(8);
        let root = Pid::new(1, 1);
        actors.enter(root);
        let charged = actors.charge_spawn(root);
        assert_eq!(charged, Ok(root));
        let child = Pid::new(1, 2);
        let placed = |parent| Placement {
            parent: Some(parent),
            root,
            scope: ActorScope::Any,
            bound: None,
        };
        actors.enter_placed(child, placed(root));
        // The child's own spawns go to the root's tree: one a second, a burst of four.
        let mut spawned = vec![child];
        for seq in 3..6 {
            assert_eq!(actors.charge_spawn(child), Ok(root));
            let grandchild = Pid::new(1, seq);
            actors.enter_placed(grandchild, placed(child));
            spawned.push(grandchild);
        }
        assert_eq!(
            actors.charge_spawn(child),
            Err(SpawnRefusal::Descendants),
            "four live descendants"
        );
        // An end gives its place back, but the burst is spent.
        actors.ended(spawned[3], &TaskEnd::exited(0), drop);
        assert_eq!(actors.charge_spawn(root), Err(SpawnRefusal::Rate));
        // Another tree has its own budget.
        let other = Pid::new(1, 50);
        actors.enter(other);
        assert_eq!(actors.charge_spawn(other), Ok(other));
        // A spawn that took no place here (it failed, or waits in a shared queue) is given
        // back.
        actors.release_spawn(other);
        assert_eq!(actors.trees.live(other), Some(0));
    }

    #[test]
    fn watches_are_bounded() {
        let actors = actors(8);
        let watcher = Pid::new(1, 100);
        actors.enter(watcher);
        for seq in 0..4 {
            let target = Pid::new(1, seq);
            actors.enter(target);
            assert_eq!(actors.monitor(watcher, target), Ok(true));
        }
        actors.enter(Pid::new(1, 50));
        assert_eq!(
            actors.monitor(watcher, Pid::new(1, 50)),
            Err(WatchError::TooMany)
        );
    }
}
