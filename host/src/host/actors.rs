//! What tasks ask of the host as actors, and what HTTP clients ask of tasks as actors: sending
//! to a mailbox, spawning a child, monitoring, linking, killing, and names. The bookkeeping is
//! [`Actors`](crate::actor::Actors)'; this is where it meets the scheduler (wake-ups, kills),
//! the store (how an ended task ended) and the event stream.

use std::sync::Arc;
use std::time::Duration;

use super::cluster::Watch;
use super::{Host, KillError, SpawnError};
use crate::actor::{
    Answer, Caller, ChildError, ChildRequest, EndNotice, Entry, Kernel, NameError, PutError,
    ReplyError, SendError, WatchError,
};
use crate::model::{MAX_TASK_NAME_BYTES, NewTask, Pid, TaskEnd, TaskRecord};
use crate::store::{Change, Forward, StoreError};

/// Why a pid or name given by a client or a task names no task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("{0:?} is not a pid (pids look like 6f1c2a9e-1f, names like name:cache)")]
    NotAPid(String),
    #[error("no live task holds the name {0:?}")]
    NoSuchName(String),
}

impl Host {
    /// The pid `target` stands for: a pid, or `name:<name>` for the live task holding it. A
    /// name another host of the cluster may hold is looked up in the store, awaited without
    /// holding the thread.
    pub async fn resolve_async(&self, target: &str) -> Result<Pid, Unresolved> {
        let Some(name) = target.strip_prefix("name:") else {
            return target
                .parse()
                .map_err(|()| Unresolved::NotAPid(target.to_owned()));
        };
        self.whereis_name(name)
            .await
            .ok_or_else(|| Unresolved::NoSuchName(name.to_owned()))
    }

    /// Puts a message into `to`'s mailbox from an HTTP client, and wakes `to` if it waits in
    /// `receive`. Never drops: a full mailbox refuses. A message for a task another host of
    /// the cluster holds is handed to the store, and its answer awaited, without holding the
    /// thread.
    pub async fn send_async(&self, to: Pid, body: String) -> Result<(), SendError> {
        let sent = self.deliver(None, to, body).await;
        self.counted(false, sent)
    }

    /// Puts a message into `to`'s mailbox, from task `sender` or (none) from an HTTP client:
    /// here, or in a cluster, when another host holds `to` (or it waits in the shared queue),
    /// handed to the store for that host, and answered once the store has it. The store keeps
    /// the mailbox's bound for it (as many messages again may wait there), so that a full one
    /// is refused here as it would be there.
    async fn deliver(&self, sender: Option<Pid>, to: Pid, body: String) -> Result<(), SendError> {
        let bytes = self.sized(&body)?;
        if let Some(cluster) = self.forwards_to(to)
            && matches!(cluster.store.holder_async(to).await, Ok(Some(_)))
        {
            // Another host holds it, or it waits in the shared queue: the store hands the
            // message to that host, or to whichever claims it. Its event is published there.
            return match self.written(forwarded_message(to, sender, body)).await {
                Err(StoreError::NotDelivered) => {
                    Err(undelivered(cluster.store.holder_async(to).await))
                }
                written => written.map_err(|_| SendError::Unavailable),
            };
        }
        match self.put_local(sender, to, body, bytes) {
            Some(sent) => sent,
            None => Err(not_live(self.end_of_async(to).await)),
        }
    }

    /// Puts a message of `bytes` into `to`'s mailbox on this host: its answer, or none when
    /// `to` has no mailbox here (whether it ended or never was, the store says).
    fn put_local(
        &self,
        sender: Option<Pid>,
        to: Pid,
        body: String,
        bytes: usize,
    ) -> Option<Result<(), SendError>> {
        match self.put_here(sender, to, body, None, bytes) {
            Ok(()) => Some(Ok(())),
            Err(PutError::Full) => Some(Err(SendError::MailboxFull)),
            Err(PutError::NotLive) => None,
        }
    }

    /// Counts a message sent, by its sender (a task or an HTTP client) and its result.
    fn counted(&self, from_task: bool, sent: Result<(), SendError>) -> Result<(), SendError> {
        let result = match sent {
            Ok(()) => "delivered",
            Err(error) => super::calls::send_result(error),
        };
        self.metrics().message(from_task, result);
        sent
    }

