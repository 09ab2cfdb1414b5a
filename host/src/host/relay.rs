//! A call made through one host of a cluster to a task another host holds: relayed over HTTP
//! to the holder's own `POST /api/tasks/{pid}/calls`, at the address it advertises, and its
//! answer relayed back. The store carries messages one way (commands to the host that holds a
//! task); an answer is awaited by whoever called, so the call goes where the task is.
//!
//! A relayed request says so (`X-Http-Spawn-Relayed`): the holder answers it itself and never
//! relays it again, so a task that moves meanwhile cannot send a call around the cluster. A
//! holder that cannot be reached answers `503` (nothing was sent); one whose connection breaks
//! after the call went out died with the call: the caller is told the task ended `host_lost`
//! (its record will say how it goes on: a rerun elsewhere knows nothing of the call). A holder
//! alive but slower than the call's timeout (and two seconds) is a `timeout`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::actor::{EndNotice, SendError};
use crate::model::{Outcome, Pid, Status};

/// The header that marks a relayed call.
pub const RELAYED: &str = "x-http-spawn-relayed";

/// How long the holder has to take the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time for the holder's answer beyond the call's own timeout: its `504` after the timeout
/// must still reach here.
const ANSWER_SLACK: Duration = Duration::from_secs(2);

/// What came of a relayed call.
#[derive(Debug)]
pub(super) enum Relayed {
    Answered(String),
    Ended(EndNotice),
    Timeout,
    NotSent(SendError),
}

/// Why a relayed call brought no answer from the holder.
enum Failure {
    /// The request never went out (no connection): nothing reached the task.
    NotSent(String),
    /// It went out, and the connection broke before the answer: the holder is gone.
    Broken(String),
    /// No answer within the call's timeout and the slack: the holder is alive but slow.
    NoAnswer,
    /// The answer is larger than any answer can be.
    TooLarge,
}

/// Relays the call `body` for `pid` to the host at `address`, with `token` (this host's first
/// API token, which a cluster's hosts share) when it has one, to be answered within `timeout`;
/// an answer's body is read up to `max_answer_bytes`.
pub(super) async fn relay_call(
    address: &str,
    token: Option<&str>,
    pid: Pid,
    body: String,
    timeout: Duration,
    max_answer_bytes: usize,
) -> Relayed {
    let path = format!("/api/tasks/{pid}/calls?timeout={}", timeout.as_secs_f64());
    match exchange(address, token, &path, body, timeout, max_answer_bytes).await {
        Ok((status, text)) => answer_of(pid, status, &text),
        Err(Failure::NotSent(why)) => {
            tracing::warn!(%pid, address, %why, "a call could not be relayed to the task's host");
            Relayed::NotSent(SendError::Unavailable)
        }
        Err(Failure::Broken(why)) => {
            tracing::warn!(%pid, address, %why, "the task's host was lost during a relayed call");
            Relayed::Ended(host_lost(pid))
        }
        Err(Failure::NoAnswer) => Relayed::Timeout,
        Err(Failure::TooLarge) => {
            tracing::warn!(%pid, address, "a relayed call's answer was larger than any can be");
            Relayed::NotSent(SendError::Unavailable)
        }
    }
}

/// One request to the holder: its status and body, or why there was none.
async fn exchange(
    address: &str,
    token: Option<&str>,
    path: &str,
    body: String,
    timeout: Duration,
    max_answer_bytes: usize,
) -> Result<(StatusCode, String), Failure> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| Failure::NotSent("no connection within 2 s".to_owned()))?
        .map_err(|error| Failure::NotSent(error.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| Failure::NotSent(error.to_string()))?;
    // Driven beside the request, and stopped with it, however this future ends.
    let driving = AbortOnDrop(tokio::spawn(connection));
    let mut request = Request::post(path)
        .header(header::HOST, address)
        .header(header::CONTENT_TYPE, "application/json")
        .header(RELAYED, "1");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Body::from(body))
        .map_err(|error| Failure::NotSent(error.to_string()))?;
    let answer = tokio::time::timeout(timeout + ANSWER_SLACK, async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| Failure::Broken(error.to_string()))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), max_answer_bytes)
            .await
            .map_err(|_| Failure::TooLarge)?;
        Ok::<_, Failure>((status, String::from_utf8_lossy(&bytes).into_owned()))
    })
    .await;
    drop(driving);
    answer.map_err(|_| Failure::NoAnswer)?
}

/// Asks host `name`, at `address`, to drain itself (`POST /api/cluster/nodes/{name}/drain`),
/// with the admin `token` the request here carried: its status and body, or why there was none.
pub(super) async fn relay_drain(
    address: &str,
    name: &str,
    token: Option<&str>,
) -> Result<(StatusCode, String), String> {
    let path = format!("/api/cluster/nodes/{name}/drain");
    exchange(
        address,
        token,
        &path,
        String::new(),
        DRAIN_TIMEOUT,
        64 << 10,
    )
    .await
    .map_err(|failure| match failure {
        Failure::NotSent(why) | Failure::Broken(why) => why,
        Failure::NoAnswer => "no answer in time".to_owned(),
        Failure::TooLarge => "an answer too large".to_owned(),
    })
}

/// How long a drained host may take to answer: it checkpoints its tasks first.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Aborts the task it holds when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The holder's answer as this host gives it.
fn answer_of(pid: Pid, status: StatusCode, text: &str) -> Relayed {
    let json = || serde_json::from_str::<Value>(text).unwrap_or_default();
    match status {
        StatusCode::OK => Relayed::Answered(text.to_owned()),
        StatusCode::GATEWAY_TIMEOUT => {
            let body = json();
            match body["reason"].as_str() {
                Some("ended") => Relayed::Ended(EndNotice::from_json(pid, &body["ended"])),
                _ => Relayed::Timeout,
            }
        }
        StatusCode::NOT_FOUND => Relayed::NotSent(SendError::NoSuchProcess),
        StatusCode::PAYLOAD_TOO_LARGE => Relayed::NotSent(SendError::TooLarge),
        StatusCode::TOO_MANY_REQUESTS => Relayed::NotSent(SendError::MailboxFull),
        // Ended, or moved on to another host since: its message says which.
        StatusCode::CONFLICT if text.contains("has ended") => Relayed::NotSent(SendError::Ended),
        StatusCode::CONFLICT => Relayed::NotSent(SendError::Elsewhere),
        other => {
            tracing::warn!(%pid, status = %other, "a relayed call was refused by the task's host");
            Relayed::NotSent(SendError::Unavailable)
        }
    }
}

/// The task's host was lost while it held the call.
fn host_lost(pid: Pid) -> EndNotice {
    let mut notice = EndNotice::unknown(pid);
    notice.status = Some(Status::Failed);
    notice.outcome = Some(Outcome::HostLost);
    notice.error = Some("the host running the task was lost before it answered the call".into());
    notice
}
