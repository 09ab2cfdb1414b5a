//! The worker's side of a task: [`Ctx`], its host calls, and the two futures a worker awaits.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::bindings::http_spawn::worker::host;
use crate::bindings::http_spawn::worker::types::{
    Child, End, Level, Message, NameError, Reply, ReplyError, SendError, SpawnError, Spec, Wake,
    WatchError,
};
use crate::executor::{Request, Slot};

/// A worker's handle on the host, passed to its `run` and owned by its future. The calls are
/// the host's, which never block: one that cannot be served at once answers with an error.
pub struct Ctx {
    /// What the host said at start; it lives as long as the task.
    spec: Spec,
    /// Shared with the executor: where [`Sleep`] and [`Receive`] leave their requests and find
    /// their wakes.
    slot: Rc<Slot>,
    /// Mailbox entries an [`Exec`] took while it waited for its child's end, oldest first:
    /// the next receives return them before they ask the host. A `Cell`, only ever taken and
    /// put back, so nothing can panic.
    stash: Cell<VecDeque<Received>>,
}

impl core::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ctx").field("pid", &self.spec.pid).finish()
    }
}

impl Ctx {
    pub(crate) fn new(spec: Spec, slot: Rc<Slot>) -> Self {
        Self {
            spec,
            slot,
            stash: Cell::default(),
        }
    }

    /// What the host told the task at start: its pid, name, duration, payload, parent and
    /// attempt.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// This task's own pid.
    pub fn pid(&self) -> &str {
        &self.spec.pid
    }

    /// Sleeps `ms` milliseconds. Messages that arrive meanwhile wait in the mailbox. The host
    /// counts each sleep as a step of the task's progress.
    pub fn sleep(&self, ms: u32) -> Sleep<'_> {
        Sleep {
            slot: &self.slot,
            ms,
            asked: false,
        }
    }

    /// Takes the next entry of the mailbox (a message, or a monitor's or a link's notice),
    /// waiting at most `timeout_ms` milliseconds for one: `None` when none came. 0 only looks.
    pub fn receive(&self, timeout_ms: u32) -> Receive<'_> {
        Receive {
            slot: &self.slot,
            stash: &self.stash,
            timeout_ms,
            asked: false,
        }
    }

    /// Puts `body` in the mailbox of `to`: a pid, or `name:<name>` for the task registered
    /// under that name. Messages from one task to another arrive in the order sent.
    pub fn send(&self, to: &str, body: &str) -> Result<(), SendError> {
        host::send(to, body)
    }

    /// Starts a child task and returns its pid. The child starts once the host has recorded
    /// it; `child.link` and `child.monitor` take effect as it is created.
    pub fn spawn(&self, child: &Child) -> Result<String, SpawnError> {
        host::spawn(child)
    }

    /// Starts a child task and waits for its end, as Wippy's `process.exec`: its [`End`], with
    /// its exit code and result. The child is monitored as it is created (whatever
    /// `child.monitor` says), so its end cannot be missed; a task that already watches as many
    /// tasks as the host allows (`--max-watches`) waits until its own deadline instead. Whatever else comes to the mailbox
    /// meanwhile is kept, in order, for the receives that follow (at most
    /// [`MAX_KEPT_ASIDE`] entries: past that the wait ends with [`ExecError::NotAwaited`]).
    ///
    /// ```no_run
    /// # async fn run(ctx: http_spawn_sdk::Ctx) -> Result<i32, String> {
    /// let child = http_spawn_sdk::Child {
    ///     worker: Some("report".into()),
    ///     name: "q3".into(),
    ///     duration_secs: 2,
    ///     payload: None,
    ///     link: false,
    ///     monitor: true,
    /// };
    /// let end = ctx.exec(&child).await.map_err(|e| format!("no end: {e:?}"))?;
    /// ctx.info(&format!("the report ended {} with {:?}", end.status, end.result));
    /// # Ok(0) }
    /// ```
    pub fn exec<'a>(&'a self, child: &'a Child) -> Exec<'a> {
        Exec {
            ctx: self,
            child,
            pid: None,
        }
    }

    /// Watches `pid`: one [`Received::Down`] comes when it ends, at once if it already has (or
    /// never existed).
    pub fn monitor(&self, pid: &str) -> Result<(), WatchError> {
        host::monitor(pid)
    }

    /// Links this task and `pid` both ways: when either ends abnormally the other ends too,
    /// unless it traps exits (see [`Ctx::trap_exits`]).
    pub fn link(&self, pid: &str) -> Result<(), WatchError> {
        host::link(pid)
    }

    /// Removes a link with `pid`, both ways; nothing happens if there was none.
    pub fn unlink(&self, pid: &str) -> Result<(), WatchError> {
        host::unlink(pid)
    }

    /// Kills `pid` (or `name:<name>`): it ends `killed`, which its links and monitors see.
    pub fn kill(&self, pid: &str) -> Result<(), SendError> {
        host::kill(pid)
    }

    /// Whether the abnormal end of a linked task comes as a [`Received::LinkedExit`] instead of
    /// ending this task. Off at start.
    pub fn trap_exits(&self, on: bool) {
        host::trap_exits(on);
    }

    /// Registers `name` for this task until it ends, so that others reach it as
    /// `name:<name>`.
    pub fn register(&self, name: &str) -> Result<(), NameError> {
        host::register(name)
    }

    /// The pid of the live task registered under `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<String> {
        host::whereis(name)
    }

    /// Calls `to` (a pid, or `name:<name>`): sends `body` as a message that asks for an
    /// answer, and waits at most `timeout_ms` milliseconds for it. Messages that arrive
    /// meanwhile wait in the mailbox. The call is made when the future is first polled.
    ///
    /// ```no_run
    /// # async fn run(ctx: http_spawn_sdk::Ctx) -> Result<i32, String> {
    /// let count = ctx
    ///     .call("name:counter", r#"{"op":"get"}"#, 5_000)
    ///     .await
    ///     .map_err(|error| format!("the counter did not answer: {error:?}"))?;
    /// # Ok(0) }
    /// ```
    pub fn call<'a>(&'a self, to: &'a str, body: &'a str, timeout_ms: u32) -> Call<'a> {
        Call {
            slot: &self.slot,
            to,
            body,
            timeout_ms,
            ticket: None,
        }
    }

    /// Answers the call `reply_to` (a received [`Message`]'s `reply_to`) with `body`, once.
    pub fn reply(&self, reply_to: u64, body: &str) -> Result<(), ReplyError> {
        host::reply(reply_to, body)
    }

    /// Records a log line at `level` in the task's log and the host's, tagged with the pid.
    pub fn log(&self, level: Level, message: &str) {
        host::log(level, message);
    }

    /// Logs `message` at [`Level::Trace`].
    pub fn trace(&self, message: &str) {
        self.log(Level::Trace, message);
    }

    /// Logs `message` at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Logs `message` at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs `message` at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Logs `message` at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }
}

