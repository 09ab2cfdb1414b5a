//! Server-Sent Events: one task's (`/api/tasks/{pid}/events`) or every task's (`/api/events`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::actors::task_pid;
use super::error::{AnyRoute, ApiError, ErrorBody};
use crate::events::{StreamRefused, Subscription, exit_data};
use crate::host::Host;
use crate::model::{Pid, TaskEnd, TaskEvent, TaskRecord};
use crate::server::Peer;
use crate::store::Change;
use tokio::time::Instant;

/// An open event stream's state.
struct EventStream {
    subscription: Subscription,
    host: Arc<Host>,
    /// Only this task's events, and end after its exit; all tasks' otherwise.
    pid: Option<Pid>,
    /// Events to send before anything from the channel.
    queued: VecDeque<Event>,
    done: bool,
    /// How long it may go without an event before it ends.
    idle: std::time::Duration,
}

/// One event of a stream as it goes over the wire, for the document: its kind (the SSE
/// `event:` field) and its fields as JSON text (`data:`).
#[derive(utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the events `sse` writes, for the document"
)]
pub(super) struct StreamEvent {
    event: EventKind,
    /// The event's fields as a JSON object: for `state`, the task's record.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// What an event says happened; `lagged` tells a subscriber that fell behind how many it
/// skipped.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(
    dead_code,
    reason = "describes the events `sse` writes, for the document"
)]
pub(super) enum EventKind {
    State,
    Spawned,
    Started,
    Progress,
    Log,
    Restart,
    Exit,
    /// A message was put in the task's mailbox: `{pid, sender, bytes}` (sender null for HTTP).
    Message,
    /// A task this one monitors ended: `{pid, down, outcome}`.
    Down,
    /// A task linked to this one ended abnormally: `{pid, linked, outcome, trapped}`; when
    /// `trapped` is false the task is killed with the outcome `linked_exit`.
    LinkedExit,
    Lagged,
}

fn sse(kind: &str, data: &str) -> Event {
    Event::default().event(kind).data(data)
}

