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
//!   end; so does an attempt of it that fails and is restarted, for the calls it had taken;
//! - a caller's call ends at its deadline: the caller is woken with `timeout`, and an answer
//!   that comes after is dropped and counted ([`Actors::late_replies`]);
//! - a caller that ends takes its calls with it: answers to them are dropped and counted;
//! - an open call whose caller has given up (its client gone, its deadline past) is forgotten
//!   when the callee's mailbox needs the room.
//!
//! Bounds: open calls count as messages against the callee's mailbox; an answer a task has not
//! yet awaited counts against its own mailbox's bytes and every mailbox's together (an answer
//! that does not fit is refused to the callee as too large); a task holds at most as many
//! calls in time as its mailbox holds messages
//! ([`ActorLimits::max_messages`](super::ActorLimits)).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Actor, Actors, EndNotice, Entry, PutError};
use crate::model::{Pid, TaskEnd};

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
    /// A task of this host, which knows the call by `ticket` and waits for it until
    /// `deadline`.
    Task {
        pid: Pid,
        ticket: u64,
        deadline: Instant,
    },
}

impl Caller {
    /// Whether nobody waits for the answer any more.
    fn gone(&self, now: Instant) -> bool {
        match self {
            Self::Client(client) => client.is_closed(),
            Self::Task { deadline, .. } => *deadline <= now,
        }
    }
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
                Self::Caller(Caller::Task { pid, ticket, .. }),
                Self::Caller(Caller::Task {
                    pid: other_pid,
                    ticket: other_ticket,
                    ..
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

    /// Forgets the open calls whose callers have given up: room for what comes next.
    pub(super) fn forget_abandoned_calls(&mut self) {
        if let Some(calls) = self.calls.as_deref_mut() {
            let now = Instant::now();
            calls.open.retain(|(_, caller)| !caller.gone(now));
        }
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
        let in_time = calls.made.iter().filter(|(_, at)| *at > now).count();
        if in_time + calls.answers.len() >= max {
            return Err(CallError::TooMany);
        }
        // Calls past their deadline go (awaited later, they end as `timeout`: see
        // `await_call`), so that what a task holds stays bounded.
        calls.made.retain(|(_, at)| *at > now);
        let ticket = calls.ticket();
        calls.made.push((ticket, deadline));
        Ok(ticket)
    }

    /// How many calls task `pid` holds, made (answered or not) or taken and not answered:
    /// host state that a checkpoint of the task does not carry.
    pub fn calls_held(&self, pid: Pid) -> usize {
        self.shard(pid)
            .get(&pid)
            .and_then(|actor| actor.calls.as_deref())
            .map_or(0, |calls| {
                calls.made.len() + calls.answers.len() + calls.open.len()
            })
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
        match self.answer(caller, Reply::Answered(body)) {
            Ok(wake) => Ok(wake),
            Err(caller) => {
                // No room for the answer with its caller: the call stays open, for a smaller
                // answer.
                if let Some(calls) = self
                    .shard(callee)
                    .get_mut(&callee)
                    .and_then(|actor| actor.calls.as_deref_mut())
                {
                    calls.open.push((ticket, caller));
                }
                Err(ReplyError::TooLarge)
            }
        }
    }

    /// Gives `reply` to `caller`: `Ok` with the task to wake, if it awaits it. An answer nobody
    /// waits for any more (a client gone, a call past its deadline, a caller ended) is dropped
    /// and counted. `Err` hands the caller back when a task's answer does not fit its mailbox's
    /// bytes, or every mailbox's.
    pub(super) fn answer(&self, caller: Caller, reply: Reply) -> Result<Option<Pid>, Caller> {
        let (pid, ticket, deadline) = match caller {
            Caller::Client(client) => {
                if client.send(reply).is_err() {
                    self.late_replies.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(None);
            }
            Caller::Task {
                pid,
                ticket,
                deadline,
            } => (pid, ticket, deadline),
        };
        let mut shard = self.shard(pid);
        let Some(actor) = shard.get_mut(&pid) else {
            self.late_replies.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let now = Instant::now();
        // Past its deadline the call stays made, for `await_call` to end as a timeout. The
        // deadline tells this call from one of another attempt of the task with its ticket.
        let made = actor.calls.as_deref().and_then(|calls| {
            calls
                .made
                .iter()
                .position(|(made, at)| *made == ticket && *at == deadline && *at > now)
        });
        let Some(at) = made else {
            self.late_replies.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let bytes = reply.bytes();
        // An answer that holds nothing (`ended`, `timeout`) always fits, even past a bound that
        // notices of ends may have overrun.
        if bytes > 0
            && (actor.bytes + bytes > self.limits.max_mailbox_bytes || !self.take_bytes(bytes))
        {
            return Err(Caller::Task {
                pid,
                ticket,
                deadline,
            });
        }
        actor.bytes += bytes;
        let calls = actor.calls();
        calls.made.swap_remove(at);
        calls.answers.push((ticket, reply));
        if calls.awaiting == Some(ticket) {
            calls.awaiting = None;
            return Ok(Some(pid));
        }
        Ok(None)
    }

    /// What task `pid` finds when it awaits its call `ticket`: the answer if one came (or
    /// `timeout` once the call's deadline has passed), else the deadline to wait until. With
    /// `wait`, an answer that comes later wakes it.
    pub fn await_call(&self, pid: Pid, ticket: u64, wait: bool) -> Awaited {
        let mut shard = self.shard(pid);
        let Some(actor) = shard.get_mut(&pid) else {
            return Awaited::NoSuchCall;
        };
        let Some(calls) = actor.calls.as_deref_mut() else {
            return Awaited::NoSuchCall;
        };
        calls.awaiting = None;
        if let Some(at) = calls.answers.iter().position(|(t, _)| *t == ticket) {
            let (_, reply) = calls.answers.swap_remove(at);
            actor.bytes -= reply.bytes();
            self.total_bytes.fetch_sub(reply.bytes(), Ordering::AcqRel);
            return Awaited::Done(reply);
        }
        let Some(at) = calls.made.iter().position(|(made, _)| *made == ticket) else {
            // A ticket it was given whose call is over: its answer taken, or timed out and
            // forgotten to keep what the task holds bounded.
            if ticket <= calls.last_ticket && calls.open.iter().all(|(open, _)| *open != ticket) {
                return Awaited::Done(Reply::Timeout);
            }
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

    /// Calls `pid` took and has not answered, for tests.
    #[cfg(test)]
    fn open_calls_of(&self, pid: Pid) -> usize {
        self.shard(pid).get(&pid).map_or(0, Actor::open_calls)
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
            // What its answers held is in the actor's bytes, which its end gives back.
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
        // An `ended` answer holds no bytes: it always fits.
        callers
            .into_iter()
            .filter_map(|caller| {
                self.answer(caller, Reply::Ended(Arc::clone(notice)))
                    .ok()
                    .flatten()
            })
            .collect()
    }

    /// An attempt of `pid` ended as `end`, and the task runs again, keeping its mailbox: the
    /// calls the attempt had taken are answered with that end (the next attempt knows nothing
    /// of them), and the calls it made and their answers are forgotten. Returns the callers to
    /// wake.
    pub fn restart_calls(&self, pid: Pid, end: &TaskEnd) -> Vec<Pid> {
        let open = {
            let mut shard = self.shard(pid);
            let Some(actor) = shard.get_mut(&pid) else {
                return Vec::new();
            };
            let Some(calls) = actor.calls.as_deref_mut() else {
                return Vec::new();
            };
            // Anew, but for the tickets given out: the next attempt's are new numbers.
            let last_ticket = calls.last_ticket;
            let calls = std::mem::replace(
                calls,
                Calls {
                    last_ticket,
                    ..Calls::default()
                },
            );
            let held: usize = calls.answers.iter().map(|(_, reply)| reply.bytes()).sum();
            actor.bytes -= held;
            self.total_bytes.fetch_sub(held, Ordering::AcqRel);
            calls.open
        };
        if open.is_empty() {
            return Vec::new();
        }
        let notice = Arc::new(EndNotice::of(pid, end));
        open.into_iter()
            .filter_map(|(_, caller)| {
                self.answer(caller, Reply::Ended(Arc::clone(&notice)))
                    .ok()
                    .flatten()
            })
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

    /// A deadline a minute away, the same at every call: a task's call and its caller share
    /// the one its host set.
    fn later() -> Instant {
        static LATER: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *LATER.get_or_init(|| Instant::now() + Duration::from_secs(60))
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
            deadline: later(),
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
            Awaited::Done(Reply::Timeout),
            "the answer is taken once; the call is over"
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
            deadline: Instant::now(),
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
        // Expired calls do not count against the caller's share, and one forgotten to keep
        // it bounded still ends as a timeout when awaited.
        let expired: Vec<u64> = (0..4)
            .map(|_| actors.begin_call(caller, Instant::now()).expect("room"))
            .collect();
        actors.begin_call(caller, later()).expect("room");
        actors.begin_call(caller, later()).expect("room");
        assert_eq!(
            actors.begin_call(caller, later()),
            Err(CallError::TooMany),
            "at most as many calls as a mailbox holds messages"
        );
        for ticket in expired {
            assert_eq!(
                actors.await_call(caller, ticket, false),
                Awaited::Done(Reply::Timeout)
            );
        }
        assert_eq!(
            actors.await_call(caller, 1_000, false),
            Awaited::NoSuchCall,
            "a ticket never given"
        );
    }

    #[test]
    fn an_answer_counts_against_the_caller_s_mailbox_until_it_is_taken() {
        let actors = actors();
        let (caller, callee) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(caller);
        actors.enter(callee);
        let mut open = Vec::new();
        for _ in 0..2 {
            let ticket = actors.begin_call(caller, later()).expect("a ticket");
            let task = Caller::Task {
                pid: caller,
                ticket,
                deadline: later(),
            };
            actors
                .put_call(callee, Some(caller), "q".into(), task, || {})
                .expect("put");
            open.push((ticket, take_call(&actors, callee)));
        }
        // 4,096 bytes a mailbox: two answers of 16 fit, and are held until awaited.
        for (_, taken) in &open {
            assert_eq!(actors.reply(callee, *taken, "a".repeat(16)), Ok(None));
        }
        assert_eq!(actors.mailboxes_bytes(), 32);
        for (ticket, _) in &open {
            assert_eq!(
                actors.await_call(caller, *ticket, false),
                Awaited::Done(Reply::Answered("a".repeat(16)))
            );
        }
        assert_eq!(actors.mailboxes_bytes(), 0);
    }

    #[test]
    fn an_open_call_whose_caller_gave_up_makes_room_and_a_restart_answers_the_rest() {
        let actors = actors();
        let callee = Pid::new(1, 2);
        actors.enter(callee);
        // Two calls taken and open: the mailbox (two messages) has no room.
        let (gone, answer) = oneshot::channel();
        actors
            .put_call(callee, None, "1".into(), Caller::Client(gone), || {})
            .expect("put");
        take_call(&actors, callee);
        let (waiting, mut waits) = oneshot::channel();
        actors
            .put_call(callee, None, "2".into(), Caller::Client(waiting), || {})
            .expect("put");
        take_call(&actors, callee);
        assert_eq!(
            actors.put(callee, None, "m".into(), || {}),
            Err(PutError::Full)
        );
        // The first client goes away: its call is forgotten when room is needed.
        drop(answer);
        assert_eq!(actors.put(callee, None, "m".into(), || {}), Ok(false));
        // A failed attempt, restarted: the call it took is answered with its end.
        assert_eq!(
            actors.restart_calls(callee, &TaskEnd::guest_error("no".into())),
            Vec::<Pid>::new()
        );
        match waits.try_recv() {
            Ok(Reply::Ended(notice)) => assert_eq!(notice.pid, callee),
            other => panic!("{other:?}"),
        }
        assert_eq!(actors.open_calls_of(callee), 0);
    }

    #[test]
    fn an_answer_meant_for_a_restarted_attempt_s_call_never_answers_the_next_one() {
        let actors = actors();
        let (caller, callee) = (Pid::new(1, 1), Pid::new(1, 2));
        actors.enter(caller);
        actors.enter(callee);
        let old = actors.begin_call(caller, later()).expect("a ticket");
        let task = Caller::Task {
            pid: caller,
            ticket: old,
            deadline: later(),
        };
        actors
            .put_call(callee, Some(caller), "q".into(), task, || {})
            .expect("put");
        let taken = take_call(&actors, callee);
        // The caller's attempt fails and runs again; its next call gets a ticket of its own.
        actors.restart_calls(caller, &TaskEnd::guest_error("trap".into()));
        let new = actors.begin_call(caller, later()).expect("a ticket");
        assert!(new > old, "{new} after {old}");
        assert_eq!(actors.reply(callee, taken, "stale".into()), Ok(None));
        assert_eq!(actors.late_replies(), 1, "the old call's answer is late");
        assert!(matches!(
            actors.await_call(caller, new, false),
            Awaited::Until(_)
        ));
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
                deadline: later(),
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
