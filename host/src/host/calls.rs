//! Calls to tasks, from HTTP clients (`POST /api/tasks/{pid}/calls`) and from tasks (the
//! contract's `call` and `reply`): a message that waits for its answer. The bookkeeping is
//! [`Actors`](crate::actor::Actors)' (`actor/calls.rs`); this is where it meets the scheduler
//! (wake-ups), the event stream and the metrics.
//!
//! In a cluster, an HTTP client's call for a task another host holds is relayed to that host
//! over HTTP (`relay`), and its answer relayed back; a task's own call reaches only the tasks of
//! its host (`elsewhere` for another's): the answer would have to come back through the store,
//! which carries messages one way only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Host;
use super::actors::{not_live, unreached};
use super::relay::{self, Relayed};
use crate::actor::{Answer, CallError, Caller, EndNotice, PutError, Reply, ReplyError, SendError};
use crate::model::Pid;

/// Why an HTTP client's call brought no answer.
#[derive(Debug)]
pub enum CallFailed {
    /// It did not reach the task, for the reason a message would not have.
    NotSent(SendError),
    /// The task ended before it answered (or never existed), as the notice says.
    Ended(Arc<EndNotice>),
    /// No answer within the call's timeout.
    Timeout,
}

impl Host {
    /// Calls task `to` with `body` from an HTTP client: its answer, or why none came within
    /// `timeout`. Holds no thread while it waits; a client that goes away takes its wait with
    /// it, and an answer that comes after is dropped and counted. In a cluster, a call for a
    /// task another host holds goes to that host, unless it was `relayed` here by another.
    pub async fn call_async(
        &self,
        to: Pid,
        body: String,
        timeout: Duration,
        relayed: bool,
    ) -> Result<String, CallFailed> {
        let called = self.call_from_client(to, body, timeout, relayed).await;
        let result = match &called {
            Ok(_) => "answered",
            Err(CallFailed::Ended(_)) => "ended",
            Err(CallFailed::Timeout) => "timeout",
            Err(CallFailed::NotSent(error)) => send_result(*error),
        };
        self.metrics().call(false, result);
        called
    }

