//! Calling a task over HTTP: `POST /api/tasks/{pid}/calls` puts the body into the task's
//! mailbox as a call and answers with the task's reply, as Erlang's `gen_server:call` does
//! between processes.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::actors::{message_text, sent_error, task_pid};
use super::error::{AnyRoute, ErrorBody};
use super::{ApiError, AppState};
use crate::actor::EndNotice;
use crate::host::{CallFailed, RELAYED};
use crate::model::{JsonText, Pid};

/// How long a call waits for its answer when the request does not say, in seconds (at most
/// `--max-wait-secs`).
const DEFAULT_CALL_TIMEOUT_SECS: f64 = 5.0;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct CallParams {
    /// Seconds to wait for the answer (fractions allowed), more than 0 and at most
    /// `--max-wait-secs` (60); 5 by default.
    #[param(minimum = 0, maximum = 60)]
    timeout: Option<f64>,
}

/// How a task ended, as a call that it did not answer reports it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CalleeEnd {
    /// `exited`, `failed` or `killed`; `unknown` when the host does not know the task.
    status: &'static str,
    /// How it ended: `exit`, `trap`, `killed`, ...; `no_such_process` when unknown.
    outcome: &'static str,
    exit_code: Option<i32>,
    error: Option<String>,
    #[schema(value_type = Option<Object>)]
    result: Option<JsonText>,
}

impl CalleeEnd {
    fn of(notice: &EndNotice) -> Self {
        Self {
            status: notice.status_str(),
            outcome: notice.outcome_str(),
            exit_code: notice.exit_code,
            error: notice.error.clone(),
            result: notice.result.clone(),
        }
    }
}

/// A call that brought no answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Unanswered {
    /// What happened, for people.
    error: String,
    #[schema(value_type = String, example = "6f1c2a9e-1")]
    pid: Pid,
    /// `ended`: the task ended before it answered; `timeout`: no answer within the timeout.
    reason: &'static str,
    /// How the task ended, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<CalleeEnd>,
}

/// Call a task and wait for its answer.
///
/// The body, any JSON value, reaches the task as the next entry of its mailbox, as a message
/// that asks for an answer (its `reply-to`); the task answers with the `reply` host call
/// (`ctx.reply` in the SDK). `200` with the answer as the body: as JSON when it is JSON, else
/// as text. `504` when the task ends before it answers (with how it ended) or does not answer
/// within `timeout`; an answer that comes later is dropped and counted
/// (`http_spawn_call_replies_late_total`). A task built against 0.2.0 of the worker contract
/// takes a call as a plain message and cannot answer it. In a cluster, a call through any
/// host reaches the task on the host that holds it (relayed over HTTP); if that host dies
/// before the task answers, `504` with the outcome `host_lost`; a task still waiting in the
/// shared queue answers no call (`503`). The wait holds no thread, and a client that goes away
/// leaves nothing behind.
#[utoipa::path(post, path = "/api/tasks/{pid}/calls", tag = "actors",
    params(("pid" = String, Path, description = "The task's pid, or `name:<name>`"), CallParams),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "The call: any JSON value, at most --max-message-bytes"),
    responses(
        (status = 200, description = "The task's answer, as it gave it"),
        (status = 400, description = "The body is not JSON, or a bad `timeout`", body = ErrorBody),
        (status = 404, description = "No such task, or no live task holds that name", body = ErrorBody),
        (status = 409, description = "The task has ended (or moved to another host meanwhile)",
            body = ErrorBody),
        (status = 413, description = "The call is larger than --max-message-bytes", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 429, description = "The task's mailbox is full", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
        (status = 503, description = "The task waits in the cluster's shared queue, or the store \
            cannot say which host holds it", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
        (status = 504, description = "No answer: the task ended first (its host lost, too), or \
            the timeout ran out", body = Unanswered),
        AnyRoute))]
pub(super) async fn post_call(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<CallParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let max = state.limits.max_wait_secs;
    if max == 0 {
        return Err(ApiError::Forbidden(
            "this host lets no request wait (--max-wait-secs 0), and a call waits for its answer"
                .into(),
        ));
    }
    let bad_timeout = || {
        ApiError::BadRequest(format!(
            "timeout must be a number of seconds above 0 and at most {max}"
        ))
    };
    let Query(params) = params.map_err(|_| bad_timeout())?;
    let timeout = params
        .timeout
        .unwrap_or(DEFAULT_CALL_TIMEOUT_SECS.min(f64::from(max)));
    if !(timeout > 0.0 && timeout <= f64::from(max)) {
        return Err(bad_timeout());
    }
    let (raw, pid) = task_pid(&state, path).await?;
    let limit = state.limits.max_message_bytes;
    let text = message_text(&headers, body, limit, "call")?;
    let timeout = Duration::from_secs_f64(timeout);
    let relayed = headers.contains_key(RELAYED);
    match state.host.call_async(pid, text, timeout, relayed).await {
        Ok(answer) => Ok(answered(answer)),
        Err(CallFailed::NotSent(error)) => Err(sent_error(error, &raw, pid, limit)),
        Err(CallFailed::Ended(notice)) => Ok(unanswered(Unanswered {
            error: format!(
                "task {pid} ended ({}) before it answered the call",
                notice.describe()
            ),
            pid,
            reason: "ended",
            ended: Some(CalleeEnd::of(&notice)),
        })),
        Err(CallFailed::Timeout) => Ok(unanswered(Unanswered {
            error: format!(
                "task {pid} did not answer the call within {} s",
                timeout.as_secs_f64()
            ),
            pid,
            reason: "timeout",
            ended: None,
        })),
    }
}

/// `200` with the answer: JSON when it is JSON, else text.
fn answered(answer: String) -> Response {
    let json = serde_json::from_str::<serde::de::IgnoredAny>(&answer).is_ok();
    let content_type = if json {
        HeaderValue::from_static("application/json")
    } else {
        HeaderValue::from_static("text/plain; charset=utf-8")
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from(answer),
    )
        .into_response()
}

fn unanswered(body: Unanswered) -> Response {
    (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
}
