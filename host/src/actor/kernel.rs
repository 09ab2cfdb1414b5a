//! What a running task may ask of the host beyond logging: the host calls of
//! `http-spawn:worker/host@0.2.0`, as the runtime sees them. The host implements this; the
//! runtime only forwards a guest's calls, so wasmtime never meets the scheduler or the store.

use super::EndNotice;
use crate::model::Pid;

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

/// The host as a running task reaches it. Every call answers at once: none waits for room, a
/// lock held by another thread aside.
pub trait Kernel: Send + Sync + std::fmt::Debug {
    /// Puts `body` into the mailbox of `to` (a pid, or `name:<name>`), from task `from`.
    fn send(&self, from: Pid, to: &str, body: String) -> Result<(), SendError>;
    /// Accepts a child of `parent`, under the same admission as HTTP.
    fn spawn(&self, parent: Pid, child: ChildRequest) -> Result<Pid, ChildError>;
    /// One `down` notice to `watcher` when `target` ends.
    fn monitor(&self, watcher: Pid, target: &str) -> Result<(), WatchError>;
    /// Links `pid` and `target` both ways.
    fn link(&self, pid: Pid, target: &str) -> Result<(), WatchError>;
    /// Removes the link between `pid` and `target`.
    fn unlink(&self, pid: Pid, target: &str) -> Result<(), WatchError>;
    /// Kills `target` at the request of task `from`.
    fn kill(&self, from: Pid, target: &str) -> Result<(), SendError>;
    /// Whether `pid` takes abnormal ends of linked tasks as notices.
    fn trap_exits(&self, pid: Pid, on: bool);
    /// Registers `name` for `pid`.
    fn register(&self, pid: Pid, name: &str) -> Result<(), NameError>;
    /// The live task holding `name`, if `caller` reaches it.
    fn whereis(&self, caller: Pid, name: &str) -> Option<Pid>;

    /// Tells `linked`, which another host of the cluster holds, of the abnormal end `notice`
    /// of a task linked to it. A host alone has no such tasks.
    fn exit_remote(&self, _linked: Pid, _notice: &EndNotice) {}
}