    async fn call_from_client(
        &self,
        to: Pid,
        body: String,
        timeout: Duration,
        relayed: bool,
    ) -> Result<String, CallFailed> {
        let bytes = self.sized(&body).map_err(CallFailed::NotSent)?;
        if let Some(cluster) = self.forwards_to(to) {
            match cluster.store.holder_async(to).await {
                // This host, about to take it or just done with it: the local answer.
                Ok(Some(Some(node))) if node == cluster.store.node() => {}
                // Another host holds it: the call goes there, once.
                Ok(Some(Some(node))) if !relayed => {
                    return self.relay(cluster, node, to, body, timeout).await;
                }
                Ok(Some(Some(_))) => return Err(CallFailed::NotSent(SendError::Elsewhere)),
                // In the shared queue: no host holds it yet to answer.
                Ok(Some(None)) | Err(_) => {
                    return Err(CallFailed::NotSent(SendError::Unavailable));
                }
                Ok(None) => {}
            }
        }
        let (caller, answer) = oneshot::channel();
        match self.put_here(None, to, body, Some(Caller::Client(caller)), bytes) {
            Ok(()) => {}
            Err(PutError::Full) => return Err(CallFailed::NotSent(SendError::MailboxFull)),
            Err(PutError::NotLive) => {
                return Err(CallFailed::NotSent(not_live(self.end_of_async(to).await)));
            }
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Reply::Answered(body))) => Ok(body),
            Ok(Ok(Reply::Ended(notice))) => Err(CallFailed::Ended(notice)),
            Ok(Ok(Reply::Timeout)) | Err(_) => Err(CallFailed::Timeout),
            // Dropped unanswered by a path that did not say why: the task's end says.
            Ok(Err(_)) => Err(CallFailed::Ended(
                self.end_of_async(to)
                    .await
                    .unwrap_or_else(|_| Arc::new(EndNotice::unknown(to))),
            )),
        }
    }

    /// Relays the call to host `node`, which holds `to`.
    async fn relay(
        &self,
        cluster: &super::cluster::Cluster,
        node: u32,
        to: Pid,
        body: String,
        timeout: Duration,
    ) -> Result<String, CallFailed> {
        let nodes = cluster
            .nodes()
            .await
            .map_err(|_| CallFailed::NotSent(SendError::Unavailable))?;
        let Some(holder) = nodes.into_iter().find(|info| info.id == node) else {
            return Err(CallFailed::NotSent(SendError::Unavailable));
        };
        let token = self.relay_token.as_deref();
        // The answer, or a `504` with the task's end: a message and a result, and room for
        // the JSON around them.
        let max_answer = self.actors.limits().max_message_bytes + self.max_result_bytes + 65_536;
        match relay::relay_call(&holder.address, token, to, body, timeout, max_answer).await {
            Relayed::Answered(answer) => Ok(answer),
            Relayed::Ended(notice) => Err(CallFailed::Ended(Arc::new(notice))),
            Relayed::Timeout => Err(CallFailed::Timeout),
            Relayed::NotSent(error) => Err(CallFailed::NotSent(error)),
        }
    }

    /// Task `from`'s call of `to` (a pid, or `name:<name>`): its ticket, at once where no
    /// store need be asked.
    pub(super) fn call_from_task(
        &self,
        from: Pid,
        to: String,
        body: String,
        timeout: Duration,
    ) -> Answer<'_, Result<u64, SendError>> {
        let deadline = Instant::now() + timeout;
        if let Ok(pid) = to.parse::<Pid>()
            && self.reaches_at_once(from, pid) == Some(true)
            && self.actors.holds(pid)
        {
            return match self.call_here(from, pid, body, deadline) {
                // Whether it ended or never was, the store says.
                Err(SendError::NoSuchProcess) => Answer::later(async move {
                    self.call_counted(Err(not_live(self.end_of_async(pid).await)))
                }),
                called => Answer::Now(self.call_counted(called)),
            };
        }
        Answer::later(async move {
            let to = self.resolve_async(&to).await.map_err(unreached)?;
            if !self.reaches(from, to).await {
                return self.call_counted(Err(SendError::NoSuchProcess));
            }
            if let Some(cluster) = self.forwards_to(to)
                && matches!(cluster.store.holder_async(to).await, Ok(Some(_)))
            {
                return self.call_counted(Err(SendError::Elsewhere));
            }
            let called = match self.call_here(from, to, body, deadline) {
                Err(SendError::NoSuchProcess) => Err(not_live(self.end_of_async(to).await)),
                called => called,
            };
            self.call_counted(called)
        })
    }

    /// Opens a call by `from` to `to`, a task of this host, ending at `deadline`.
    /// `NoSuchProcess` when `to` has no mailbox here (the store tells whether it ended).
    fn call_here(
        &self,
        from: Pid,
        to: Pid,
        body: String,
        deadline: Instant,
    ) -> Result<u64, SendError> {
        let bytes = self.sized(&body)?;
        let ticket = self
            .actors
            .begin_call(from, deadline)
            .map_err(|error| match error {
                // Past its share of calls, as past a full mailbox: try again later.
                CallError::TooMany => SendError::MailboxFull,
                CallError::NotLive => SendError::NoSuchProcess,
            })?;
        let caller = Caller::Task {
            pid: from,
            ticket,
            deadline,
        };
        match self.put_here(Some(from), to, body, Some(caller), bytes) {
            Ok(()) => Ok(ticket),
            Err(error) => {
                self.actors.cancel_call(from, ticket);
                Err(match error {
                    PutError::Full => SendError::MailboxFull,
                    PutError::NotLive => SendError::NoSuchProcess,
                })
            }
        }
    }

    fn call_counted(&self, called: Result<u64, SendError>) -> Result<u64, SendError> {
        let result = match &called {
            Ok(_) => "sent",
            Err(error) => send_result(*error),
        };
        self.metrics().call(true, result);
        called
    }

    /// Task `from` answers its call `ticket`; the caller is woken if it awaits the answer.
    pub(super) fn reply_from_task(
        &self,
        from: Pid,
        ticket: u64,
        body: String,
    ) -> Result<(), ReplyError> {
        if let Some(caller) = self.actors.reply(from, ticket, body)? {
            self.scheduler.wake(caller);
        }
        Ok(())
    }
}

/// A send error as the metrics name it.
pub(super) fn send_result(error: SendError) -> &'static str {
    match error {
        SendError::MailboxFull => "mailbox_full",
        SendError::Ended => "ended",
        SendError::NoSuchProcess => "no_such_process",
        SendError::TooLarge => "too_large",
        SendError::BadPid => "bad_pid",
        SendError::Unavailable => "unavailable",
        SendError::Elsewhere => "elsewhere",
    }
}