    /// Puts a message the store carried from another host into `to`'s mailbox here: never
    /// forwarded again. On the cluster's own thread, which may wait for the store.
    pub(super) fn put_carried(
        &self,
        sender: Option<Pid>,
        to: Pid,
        body: String,
    ) -> Result<(), SendError> {
        let bytes = self.sized(&body)?;
        match self.put_here(sender, to, body, None, bytes) {
            Ok(()) => Ok(()),
            Err(PutError::Full) => Err(SendError::MailboxFull),
            Err(PutError::NotLive) => Err(not_live(self.end_of(to))),
        }
    }

    /// The bytes of a message's `body`, or why it is refused (larger than a message may be).
    pub(super) fn sized(&self, body: &str) -> Result<usize, SendError> {
        if body.len() > self.actors.limits().max_message_bytes {
            return Err(SendError::TooLarge);
        }
        Ok(body.len())
    }

    /// The cluster, if `to` may be held by another of its hosts: it is not held here.
    pub(super) fn forwards_to(&self, to: Pid) -> Option<&super::cluster::Cluster> {
        self.cluster.as_deref().filter(|_| !self.actors.holds(to))
    }

    /// Puts a message of `bytes` into `to`'s mailbox on this host (a call, when `caller` waits
    /// for its answer), and wakes `to` if it waits for one.
    pub(super) fn put_here(
        &self,
        sender: Option<Pid>,
        to: Pid,
        body: String,
        caller: Option<Caller>,
        bytes: usize,
    ) -> Result<(), PutError> {
        let published = || self.events.message(to, sender, bytes);
        let wake = match caller {
            None => self.actors.put(to, sender, body, published),
            Some(caller) => self.actors.put_call(to, sender, body, caller, published),
        }?;
        if wake {
            self.scheduler.wake(to);
        }
        Ok(())
    }

    /// How `pid`, which has no mailbox, ended: from memory if it ended lately, else from the
    /// store; unknown if neither knows it.
    pub(super) fn end_of(&self, pid: Pid) -> Result<Arc<EndNotice>, StoreError> {
        if let Some(notice) = self.actors.recent_end(pid) {
            return Ok(notice);
        }
        Ok(Arc::new(end_notice(pid, self.store.get(pid)?)))
    }

    /// [`Host::end_of`] for an HTTP handler: the store is awaited, holding no thread.
    pub(super) async fn end_of_async(&self, pid: Pid) -> Result<Arc<EndNotice>, StoreError> {
        if let Some(notice) = self.actors.recent_end(pid) {
            return Ok(notice);
        }
        Ok(Arc::new(end_notice(pid, self.store.get_async(pid).await?)))
    }

    /// `record` with its live actor state, while it has one.
    pub(super) fn with_actor(&self, mut record: TaskRecord) -> TaskRecord {
        if !record.status.is_terminal() {
            record.actor = self.actors.info(record.pid).map(Box::new);
        }
        record
    }

    /// Every registered name and the live task holding it, by name: in a cluster, every
    /// host's, read from the store without holding the thread.
    pub async fn names(&self) -> Vec<(Arc<str>, Pid)> {
        if let Some(cluster) = &self.cluster {
            match cluster.store.names().await {
                Ok(names) => {
                    return names
                        .into_iter()
                        .map(|(name, pid)| (name.into(), pid))
                        .collect();
                }
                Err(error) => tracing::warn!(%error, "reading the cluster's names failed"),
            }
        }
        self.actors.names()
    }

    /// The live task holding `name`: here, or in a cluster on any host (awaited).
    async fn whereis_name(&self, name: &str) -> Option<Pid> {
        if let Some(pid) = self.actors.whereis(name) {
            return Some(pid);
        }
        let cluster = self.cluster.as_ref()?;
        cluster.store.whereis_async(name).await.ok().flatten()
    }

    /// Tells `watcher` at once how `target`, which has no mailbox, ended (as `end` says). A
    /// notice it asked for itself (`within`) counts against its mailbox's bound (`too_many`
    /// when it has no room); the `down` of a child it spawned does not.
    fn down_now(
        &self,
        watcher: Pid,
        target: Pid,
        end: Result<Arc<EndNotice>, StoreError>,
        within: bool,
    ) -> Result<(), WatchError> {
        let notice = end.unwrap_or_else(|_| Arc::new(EndNotice::unknown(target)));
        let outcome = notice.outcome_str();
        let entry = Entry::Down(notice);
        let put = if within {
            self.actors.notify_within(watcher, entry)
        } else {
            self.actors.notify(watcher, entry).ok_or(PutError::NotLive)
        };
        match put {
            Ok(wake) => {
                self.events.down(watcher, target, outcome);
                if wake {
                    self.scheduler.wake(watcher);
                }
                Ok(())
            }
            Err(PutError::Full) => Err(WatchError::TooMany),
            Err(PutError::NotLive) => Err(WatchError::BadPid),
        }
    }