/// An entry of the task's mailbox, as [`Ctx::receive`] returns it.
#[derive(Debug)]
pub enum Received {
    /// A message from another task (`sender` set) or from an HTTP client.
    Message(Message),
    /// A task this one monitors ended.
    Down(End),
    /// A linked task ended abnormally, and this task traps exits.
    LinkedExit(End),
}

/// The future of [`Ctx::exec`]: ready with the child's end, or why it did not start.
#[derive(Debug)]
#[must_use = "an exec does nothing unless awaited"]
pub struct Exec<'a> {
    ctx: &'a Ctx,
    child: &'a Child,
    /// The child's pid, once spawned: the next polls expect its `down`.
    pid: Option<String>,
}

/// Why [`Ctx::exec`] gave no end.
#[derive(Debug)]
pub enum ExecError {
    /// The child was not started.
    NotStarted(SpawnError),
    /// The child runs, as this pid, but its end was not awaited: more entries came meanwhile
    /// than it keeps aside ([`MAX_KEPT_ASIDE`]); what came is kept for the receives that
    /// follow, and the child's `down` comes as any monitor's.
    NotAwaited(String),
}

/// The mailbox entries an [`Exec`] keeps aside while it waits, at most: as many as a mailbox
/// holds by default, so that waiting does not lift the bound senders are held to.
pub const MAX_KEPT_ASIDE: usize = 1_024;

