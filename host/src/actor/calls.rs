//! Calls: a message that waits for its answer, as Erlang's `gen_server:call` makes one. The
//! caller is a task of this host (`call` in the worker contract) or an HTTP client (`POST
//! /api/tasks/{pid}/calls`); the callee answers with `reply`, once.
//!
//! A call is a message whose entry carries its [`Caller`]. When the callee takes it from its
//! mailbox, the caller moves to the callee's open calls under a ticket of the callee's, which
//! the callee's `reply` names. The answer goes to the caller: through a channel to an HTTP
//! client, or into a task caller's own list of answers, under the ticket the caller holds,
//! kept apart from its mailbox (a `receive` never sees an answer; `next::await` takes it).
//!
//! Nothing a call leaves behind outlives it:
//! - a callee that ends answers every call it held, open or still in its mailbox, with its
//!   end;
//! - a caller's call ends at its deadline: the caller is woken with `timeout`, and an answer
//!   that comes after is dropped and counted ([`Actors::late_replies`]);
//! - a caller that ends takes its calls with it: answers to them are dropped and counted.
//!
//! A task holds at most as many calls as its mailbox holds messages
//! ([`ActorLimits::max_messages`](super::ActorLimits)); calls past their deadline are
//! forgotten as new ones are made.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Actor, Actors, EndNotice, Entry, PutError};
use crate::model::Pid;

/// What came of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The callee's answer.
    Answered(String),
    /// The callee ended before it answered (or never existed), as the notice says.
    Ended(Arc<EndNotice>),
    /// No answer within the call's timeout.
    Timeout,
}

impl Reply {
    /// What it costs the caller's memory, in bytes.
    fn bytes(&self) -> usize {
        match self {
            Self::Answered(body) => body.len(),
            Self::Ended(_) | Self::Timeout => 0,
        }
    }
}

/// Who waits for a call's answer.
#[derive(Debug)]
pub enum Caller {
    /// An HTTP client's request, which holds the receiving end.
    Client(oneshot::Sender<Reply>),
    /// A task of this host, which knows the call by `ticket`.
    Task { pid: Pid, ticket: u64 },
}

/// The answer a message asks for, if it is a call.
#[derive(Debug)]
pub enum ReplyTo {
    /// In the mailbox: who waits.
    Caller(Caller),
    /// Taken by the callee, which answers it under this ticket.
    Ticket(u64),
}

impl PartialEq for ReplyTo {
    /// Two handles are equal when they are the same ticket, or wait for the same task's
    /// ticket, or both wait for an HTTP client (whose channels cannot be told apart).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Ticket(a), Self::Ticket(b)) => a == b,
            (Self::Caller(Caller::Client(_)), Self::Caller(Caller::Client(_))) => true,
            (
                Self::Caller(Caller::Task { pid, ticket }),
                Self::Caller(Caller::Task {
                    pid: other_pid,
                    ticket: other_ticket,
                }),
            ) => pid == other_pid && ticket == other_ticket,
            _ => false,
        }
    }
}

impl Eq for ReplyTo {}

/// The calls of one task, made and received; boxed into its actor on its first call, so a
/// task that never calls pays one pointer.
#[derive(Debug, Default)]
pub(super) struct Calls {
    /// The last ticket given out: the task's calls and the calls it took share the numbers.
    last_ticket: u64,
    /// Calls this task made and has no answer to yet, with their deadlines.
    made: Vec<(u64, Instant)>,
    /// Answers that came for calls in `made`, not yet awaited.
    answers: Vec<(u64, Reply)>,
    /// The call the task awaits: an answer to it wakes the task.
    awaiting: Option<u64>,
    /// Calls made to this task, taken from its mailbox and not yet answered.
    open: Vec<(u64, Caller)>,
}

impl Calls {
    fn ticket(&mut self) -> u64 {
        self.last_ticket += 1;
        self.last_ticket
    }
}

/// What a task finds when it awaits a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Awaited {
    /// What came of it; the call is over.
    Done(Reply),
    /// Nothing yet: the task waits until this deadline (an answer wakes it first).
    Until(Instant),
    /// The task holds no call with this ticket: it never made one, or it has taken its answer.
    NoSuchCall,
}

/// Why a task could not make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The task holds as many calls as it may.
    TooMany,
    /// The task is not live here.
    NotLive,
}