    /// Acts on a link to `target`, which has no mailbox and ended as `end` says: as if it had
    /// been linked before it ended abnormally (a notice, or `pid` killed); nothing for a
    /// normal end. The notice counts against the mailbox's bound as in [`Host::down_now`],
    /// when `within`.
    fn linked_to_ended(
        &self,
        pid: Pid,
        target: Pid,
        end: Result<Arc<EndNotice>, StoreError>,
        within: bool,
    ) -> Result<(), WatchError> {
        let notice = end.unwrap_or_else(|_| Arc::new(EndNotice::unknown(target)));
        if !notice.is_abnormal() {
            return Ok(());
        }
        let trapping = self.actors.info(pid).is_some_and(|info| info.trap_exits);
        if !trapping {
            self.events
                .linked_exit(pid, target, notice.outcome_str(), trapping);
            self.scheduler
                .end(pid, TaskEnd::linked_exit(target, &notice.describe()));
            return Ok(());
        }
        let outcome = notice.outcome_str();
        let entry = Entry::LinkedExit(notice);
        let put = if within {
            self.actors.notify_within(pid, entry)
        } else {
            self.actors.notify(pid, entry).ok_or(PutError::NotLive)
        };
        match put {
            Ok(wake) => {
                self.events.linked_exit(pid, target, outcome, trapping);
                if wake {
                    self.scheduler.wake(pid);
                }
                Ok(())
            }
            Err(PutError::Full) => Err(WatchError::TooMany),
            Err(PutError::NotLive) => Err(WatchError::BadPid),
        }
    }

    /// Checks and accepts a child of `parent`, charged to its tree: its pid, and whether it
    /// runs here (else it waits in the cluster's shared queue, watched as another host's task
    /// as `child` asks).
    fn accept_child(&self, parent: Pid, child: ChildRequest) -> Result<(Pid, bool), ChildError> {
        let refused = |why: &str| ChildError::Refused(why.to_owned());
        if child.name.trim().is_empty() {
            return Err(refused("the child's name must not be empty"));
        }
        if child.name.contains('\0') {
            return Err(refused("the child's name must not contain NUL characters"));
        }
        if child.name.len() > MAX_TASK_NAME_BYTES {
            return Err(ChildError::Refused(format!(
                "the child's name must be at most {MAX_TASK_NAME_BYTES} bytes"
            )));
        }
        if let Some(payload) = &child.payload {
            if payload.len() > self.max_child_payload_bytes {
                return Err(ChildError::Refused(format!(
                    "the child's payload must be at most {} bytes, as a request's body",
                    self.max_child_payload_bytes
                )));
            }
            if serde_json::from_str::<serde::de::IgnoredAny>(payload).is_err() {
                return Err(refused("the child's payload must be JSON text"));
            }
        }
        // Charged to the parent's tree before anything is recorded: a guest that spawns past
        // its tree's share is told `full`.
        let root = self.actors.charge_spawn(parent).map_err(|refusal| {
            self.metrics().spawn_refused(refusal.as_str());
            ChildError::Full
        })?;
        let task = NewTask {
            name: child.name,
            worker: child.worker,
            duration: child.duration_secs,
            payload: child.payload,
            ..NewTask::default()
        };
        // Not waited for: the child starts once its acceptance is recorded, and a crash
        // before that loses the child with its parent's step, which runs again.
        let accepting = self
            .accept(task, None, Some((parent, root)))
            .map_err(|error| {
                self.actors.release_spawn(root);
                match error {
                    SpawnError::Full { .. } => ChildError::Full,
                    SpawnError::ShuttingDown => ChildError::ShuttingDown,
                    SpawnError::UnknownWorker(unknown) => ChildError::UnknownWorker(unknown.name),
                    other => ChildError::Refused(other.to_string()),
                }
            })?;
        let pid = accepting.pid;
        if accepting.shared {
            // It holds no place in its tree here: another host runs it.
            self.actors.release_spawn(root);
            // It waits in the cluster's shared queue, its acceptance perhaps not yet written:
            // watched as a task of another host, which it will be.
            if child.link {
                let _ = self.watch_queued(parent, pid, Watch::Link);
            }
            if child.monitor {
                let _ = self.watch_queued(parent, pid, Watch::Monitor);
            }
            return Ok((pid, false));
        }
        Ok((pid, true))
    }
}

