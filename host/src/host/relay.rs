//! A call made through one host of a cluster to a task another host holds: relayed over HTTP
//! to the holder's own `POST /api/tasks/{pid}/calls`, at the address it advertises, and its
//! answer relayed back. The store carries messages one way (commands to the host that holds a
//! task); an answer is awaited by whoever called, so the call goes where the task is.
//!
//! A relayed request says so (`X-Http-Spawn-Relayed`): the holder answers it itself and never
//! relays it again, so a task that moves meanwhile cannot send a call around the cluster. A
//! holder that cannot be reached, or dies before it answers, leaves the call with its task's
//! host lost: the caller is told the task ended `host_lost` (its record will say how it goes
//! on: a rerun elsewhere knows nothing of the call).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::actor::{EndNotice, SendError};
use crate::model::{JsonText, Outcome, Pid, Status};

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

/// Relays the call `body` for `pid` to the host at `address`, with `token` (this host's first
/// API token, which a cluster's hosts share) when it has one, to be answered within `timeout`.
pub(super) async fn relay_call(
    address: &str,
    token: Option<&str>,
    pid: Pid,
    body: String,
    timeout: Duration,
) -> Relayed {
    match exchange(address, token, pid, body, timeout).await {
        Ok((status, text)) => answer_of(pid, status, &text),
        Err(why) => {
            tracing::warn!(%pid, address, %why, "a call relayed to the task's host got no answer");
            Relayed::Ended(host_lost(pid))
        }
    }
}

/// One request to the holder: its status and body, or why there was none.
async fn exchange(
    address: &str,
    token: Option<&str>,
    pid: Pid,
    body: String,
    timeout: Duration,
) -> Result<(StatusCode, String), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "no connection within 2 s".to_owned())?
        .map_err(|error| error.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    let driving = tokio::spawn(connection);
    let mut request = Request::post(format!(
        "/api/tasks/{pid}/calls?timeout={}",
        timeout.as_secs_f64()
    ))
    .header(header::HOST, address)
    .header(header::CONTENT_TYPE, "application/json")
    .header(RELAYED, "1");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Body::from(body))
        .map_err(|error| error.to_string())?;
    let answer = tokio::time::timeout(timeout + ANSWER_SLACK, async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
            .await
            .map_err(|error| error.to_string())?;
        Ok::<_, String>((status, String::from_utf8_lossy(&bytes).into_owned()))
    })
    .await;
    driving.abort();
    answer.map_err(|_| "no answer in time".to_owned())?
}

/// The holder's answer as this host gives it.
fn answer_of(pid: Pid, status: StatusCode, text: &str) -> Relayed {
    let json = || serde_json::from_str::<Value>(text).unwrap_or_default();
    match status {
        StatusCode::OK => Relayed::Answered(text.to_owned()),
        StatusCode::GATEWAY_TIMEOUT => {
            let body = json();
            match body["reason"].as_str() {
                Some("ended") => Relayed::Ended(notice_of(pid, &body["ended"])),
                _ => Relayed::Timeout,
            }
        }
        StatusCode::NOT_FOUND => Relayed::NotSent(SendError::NoSuchProcess),
        StatusCode::PAYLOAD_TOO_LARGE => Relayed::NotSent(SendError::TooLarge),
        StatusCode::TOO_MANY_REQUESTS => Relayed::NotSent(SendError::MailboxFull),
        // Ended, or moved on to another host since.
        StatusCode::CONFLICT => Relayed::NotSent(SendError::Elsewhere),
        other => {
            tracing::warn!(%pid, status = %other, "a relayed call was refused by the task's host");
            Relayed::NotSent(SendError::Unavailable)
        }
    }
}

/// The end a holder's `504` reports.
fn notice_of(pid: Pid, ended: &Value) -> EndNotice {
    let text = |field: &str| ended[field].as_str().map(str::to_owned);
    let mut notice = EndNotice::unknown(pid);
    notice.status = text("status").as_deref().and_then(Status::parse);
    notice.outcome = text("outcome").as_deref().and_then(Outcome::parse);
    notice.exit_code = ended["exit_code"]
        .as_i64()
        .and_then(|code| i32::try_from(code).ok());
    notice.error = text("error");
    notice.result = match &ended["result"] {
        Value::Null => None,
        result => JsonText::parse(result.to_string()).ok(),
    };
    notice
}

/// The task's host was lost while it held the call.
fn host_lost(pid: Pid) -> EndNotice {
    let mut notice = EndNotice::unknown(pid);
    notice.status = Some(Status::Failed);
    notice.outcome = Some(Outcome::HostLost);
    notice.error = Some("the host running the task was lost before it answered the call".into());
    notice
}
