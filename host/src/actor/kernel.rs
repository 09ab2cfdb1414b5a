//! What a running task may ask of the host beyond logging: the host calls of
//! `http-spawn:worker/host@0.2.0`, as the runtime sees them. The host implements this; the
//! runtime only forwards a guest's calls, so wasmtime never meets the scheduler or the store.
//!
//! A call that may have to ask the store (a pid or a name another host of a cluster may hold)
//! gives an [`Answer`]: at once where it can, else a future, the code an HTTP handler awaits.
//! A host alone answers at once, or after a read of its own store; a host of a cluster may
//! wait for the database. The runtime polls a task's call on the spot (its `calls`): the
//! contract's calls are synchronous, so a wait holds the task's scheduler thread. The future
//! is what a contract whose calls can answer later would hand on instead, parking the task
//! between steps.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{EndNotice, ReplyError};
use crate::model::Pid;

/// The answer to a host call that may wait for the store: at once (the common case, which
/// costs no allocation), or a future.
pub enum Answer<'a, T> {
    Now(T),
    Later(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> Answer<'a, T> {
    /// The answer a future will give.
    pub fn later(future: impl Future<Output = T> + Send + 'a) -> Self {
        Self::Later(Box::pin(future))
    }
}

impl<T> std::fmt::Debug for Answer<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Now(_) => "Answer::Now",
            Self::Later(_) => "Answer::Later",
        })
    }
}

/// Why a message (or a kill) did not reach its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such process")]
    NoSuchProcess,
    #[error("the process has ended")]
    Ended,
    #[error("the mailbox is full")]
    MailboxFull,
    #[error("the message is too large")]
    TooLarge,
    #[error("not a pid")]
    BadPid,
    /// The task is another host's, and the store that carries messages there cannot take
    /// this one now.
    #[error("the task store cannot take the message now")]
    Unavailable,
    /// A call to a task another host of the cluster holds: calls reach only tasks of the
    /// caller's host (messages reach every host).
    #[error("the task runs on another host of the cluster, which calls do not reach")]
    Elsewhere,
}

/// Why a child task was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    #[error("the host is full")]
    Full,
    #[error("the host is shutting down")]
    ShuttingDown,
    #[error("no worker is called {0:?}")]
    UnknownWorker(String),
    #[error("{0}")]
    Refused(String),
}

/// Why a pid could not be linked or monitored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("not a pid of a task")]
    BadPid,
    #[error("too many links and monitors")]
    TooMany,
}

/// Why a name was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("not a valid name")]
    Invalid,
    #[error("the name is taken")]
    Taken,
    #[error("the task already holds a name")]
    AlreadyNamed,
}

/// A child task a running task asks for.
#[derive(Debug, Clone)]
pub struct ChildRequest {
    pub worker: Option<String>,
    pub name: String,
    pub duration_secs: u32,
    pub payload: Option<String>,
    pub link: bool,
    pub monitor: bool,
}

/// The host as a running task reaches it. No call waits for room (a full mailbox, a full
/// host): it is refused. A call that takes a pid or a name may wait for the store, as its
/// [`Answer`].
pub trait Kernel: Send + Sync + std::fmt::Debug {
    /// Puts `body` into the mailbox of `to` (a pid, or `name:<name>`), from task `from`.
    fn send(&self, from: Pid, to: String, body: String) -> Answer<'_, Result<(), SendError>>;
    /// Accepts a child of `parent`, under the same admission as HTTP.
    fn spawn(&self, parent: Pid, child: ChildRequest) -> Answer<'_, Result<Pid, ChildError>>;
    /// One `down` notice to `watcher` when `target` ends.
    fn monitor(&self, watcher: Pid, target: String) -> Answer<'_, Result<(), WatchError>>;
    /// Links `pid` and `target` both ways.
    fn link(&self, pid: Pid, target: String) -> Answer<'_, Result<(), WatchError>>;
    /// Removes the link between `pid` and `target`.
    fn unlink(&self, pid: Pid, target: String) -> Answer<'_, Result<(), WatchError>>;
    /// Kills `target` at the request of task `from`.
    fn kill(&self, from: Pid, target: String) -> Answer<'_, Result<(), SendError>>;
    /// Whether `pid` takes abnormal ends of linked tasks as notices.
    fn trap_exits(&self, pid: Pid, on: bool);
    /// Registers `name` for `pid`.
    fn register(&self, pid: Pid, name: String) -> Answer<'_, Result<(), NameError>>;
    /// The live task holding `name`, if `caller` reaches it.
    fn whereis(&self, caller: Pid, name: String) -> Answer<'_, Option<Pid>>;
    /// Puts `body` into the mailbox of `to` (a pid, or `name:<name>`) as a call from task
    /// `from`, to be answered within `timeout`: the ticket `from` awaits it by.
    fn call(
        &self,
        from: Pid,
        to: String,
        body: String,
        timeout: Duration,
    ) -> Answer<'_, Result<u64, SendError>>;
    /// Answers the call `ticket` that task `from` took from its mailbox.
    fn reply(&self, from: Pid, ticket: u64, body: String) -> Result<(), ReplyError>;

    /// Tells `linked`, which another host of the cluster holds, of the abnormal end `notice`
    /// of a task linked to it. A host alone has no such tasks.
    fn exit_remote(&self, _linked: Pid, _notice: &EndNotice) {}

    /// Task `pid` left this host with its checkpoint, to go on elsewhere; `watchers` here
    /// monitor it and `links` here are linked to it. In a cluster they watch it as a task of
    /// another host; a host alone has nowhere for it to go but its next start.
    fn moved(&self, _pid: Pid, _watchers: &[Pid], _links: &[Pid]) {}
}