fn event_stream(stream: EventStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(stream, |mut stream| async move {
        if let Some(event) = stream.queued.pop_front() {
            return Some((Ok(event), stream));
        }
        if stream.done {
            return None;
        }
        let idle_until = Instant::now() + stream.idle;
        loop {
            let received = tokio::select! {
                received = stream.subscription.receiver.recv() => received,
                // The host is shutting down: end the stream so the server can stop.
                _ = stream.subscription.closed.wait_for(|closed| *closed) => return None,
                // Nothing for this stream in a long while: its place goes back (a client still
                // there connects again).
                () = tokio::time::sleep_until(idle_until) => return None,
            };
            match received {
                Ok(published) if stream.pid.is_none_or(|pid| pid == published.pid) => {
                    stream.done = stream.pid.is_some() && published.kind == "exit";
                    return Some((Ok(sse(published.kind, &published.data)), stream));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(skipped)) => {
                    // The skipped events may have held this task's exit: look at its record.
                    let record = match stream.pid {
                        Some(pid) => stream.host.get_async(pid).await.ok().flatten(),
                        None => None,
                    };
                    if let Some(record) = record
                        && record.status.is_terminal()
                    {
                        stream
                            .queued
                            .push_back(sse("exit", &exit_data(&record).to_string()));
                        stream.done = true;
                    }
                    let data = json!({"skipped": skipped}).to_string();
                    return Some((Ok(sse("lagged", &data)), stream));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// A place for a stream of `peer`'s, opened by the dashboard when the browser says the request
/// comes from the host's own page (and, on a host with tokens, the sign-in session carries it).
fn subscribe(
    state: &AppState,
    peer: Option<Extension<Peer>>,
    headers: &HeaderMap,
) -> Result<Subscription, ApiError> {
    let client = peer.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |peer| peer.0.0);
    let own_page = headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"same-origin"));
    let signed_in = state.api.is_none() || !headers.contains_key(header::AUTHORIZATION);
    state
        .host
        .subscribe(client, own_page && signed_in)
        .map_err(|refused| {
            ApiError::TooManyRequests(
                match refused {
                    StreamRefused::Full => "too many event streams are open; retry later",
                    StreamRefused::ClientFull => {
                        "this client holds its share of event streams \
                         (--max-subscribers-per-client); close one, or retry later"
                    }
                }
                .into(),
            )
        })
}

/// One task's events as Server-Sent Events: `state`, then `started`, `progress`, `log`,
/// `restart`, `message`, `down`, `linked_exit`, `exit`; the stream ends after `exit`.
#[utoipa::path(get, path = "/api/tasks/{pid}/events", tag = "events",
    params(("pid" = String, Path, description = "The task's pid")),
    responses(
        (status = 200, description = "An event stream; each event is one `StreamEvent`",
            content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 429, description = "Too many event streams are open", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
        AnyRoute))]
pub(super) async fn task_events(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    use futures_util::future::Either;
    let (pid, id) = task_pid(&state, path).await?;
    // Subscribe first, then read the record: nothing can happen unseen in between.
    let subscription = subscribe(&state, peer, &headers)?;
    let record = state
        .host
        .get_async(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task with pid {pid:?}")))?;
    let snapshot =
        serde_json::to_string(&record).map_err(|error| ApiError::Internal(error.to_string()))?;
    let mut queued = VecDeque::from([sse("state", &snapshot)]);
    let done = record.status.is_terminal();
    if done {
        queued.push_back(sse("exit", &exit_data(&record).to_string()));
    }
    if !done && !state.host.holds(id) {
        // Another host of the cluster runs it, or will: follow it in the shared store.
        let lines = state
            .host
            .logs_async(id)
            .await?
            .map_or(0, |logs| logs.lines.len());
        let followed = Followed {
            subscription,
            host: Arc::clone(&state.host),
            last: record,
            lines,
            queued,
            done,
            idle: state.limits.event_stream_idle,
            sent_at: Instant::now(),
        };
        return Ok(
            Sse::new(Either::Right(followed_stream(followed))).keep_alive(KeepAlive::default())
        );
    }
    let stream = EventStream {
        subscription,
        host: Arc::clone(&state.host),
        pid: Some(id),
        queued,
        done,
        idle: state.limits.event_stream_idle,
    };
    Ok(Sse::new(Either::Left(event_stream(stream))).keep_alive(KeepAlive::default()))
}

/// How often a stream of a task on another host reads its record from the shared store.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The stream of a task another host of the cluster runs: its events as the shared store
/// shows them, read every [`FOLLOW_INTERVAL`]. The same events as on the host that runs it,
/// but for `message`, `down` and `linked_exit`, which live in that host's memory only, and for
/// progress steps taken between two reads, which show as one.
struct Followed {
    /// Holds its place among the subscribers, and tells when the host shuts down.
    subscription: Subscription,
    host: Arc<Host>,
    last: TaskRecord,
    /// Log lines already sent.
    lines: usize,
    queued: VecDeque<Event>,
    done: bool,
    /// How long it may go without an event, and when it last sent one.
    idle: std::time::Duration,
    sent_at: Instant,
}

fn followed_stream(followed: Followed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(followed, |mut followed| async move {
        loop {
            if let Some(event) = followed.queued.pop_front() {
                followed.sent_at = Instant::now();
                return Some((Ok(event), followed));
            }
            if followed.done || followed.sent_at.elapsed() >= followed.idle {
                return None;
            }
            let mut closed = followed.subscription.closed.clone();
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_INTERVAL) => {},
                _ = closed.wait_for(|closed| *closed) => return None,
            }
            let (host, pid) = (&followed.host, followed.last.pid);
            let read = async {
                let record = host.get_async(pid).await?;
                let logs = host.logs_async(pid).await?;
                Ok::<_, crate::store::StoreError>((record, logs))
            }
            .await;
            let Ok((Some(record), logs)) = read else {
                // Unreadable for now (the store is unavailable), or pruned: try again, or end.
                if matches!(read, Ok((None, _))) {
                    return None;
                }
                continue;
            };
            followed.catch_up(record, logs);
        }
    })
}

impl Followed {
    /// Queues the events between the last record seen and `record`.
    fn catch_up(&mut self, record: TaskRecord, logs: Option<crate::model::TaskLogs>) {
        let pid = record.pid;
        let events = self.host.events();
        let mut changes = Vec::new();
        for attempt in record.attempts.iter().skip(self.last.attempts.len()) {
            if attempt.attempt >= record.attempt && record.status.is_terminal() {
                // The last attempt's own entry: its end is the `exit` below.
                continue;
            }
            changes.push(TaskEvent::Restarting {
                at: attempt.ended_at,
                fuel: record.fuel_consumed,
                end: TaskEnd {
                    status: attempt.status,
                    outcome: attempt.outcome,
                    exit_code: attempt.exit_code,
                    error: attempt.error.clone(),
                    result: None,
                },
                next_attempt: attempt.attempt + 1,
                ready_at: attempt.ended_at,
            });
        }
        if record.started_at != self.last.started_at
            && let Some(at) = record.started_at
        {
            changes.push(TaskEvent::Started {
                at,
                steps: record.steps,
                fuel: record.fuel_consumed,
            });
        }
        if let Some(logs) = logs
            && logs.lines.len() > self.lines
        {
            let fresh = logs.lines[self.lines..].to_vec();
            self.lines = logs.lines.len();
            changes.push(TaskEvent::Logs {
                lines: fresh,
                dropped_bytes: logs.dropped_bytes,
            });
        }
        if record.step != self.last.step && record.status == crate::model::Status::Running {
            changes.push(TaskEvent::Progress {
                step: record.step,
                steps: record.steps,
                fuel: record.fuel_consumed,
            });
        }
        for event in changes {
            for published in events.prepare(&Change::Event(pid, event)) {
                self.queued.push_back(sse(published.kind, &published.data));
            }
        }
        if record.status.is_terminal() {
            self.queued
                .push_back(sse("exit", &exit_data(&record).to_string()));
            self.done = true;
        }
        self.last = record;
    }
}

/// Every task's events as Server-Sent Events (`spawned` too), until the client leaves.
#[utoipa::path(get, path = "/api/events", tag = "events",
    responses(
        (status = 200, description = "An event stream; each event is one `StreamEvent`",
            content_type = "text/event-stream", body = StreamEvent),
        (status = 429, description = "Too many event streams are open", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
        AnyRoute))]
pub(super) async fn all_events(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = EventStream {
        subscription: subscribe(&state, peer, &headers)?,
        host: Arc::clone(&state.host),
        pid: None,
        queued: VecDeque::new(),
        done: false,
        idle: state.limits.event_stream_idle,
    };
    Ok(Sse::new(event_stream(stream)).keep_alive(KeepAlive::default()))
}
