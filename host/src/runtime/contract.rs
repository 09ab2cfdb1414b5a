//! The host's values as each worker contract writes them, and back: a task's spec, what woke
//! it, what its step asks for. 0.1.0's few are written where they are used (`process`).

use super::bindings::{v2, v3};
use super::process::{Next, StartSpec};
use crate::actor::{EndNotice, Entry, Reply, ReplyTo, Wake};
use crate::model::{JsonText, Outcome, TaskEnd};

use v2::http_spawn::worker::types as wit2;
use v3::http_spawn::worker::types as wit3;

/// The spec as the 0.2.0 contract writes it.
pub(super) fn v2_spec(spec: &StartSpec<'_>) -> wit2::Spec {
    wit2::Spec {
        pid: spec.pid.to_string(),
        name: spec.name.to_string(),
        duration_secs: spec.duration_secs,
        payload: spec.payload.map(str::to_owned),
        parent: spec.parent.map(|pid| pid.to_string()),
        attempt: spec.attempt,
    }
}

/// The spec as the 0.3.0 contract writes it.
pub(super) fn v3_spec(spec: &StartSpec<'_>) -> wit3::Spec {
    wit3::Spec {
        pid: spec.pid.to_string(),
        name: spec.name.to_string(),
        duration_secs: spec.duration_secs,
        payload: spec.payload.map(str::to_owned),
        parent: spec.parent.map(|pid| pid.to_string()),
        attempt: spec.attempt,
    }
}

fn v2_end(notice: &EndNotice) -> wit2::End {
    wit2::End {
        pid: notice.pid.to_string(),
        status: notice.status_str().to_owned(),
        outcome: notice.outcome_str().to_owned(),
        exit_code: notice.exit_code,
        error: notice.error.clone(),
    }
}

fn v3_end(notice: &EndNotice) -> wit3::End {
    wit3::End {
        pid: notice.pid.to_string(),
        status: notice.status_str().to_owned(),
        outcome: notice.outcome_str().to_owned(),
        exit_code: notice.exit_code,
        error: notice.error.clone(),
        result: notice
            .result
            .as_ref()
            .map(|result| result.as_str().to_owned()),
    }
}

/// A wake as the 0.2.0 contract writes it. A 0.2.0 task makes no calls, so it is never woken
/// with an answer; a call it takes is a plain message to it, which it cannot answer.
pub(super) fn v2_wake(wake: Wake) -> wit2::Wake {
    match wake {
        Wake::Started => wit2::Wake::Started,
        Wake::Slept => wit2::Wake::Slept,
        Wake::Timeout | Wake::Replied(..) => wit2::Wake::Timeout,
        Wake::Entry(Entry::Message { sender, body, .. }) => wit2::Wake::Message(wit2::Message {
            sender: sender.map(|pid| pid.to_string()),
            body,
        }),
        Wake::Entry(Entry::Down(notice)) => wit2::Wake::Down(v2_end(&notice)),
        Wake::Entry(Entry::LinkedExit(notice)) => wit2::Wake::LinkedExit(v2_end(&notice)),
    }
}

/// What a 0.2.0 step asked for.
pub(super) fn v2_next(next: wit2::Next) -> Next {
    match next {
        wit2::Next::Sleep(ms) => Next::Sleep(ms),
        wit2::Next::Receive(ms) => Next::Receive(ms),
        wit2::Next::Done(code) => Next::Done(code, None),
        wit2::Next::Failed(message) => Next::Failed(message),
    }
}

/// A wake as the 0.3.0 contract writes it.
pub(super) fn v3_wake(wake: Wake) -> wit3::Wake {
    match wake {
        Wake::Started => wit3::Wake::Started,
        Wake::Slept => wit3::Wake::Slept,
        Wake::Timeout => wit3::Wake::Timeout,
        Wake::Entry(Entry::Message {
            sender,
            body,
            reply_to,
        }) => wit3::Wake::Message(wit3::Message {
            sender: sender.map(|pid| pid.to_string()),
            body,
            reply_to: match reply_to {
                Some(ReplyTo::Ticket(ticket)) => Some(ticket),
                // Taken from the mailbox, a call's caller has become a ticket.
                Some(ReplyTo::Caller(_)) | None => None,
            },
        }),
        Wake::Entry(Entry::Down(notice)) => wit3::Wake::Down(v3_end(&notice)),
        Wake::Entry(Entry::LinkedExit(notice)) => wit3::Wake::LinkedExit(v3_end(&notice)),
        Wake::Replied(ticket, reply) => wit3::Wake::Replied((
            ticket,
            match reply {
                Reply::Answered(body) => wit3::Reply::Answered(body),
                Reply::Ended(notice) => wit3::Reply::Ended(v3_end(&notice)),
                Reply::Timeout => wit3::Reply::Timeout,
            },
        )),
    }
}

/// What a 0.3.0 step asked for; a result past `max_result_bytes`, or not JSON, fails the task
/// (a result is never cut).
pub(super) fn v3_next(next: wit3::Next, max_result_bytes: usize) -> Result<Next, TaskEnd> {
    Ok(match next {
        wit3::Next::Sleep(ms) => Next::Sleep(ms),
        wit3::Next::Receive(ms) => Next::Receive(ms),
        wit3::Next::Await(ticket) => Next::Await(ticket),
        wit3::Next::Failed(message) => Next::Failed(message),
        wit3::Next::Done(wit3::Done { exit_code, result }) => {
            let result = match result {
                None => None,
                Some(text) if text.len() > max_result_bytes => {
                    return Err(TaskEnd::failed(
                        Outcome::ResultTooLarge,
                        format!(
                            "the task returned a result of {} bytes; the host keeps at most {} \
                             (--max-result-bytes)",
                            text.len(),
                            max_result_bytes
                        ),
                    ));
                }
                Some(text) => Some(JsonText::parse(text).map_err(|error| {
                    TaskEnd::failed(
                        Outcome::BadResult,
                        format!("the task returned a result that is not JSON: {error}"),
                    )
                })?),
            };
            Next::Done(exit_code, result)
        }
    })
}