/// Why a reply was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("no open call has this ticket")]
    NoSuchCall,
    #[error("the reply is larger than a message may be")]
    TooLarge,
}

impl Actor {
    fn calls(&mut self) -> &mut Calls {
        self.calls.get_or_insert_with(Box::default)
    }

    /// Calls the task took from its mailbox and has not answered.
    pub(super) fn open_calls(&self) -> usize {
        self.calls.as_ref().map_or(0, |calls| calls.open.len())
    }

    /// Takes a call out of the message `entry`, just taken from the mailbox: its caller goes to
    /// the open calls, and the entry keeps the ticket to answer it under.
    pub(super) fn open_call(&mut self, entry: &mut Entry) {
        let Entry::Message { reply_to, .. } = entry else {
            return;
        };
        if let Some(ReplyTo::Caller(_)) = reply_to {
            let calls = self.calls();
            let ticket = calls.ticket();
            if let Some(ReplyTo::Caller(caller)) = reply_to.replace(ReplyTo::Ticket(ticket)) {
                calls.open.push((ticket, caller));
            }
        }
    }
}

impl Actors {
    /// Opens a call by task `caller`, to end at `deadline`: its ticket.
    pub fn begin_call(&self, caller: Pid, deadline: Instant) -> Result<u64, CallError> {
        let max = self.limits.max_messages;
        let mut shard = self.shard(caller);
        let actor = shard.get_mut(&caller).ok_or(CallError::NotLive)?;
        let calls = actor.calls();
        let now = Instant::now();
        calls.made.retain(|(_, deadline)| *deadline > now);
        if calls.made.len() + calls.answers.len() >= max {
            return Err(CallError::TooMany);
        }
        let ticket = calls.ticket();
        calls.made.push((ticket, deadline));
        Ok(ticket)
    }

    /// Forgets the call `ticket` of `caller`, which never reached its callee.
    pub fn cancel_call(&self, caller: Pid, ticket: u64) {
        if let Some(calls) = self
            .shard(caller)
            .get_mut(&caller)
            .and_then(|actor| actor.calls.as_deref_mut())
        {
            calls.made.retain(|(made, _)| *made != ticket);
        }
    }

    /// Puts the call `body` from `caller` into `to`'s mailbox, as [`Actors::put`] puts a
    /// message. On an error the caller is handed back (dropped, it tells an HTTP client that
    /// the call went nowhere).
    pub fn put_call(
        &self,
        to: Pid,
        sender: Option<Pid>,
        body: String,
        caller: Caller,
        put: impl FnOnce(),
    ) -> Result<bool, PutError> {
        self.put_entry(
            to,
            Entry::Message {
                sender,
                body,
                reply_to: Some(ReplyTo::Caller(caller)),
            },
            put,
        )
    }

    /// Answers the open call `ticket` of task `callee` with `body`. `Ok(Some(pid))`: the
    /// caller, a task of this host, awaits the answer and must be woken.
    pub fn reply(&self, callee: Pid, ticket: u64, body: String) -> Result<Option<Pid>, ReplyError> {
        if body.len() > self.limits.max_message_bytes {
            return Err(ReplyError::TooLarge);
        }
        let caller = {
            let mut shard = self.shard(callee);
            let calls = shard
                .get_mut(&callee)
                .and_then(|actor| actor.calls.as_deref_mut())
                .ok_or(ReplyError::NoSuchCall)?;
            let at = calls
                .open
                .iter()
                .position(|(open, _)| *open == ticket)
                .ok_or(ReplyError::NoSuchCall)?;
            calls.open.swap_remove(at).1
        };
        Ok(self.answer(caller, Reply::Answered(body)))
    }