impl Kernel for Host {
    fn send(&self, from: Pid, to: String, body: String) -> Answer<'_, Result<(), SendError>> {
        // The common case needs no store: a pid reached without a walk, on a host alone or
        // held by this one.
        if let Ok(pid) = to.parse::<Pid>()
            && self.reaches_at_once(from, pid) == Some(true)
            && (self.cluster.is_none() || self.actors.holds(pid))
        {
            let put = self
                .sized(&body)
                .map(|bytes| self.put_local(Some(from), pid, body, bytes));
            return match put {
                Ok(Some(sent)) => Answer::Now(self.counted(true, sent)),
                Err(too_large) => Answer::Now(self.counted(true, Err(too_large))),
                Ok(None) => Answer::later(async move {
                    let sent = Err(not_live(self.end_of_async(pid).await));
                    self.counted(true, sent)
                }),
            };
        }
        Answer::later(async move {
            let to = self.resolve_async(&to).await.map_err(unreached)?;
            if !self.reaches(from, to).await {
                return Err(SendError::NoSuchProcess);
            }
            let sent = self.deliver(Some(from), to, body).await;
            self.counted(true, sent)
        })
    }

    fn spawn(&self, parent: Pid, child: ChildRequest) -> Answer<'_, Result<Pid, ChildError>> {
        let (link, monitor) = (child.link, child.monitor);
        let pid = match self.accept_child(parent, child) {
            Ok((pid, true)) => pid,
            // Another host runs it: watched from here as such.
            Ok((pid, false)) => return Answer::Now(Ok(pid)),
            Err(refused) => return Answer::Now(Err(refused)),
        };
        // Too many: the child runs unlinked, and the parent is told by the error.
        let linked = !link || self.actors.link(parent, pid) != Ok(false);
        let monitored = !monitor || self.actors.monitor(parent, pid) != Ok(false);
        if linked && monitored {
            return Answer::Now(Ok(pid));
        }
        // No longer live here (it ended at once, or another host took it): the store says.
        Answer::later(async move {
            if !linked && !self.watch_remote(parent, pid, Watch::Link).await {
                let end = self.end_of_async(pid).await;
                let _ = self.linked_to_ended(parent, pid, end, false);
            }
            if !monitored && !self.watch_remote(parent, pid, Watch::Monitor).await {
                let end = self.end_of_async(pid).await;
                let _ = self.down_now(parent, pid, end, false);
            }
            Ok(pid)
        })
    }

    fn monitor(&self, watcher: Pid, target: String) -> Answer<'_, Result<(), WatchError>> {
        Answer::later(async move {
            let target = self
                .resolve_async(&target)
                .await
                .map_err(|_| WatchError::BadPid)?;
            if !self.reaches(watcher, target).await {
                return Err(WatchError::BadPid);
            }
            if !self.actors.monitor(watcher, target)?
                && !self.watch_remote(watcher, target, Watch::Monitor).await
            {
                let end = self.end_of_async(target).await;
                self.down_now(watcher, target, end, true)?;
            }
            Ok(())
        })
    }

    fn link(&self, pid: Pid, target: String) -> Answer<'_, Result<(), WatchError>> {
        Answer::later(async move {
            let target = self
                .resolve_async(&target)
                .await
                .map_err(|_| WatchError::BadPid)?;
            if !self.reaches(pid, target).await {
                return Err(WatchError::BadPid);
            }
            if !self.actors.link(pid, target)? && !self.watch_remote(pid, target, Watch::Link).await
            {
                let end = self.end_of_async(target).await;
                self.linked_to_ended(pid, target, end, true)?;
            }
            Ok(())
        })
    }

    fn unlink(&self, pid: Pid, target: String) -> Answer<'_, Result<(), WatchError>> {
        Answer::later(async move {
            let target = self
                .resolve_async(&target)
                .await
                .map_err(|_| WatchError::BadPid)?;
            self.actors.unlink(pid, target);
            self.unlink_remote(pid, target);
            Ok(())
        })
    }

    fn kill(&self, from: Pid, target: String) -> Answer<'_, Result<(), SendError>> {
        Answer::later(async move {
            let target = self.resolve_async(&target).await.map_err(unreached)?;
            if !self.reaches(from, target).await {
                return Err(SendError::NoSuchProcess);
            }
            tracing::info!(pid = %target, by = %from, "A task asks to kill another");
            self.kill_async(target).await.map_err(|error| match error {
                KillError::AlreadyEnded { .. } => SendError::Ended,
                KillError::NotFound(_) => SendError::NoSuchProcess,
                KillError::Store(_) => SendError::Unavailable,
            })
        })
    }

    fn trap_exits(&self, pid: Pid, on: bool) {
        self.actors.set_trap_exits(pid, on);
    }

    fn register(&self, pid: Pid, name: String) -> Answer<'_, Result<(), NameError>> {
        Answer::later(async move {
            self.actors.register(pid, &name)?;
            if let Some(cluster) = &self.cluster {
                // The whole cluster's, or not at all.
                match cluster.store.register(&name, pid).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.actors.unregister(pid);
                        return Err(NameError::Taken);
                    }
                    Err(error) => {
                        tracing::warn!(pid = %pid, name, %error, "a name could not be registered");
                        self.actors.unregister(pid);
                        return Err(NameError::Taken);
                    }
                }
            }
            Ok(())
        })
    }

    fn whereis(&self, caller: Pid, name: String) -> Answer<'_, Option<Pid>> {
        Answer::later(async move {
            let holder = self.whereis_name(&name).await?;
            self.reaches(caller, holder).await.then_some(holder)
        })
    }

    fn call(
        &self,
        from: Pid,
        to: String,
        body: String,
        timeout: Duration,
    ) -> Answer<'_, Result<u64, SendError>> {
        self.call_from_task(from, to, body, timeout)
    }

    fn reply(&self, from: Pid, ticket: u64, body: String) -> Result<(), ReplyError> {
        self.reply_from_task(from, ticket, body)
    }

    fn moved(&self, pid: Pid, watchers: &[Pid], links: &[Pid]) {
        for watcher in watchers {
            self.watch_queued(*watcher, pid, Watch::Monitor);
        }
        for linked in links {
            self.watch_queued(*linked, pid, Watch::Link);
        }
    }

    fn exit_remote(&self, linked: Pid, notice: &EndNotice) {
        self.store.submit(
            vec![Change::Forward {
                to: linked,
                what: Forward::Exit {
                    from: notice.pid,
                    notice: notice.clone(),
                },
            }],
            None,
        );
    }
}