impl Future for Exec<'_> {
    type Output = Result<End, ExecError>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        /// Waits as long as a wait can be; the task's deadline ends it first.
        const FOREVER_MS: u32 = u32::MAX;
        let request = Request::Receive(FOREVER_MS);
        let Some(pid) = self.pid.clone() else {
            let mut child = self.child.clone();
            child.monitor = true;
            let pid = match host::spawn(&child) {
                Ok(pid) => pid,
                Err(error) => return Poll::Ready(Err(ExecError::NotStarted(error))),
            };
            self.pid = Some(pid);
            self.ctx.slot.ask(request);
            return Poll::Pending;
        };
        let received = match self.ctx.slot.take_wake(request) {
            Some(Wake::Message(message)) => Received::Message(message),
            Some(Wake::Down(end)) if end.pid == pid => return Poll::Ready(Ok(end)),
            Some(Wake::Down(end)) => Received::Down(end),
            Some(Wake::LinkedExit(end)) => Received::LinkedExit(end),
            // No wake in this poll (or one it did not ask for, which the executor reports).
            _ => return Poll::Pending,
        };
        let mut stash = self.ctx.stash.take();
        stash.push_back(received);
        let full = stash.len() >= MAX_KEPT_ASIDE;
        self.ctx.stash.set(stash);
        if full {
            return Poll::Ready(Err(ExecError::NotAwaited(pid)));
        }
        self.ctx.slot.ask(request);
        Poll::Pending
    }
}

/// Why a call brought no answer.
#[derive(Debug)]
pub enum CallError {
    /// It did not reach the callee, as a message would not have.
    NotSent(SendError),
    /// The callee ended before it answered (or never existed), as `End` says.
    Ended(End),
    /// No answer within the call's timeout.
    Timeout,
}

/// The future of [`Ctx::call`]: ready with the answer, or why none came.
#[derive(Debug)]
#[must_use = "a call does nothing unless awaited"]
pub struct Call<'a> {
    slot: &'a Slot,
    to: &'a str,
    body: &'a str,
    timeout_ms: u32,
    /// The call's ticket, once made: the next poll then expects its answer.
    ticket: Option<u64>,
}

impl Future for Call<'_> {
    type Output = Result<String, CallError>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(ticket) = self.ticket else {
            return match host::call(self.to, self.body, self.timeout_ms) {
                Ok(ticket) => {
                    self.ticket = Some(ticket);
                    self.slot.ask(Request::Await(ticket));
                    Poll::Pending
                }
                Err(error) => Poll::Ready(Err(CallError::NotSent(error))),
            };
        };
        match self.slot.take_wake(Request::Await(ticket)) {
            Some(Wake::Replied((_, reply))) => Poll::Ready(match reply {
                Reply::Answered(answer) => Ok(answer),
                Reply::Ended(end) => Err(CallError::Ended(end)),
                Reply::Timeout => Err(CallError::Timeout),
            }),
            _ => Poll::Pending,
        }
    }
}

/// The future of [`Ctx::sleep`]: ready once the host has let the time pass.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep<'a> {
    slot: &'a Slot,
    ms: u32,
    /// Whether the request went to the slot; the next poll then expects the wake.
    asked: bool,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        let request = Request::Sleep(self.ms);
        if !self.asked {
            self.asked = true;
            self.slot.ask(request);
            return Poll::Pending;
        }
        match self.slot.take_wake(request) {
            Some(Wake::Slept) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

/// The future of [`Ctx::receive`]: ready with the mailbox's next entry, or `None` when the
/// timeout passed first.
#[must_use = "a receive does nothing unless awaited"]
pub struct Receive<'a> {
    slot: &'a Slot,
    /// What an [`Exec`] kept: returned first, without asking the host.
    stash: &'a Cell<VecDeque<Received>>,
    timeout_ms: u32,
    /// Whether the request went to the slot; the next poll then expects the wake.
    asked: bool,
}

impl core::fmt::Debug for Receive<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Receive")
            .field("timeout_ms", &self.timeout_ms)
            .field("asked", &self.asked)
            .finish_non_exhaustive()
    }
}

impl Future for Receive<'_> {
    type Output = Option<Received>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Received>> {
        let request = Request::Receive(self.timeout_ms);
        if !self.asked {
            let mut stash = self.stash.take();
            let kept = stash.pop_front();
            self.stash.set(stash);
            if let Some(kept) = kept {
                return Poll::Ready(Some(kept));
            }
            self.asked = true;
            self.slot.ask(request);
            return Poll::Pending;
        }
        match self.slot.take_wake(request) {
            Some(Wake::Message(message)) => Poll::Ready(Some(Received::Message(message))),
            Some(Wake::Down(end)) => Poll::Ready(Some(Received::Down(end))),
            Some(Wake::LinkedExit(end)) => Poll::Ready(Some(Received::LinkedExit(end))),
            Some(Wake::Timeout) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}