    /// Gives `reply` to `caller`: the task to wake, if it awaits it. An answer nobody waits
    /// for any more (a client gone, a call past its deadline, a caller ended) is dropped and
    /// counted.
    pub(super) fn answer(&self, caller: Caller, reply: Reply) -> Option<Pid> {
        match caller {
            Caller::Client(client) => {
                if client.send(reply).is_err() {
                    self.late_replies.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            Caller::Task { pid, ticket } => {
                let mut shard = self.shard(pid);
                let calls = shard
                    .get_mut(&pid)
                    .and_then(|actor| actor.calls.as_deref_mut());
                let made = calls.and_then(|calls| {
                    let at = calls.made.iter().position(|(made, _)| *made == ticket)?;
                    Some((calls, at))
                });
                // Past its deadline the call stays made, for `await_call` to end as a timeout.
                let Some((calls, at)) =
                    made.filter(|(calls, at)| calls.made[*at].1 > Instant::now())
                else {
                    self.late_replies.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                calls.made.swap_remove(at);
                self.total_bytes.fetch_add(reply.bytes(), Ordering::AcqRel);
                calls.answers.push((ticket, reply));
                if calls.awaiting == Some(ticket) {
                    calls.awaiting = None;
                    return Some(pid);
                }
                None
            }
        }
    }

    /// What task `pid` finds when it awaits its call `ticket`: the answer if one came (or
    /// `timeout` once the call's deadline has passed), else the deadline to wait until. With
    /// `wait`, an answer that comes later wakes it.
    pub fn await_call(&self, pid: Pid, ticket: u64, wait: bool) -> Awaited {
        let mut shard = self.shard(pid);
        let Some(calls) = shard
            .get_mut(&pid)
            .and_then(|actor| actor.calls.as_deref_mut())
        else {
            return Awaited::NoSuchCall;
        };
        calls.awaiting = None;
        if let Some(at) = calls.answers.iter().position(|(t, _)| *t == ticket) {
            let (_, reply) = calls.answers.swap_remove(at);
            self.total_bytes.fetch_sub(reply.bytes(), Ordering::AcqRel);
            return Awaited::Done(reply);
        }
        let Some(at) = calls.made.iter().position(|(made, _)| *made == ticket) else {
            return Awaited::NoSuchCall;
        };
        let deadline = calls.made[at].1;
        if deadline <= Instant::now() {
            calls.made.swap_remove(at);
            return Awaited::Done(Reply::Timeout);
        }
        if wait {
            calls.awaiting = Some(ticket);
        }
        Awaited::Until(deadline)
    }

    /// Answers to HTTP clients dropped because nobody waited any more, and to tasks whose
    /// call had timed out or who had ended.
    pub fn late_replies(&self) -> u64 {
        self.late_replies.load(Ordering::Relaxed)
    }

    /// Answers every call the ended `actor` held (open, or still in its mailbox) with its end,
    /// `notice`; frees what its answers held. Returns the callers to wake.
    pub(super) fn end_calls(&self, actor: &mut Actor, notice: &Arc<EndNotice>) -> Vec<Pid> {
        let mut callers = Vec::new();
        if let Some(calls) = actor.calls.take() {
            let held: usize = calls.answers.iter().map(|(_, reply)| reply.bytes()).sum();
            self.total_bytes.fetch_sub(held, Ordering::AcqRel);
            callers.extend(calls.open.into_iter().map(|(_, caller)| caller));
        }
        for entry in actor.mailbox.drain(..) {
            if let Entry::Message {
                reply_to: Some(ReplyTo::Caller(caller)),
                ..
            } = entry
            {
                callers.push(caller);
            }
        }
        callers
            .into_iter()
            .filter_map(|caller| self.answer(caller, Reply::Ended(Arc::clone(notice))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actor::ActorLimits;
    use crate::model::TaskEnd;

    fn actors() -> Actors {
        Actors::new(ActorLimits {
            max_messages: 2,
            max_message_bytes: 16,
            max_mailbox_bytes: 4096,
            max_mailboxes_bytes: 8192,
            max_watches: 4,
            max_descendants: 4,
            max_spawns_per_sec: 1,
        })
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Takes the next entry of `pid`'s mailbox, which must be a call: its ticket.
    fn take_call(actors: &Actors, pid: Pid) -> u64 {
        match actors.take(pid, false) {
            Some(Entry::Message {
                reply_to: Some(ReplyTo::Ticket(ticket)),
                ..
            }) => ticket,
            other => panic!("not a call: {other:?}"),
        }
    }

    #[test]
    fn a_task_s_call_is_answered_once_and_wakes_the_caller_that_awaits_it() {
        let actors = actors();
        let (caller, callee) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(caller);
        actors.enter(callee);
        let ticket = actors.begin_call(caller, later()).expect("a ticket");
        let task = Caller::Task {
            pid: caller,
            ticket,
        };
        assert_eq!(
            actors.put_call(callee, Some(caller), "q".into(), task, || {}),
            Ok(false)
        );
        // Awaited before the answer: the caller waits, and the answer wakes it.
        assert!(matches!(
            actors.await_call(caller, ticket, true),
            Awaited::Until(_)
        ));
        let open = take_call(&actors, callee);
        assert_eq!(actors.reply(callee, open, "a".into()), Ok(Some(caller)));
        assert_eq!(
            actors.reply(callee, open, "again".into()),
            Err(ReplyError::NoSuchCall),
            "a call is answered once"
        );
        assert_eq!(
            actors.await_call(caller, ticket, true),
            Awaited::Done(Reply::Answered("a".into()))
        );
        assert_eq!(
            actors.await_call(caller, ticket, true),
            Awaited::NoSuchCall,
            "the answer is taken once"
        );
        assert_eq!(actors.late_replies(), 0);
        assert_eq!(actors.mailboxes_bytes(), 0, "nothing is left held");
    }

    #[test]
    fn a_call_past_its_deadline_times_out_and_its_late_answer_is_dropped_and_counted() {
        let actors = actors();
        let (caller, callee) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(caller);
        actors.enter(callee);
        let ticket = actors.begin_call(caller, Instant::now()).expect("a ticket");
        let task = Caller::Task {
            pid: caller,
            ticket,
        };
        actors
            .put_call(callee, Some(caller), "q".into(), task, || {})
            .expect("put");
        let open = take_call(&actors, callee);
        assert_eq!(actors.reply(callee, open, "late".into()), Ok(None));
        assert_eq!(actors.late_replies(), 1);
        assert_eq!(
            actors.await_call(caller, ticket, false),
            Awaited::Done(Reply::Timeout)
        );
        // Expired calls do not count against the caller's share.
        for _ in 0..4 {
            actors.begin_call(caller, Instant::now()).expect("room");
        }
        actors.begin_call(caller, later()).expect("room");
        actors.begin_call(caller, later()).expect("room");
        assert_eq!(
            actors.begin_call(caller, later()),
            Err(CallError::TooMany),
            "at most as many calls as a mailbox holds messages"
        );
    }

    #[test]
    fn a_callee_that_ends_answers_every_call_it_held_with_its_end() {
        let actors = actors();
        let (caller, callee) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(caller);
        actors.enter(callee);
        let taken = actors.begin_call(caller, later()).expect("a ticket");
        let waiting = actors.begin_call(caller, later()).expect("a ticket");
        for ticket in [taken, waiting] {
            let task = Caller::Task {
                pid: caller,
                ticket,
            };
            actors
                .put_call(callee, Some(caller), "q".into(), task, || {})
                .expect("put");
        }
        // One taken and open, one still in the mailbox; and a client's.
        take_call(&actors, callee);
        let (client, mut answer) = oneshot::channel();
        assert_eq!(
            actors.put_call(callee, None, "c".into(), Caller::Client(client), || {}),
            Err(PutError::Full),
            "a call counts as a message against the mailbox's bound"
        );
        assert!(
            answer.try_recv().is_err(),
            "a call refused is dropped unanswered"
        );
        actors.await_call(caller, taken, true);
        let aftermath = actors.ended(callee, &TaskEnd::exited(5), drop);
        assert_eq!(aftermath.wake, [caller], "the awaiting caller is woken");
        for ticket in [taken, waiting] {
            match actors.await_call(caller, ticket, false) {
                Awaited::Done(Reply::Ended(notice)) => {
                    assert_eq!((notice.pid, notice.exit_code), (callee, Some(5)));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_client_s_call_is_answered_through_its_channel_or_counted_late() {
        let actors = actors();
        let callee = Pid::new(1, 2);
        actors.enter(callee);
        let (client, answer) = oneshot::channel();
        actors
            .put_call(callee, None, "q".into(), Caller::Client(client), || {})
            .expect("put");
        let open = take_call(&actors, callee);
        assert_eq!(actors.reply(callee, open, "a".into()), Ok(None));
        assert_eq!(answer.blocking_recv(), Ok(Reply::Answered("a".into())));

        let (client, answer) = oneshot::channel();
        actors
            .put_call(callee, None, "q".into(), Caller::Client(client), || {})
            .expect("put");
        drop(answer);
        let open = take_call(&actors, callee);
        assert_eq!(
            actors.reply(callee, open, "x".repeat(17)),
            Err(ReplyError::TooLarge),
            "a reply larger than a message is refused, and the call stays open"
        );
        assert_eq!(actors.reply(callee, open, "a".into()), Ok(None));
        assert_eq!(actors.late_replies(), 1, "nobody waited any more");
    }
}