/// How `pid` ended, as its `record` in the store says; unknown if it has not ended or the store
/// does not hold it.
fn end_notice(pid: Pid, record: Option<TaskRecord>) -> EndNotice {
    match record {
        Some(record) if record.status.is_terminal() => EndNotice {
            pid,
            status: Some(record.status),
            outcome: record.outcome,
            exit_code: record.exit_code,
            error: record.error,
            result: record.result,
        },
        _ => EndNotice::unknown(pid),
    }
}

/// The change that hands a message for `to` to the store, for the host that holds `to`.
fn forwarded_message(to: Pid, sender: Option<Pid>, body: String) -> Vec<Change> {
    vec![Change::Forward {
        to,
        what: Forward::Message {
            sender,
            body: body.into_bytes(),
        },
    }]
}

/// Why a message the store would not take for another host was refused, now that `holder`
/// says who holds its task: still held, its mailbox there is full; else it ended.
fn undelivered(holder: Result<Option<Option<u32>>, StoreError>) -> SendError {
    match holder {
        Ok(Some(_)) => SendError::MailboxFull,
        Ok(None) => SendError::Ended,
        Err(_) => SendError::Unavailable,
    }
}

/// The send error for a target that names no task.
pub(super) fn unreached(unresolved: Unresolved) -> SendError {
    match unresolved {
        Unresolved::NotAPid(_) => SendError::BadPid,
        Unresolved::NoSuchName(_) => SendError::NoSuchProcess,
    }
}

/// Why a message for `to`, which has no mailbox here, was refused, as `end` says.
pub(super) fn not_live(end: Result<Arc<EndNotice>, StoreError>) -> SendError {
    match end {
        Ok(notice) if notice.status.is_some() => SendError::Ended,
        _ => SendError::NoSuchProcess,
    }
}
