//! Waiting for a task's end over HTTP: `GET /api/tasks/{pid}/result?wait=N` long-polls, and a
//! submission with `Prefer: wait=N` (RFC 7240) answers with the task's end if it comes within
//! the wait. A wait holds no thread, and a client that goes away leaves nothing behind (see
//! `Host::await_end`); both are bounded by `--max-wait-secs`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::actors::task_pid;
use super::error::{AnyRoute, ApiError, ErrorBody, RETRY_AFTER_SECS};
use crate::model::{JsonText, Outcome, Pid, Status, TaskRecord};

/// How a task ended, or that it has not yet.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct TaskResult {
    #[schema(value_type = String)]
    pid: Pid,
    /// `exited`, `failed` or `killed` once it has ended; else `spawned` or `running`.
    status: Status,
    /// How it ended (`exit`, `trap`, `killed`, `deadline_exceeded`, ...), once it has.
    outcome: Option<Outcome>,
    /// Its exit code, when it exited.
    exit_code: Option<i32>,
    /// Why it failed, when it did.
    error: Option<String>,
    /// What it returned with its exit code, as the JSON it gave; `null` when it returned
    /// nothing, and until it has ended.
    #[schema(value_type = Option<Object>)]
    result: Option<JsonText>,
}

impl TaskResult {
    fn of(record: &TaskRecord) -> Self {
        Self {
            pid: record.pid,
            status: record.status,
            outcome: record.outcome,
            exit_code: record.exit_code,
            error: record.error.clone(),
            result: record.result.clone(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitParams {
    /// Seconds to wait for the task's end, 0 (the default: answer at once) to
    /// `--max-wait-secs` (60).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u32>,
}

/// How a task ended: at once, or once it ends within `wait` seconds.
///
/// `200` with the end once the task has ended; if it has not within the wait, `202` with how it
/// stands and `Retry-After`, for the client to ask again. The wait holds no thread on the
/// host, reaches a task on any host of a cluster, and ends with the client's connection.
#[utoipa::path(get, path = "/api/tasks/{pid}/result", tag = "tasks",
    params(("pid" = String, Path, description = "The task's pid, or `name:<name>`"), WaitParams),
    responses(
        (status = 200, description = "The task has ended", body = TaskResult),
        (status = 202, description = "Not ended within the wait", body = TaskResult,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again"))),
        (status = 400, description = "A bad `wait`", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        AnyRoute))]
pub(super) async fn task_result(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<WaitParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let max = state.limits.max_wait_secs;
    let bad_wait = || ApiError::BadRequest(format!("wait must be 0 to {max} seconds"));
    let Query(params) = params.map_err(|_| bad_wait())?;
    let wait = params.wait.unwrap_or(0);
    if wait > max {
        return Err(bad_wait());
    }
    let (pid, id) = task_pid(&state, path).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(wait));
    let record = state
        .host
        .await_end(id, deadline)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task with pid {pid:?}")))?;
    Ok(answer(&record))
}

/// `200` with the end of a task that has ended; `202`, with `Retry-After`, for one that has not.
fn answer(record: &TaskRecord) -> Response {
    let body = Json(TaskResult::of(record));
    if record.status.is_terminal() {
        return (StatusCode::OK, body).into_response();
    }
    (
        StatusCode::ACCEPTED,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        body,
    )
        .into_response()
}

/// The `Prefer` header (RFC 7240).
static PREFER: HeaderName = HeaderName::from_static("prefer");

/// The `Preference-Applied` header (RFC 7240).
pub(super) static PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The seconds a request's `Prefer: wait=N` asks for, at most `max`; none when it asks for no
/// wait this host can give (no such preference, one that is not a whole number of seconds, or
/// waits switched off with `--max-wait-secs 0`). As RFC 7240 has it, a preference the host
/// cannot read is ignored, not refused.
pub(super) fn preferred_wait(headers: &HeaderMap, max: u32) -> Option<u32> {
    if max == 0 {
        return None;
    }
    headers
        .get_all(&PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|preference| {
            // `wait=10`, perhaps with parameters after a `;`, the value perhaps quoted.
            let preference = preference.split(';').next()?;
            let (name, value) = preference.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let value = value.trim().trim_matches('"');
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Past u32 is past any maximum.
            Some(value.parse::<u32>().unwrap_or(u32::MAX).min(max))
        })
}

/// Waits up to `wait` seconds for `pid`, just accepted, to end: its answer (`200`, with its
/// end) if it did, none if it did not (the caller answers `202` as without the preference).
/// The store failing meanwhile is no failure of the submission, which was accepted: it is
/// answered `202` too.
pub(super) async fn waited(state: &AppState, pid: Pid, wait: u32) -> Option<Response> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(wait));
    let record = match state.host.await_end(pid, deadline).await {
        Ok(Some(record)) if record.status.is_terminal() => record,
        Ok(_) => return None,
        Err(error) => {
            tracing::debug!(pid = %pid, %error, "a submission's wait for its task ended early");
            return None;
        }
    };
    let mut response = (StatusCode::OK, Json(TaskResult::of(&record))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location(pid));
    headers.insert(PREFERENCE_APPLIED.clone(), preference_applied(wait));
    Some(response)
}

/// `/api/tasks/{pid}`, as a header.
pub(super) fn location(pid: Pid) -> HeaderValue {
    HeaderValue::from_str(&format!("/api/tasks/{pid}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/api/tasks"))
}

/// `Preference-Applied: wait=N`.
pub(super) fn preference_applied(wait: u32) -> HeaderValue {
    HeaderValue::from_str(&format!("wait={wait}"))
        .unwrap_or_else(|_| HeaderValue::from_static("wait"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                &PREFER,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn a_wait_preference_is_read_as_rfc_7240_writes_it() {
        assert_eq!(preferred_wait(&prefer(&["wait=10"]), 60), Some(10));
        assert_eq!(
            preferred_wait(&prefer(&["respond-async, wait=5"]), 60),
            Some(5)
        );
        assert_eq!(
            preferred_wait(&prefer(&["handling=lenient", "Wait = \"7\""]), 60),
            Some(7)
        );
        assert_eq!(preferred_wait(&prefer(&["wait=10; foo=bar"]), 60), Some(10));
        // Held to the host's maximum, whatever is asked.
        assert_eq!(preferred_wait(&prefer(&["wait=600"]), 60), Some(60));
        assert_eq!(
            preferred_wait(&prefer(&["wait=99999999999999"]), 60),
            Some(60)
        );
        assert_eq!(preferred_wait(&prefer(&["wait=0"]), 60), Some(0));
    }

    #[test]
    fn a_preference_the_host_cannot_read_is_ignored() {
        assert_eq!(preferred_wait(&HeaderMap::new(), 60), None);
        assert_eq!(preferred_wait(&prefer(&["respond-async"]), 60), None);
        assert_eq!(preferred_wait(&prefer(&["wait=-1"]), 60), None);
        assert_eq!(preferred_wait(&prefer(&["wait=1.5"]), 60), None);
        assert_eq!(preferred_wait(&prefer(&["wait="]), 60), None);
        assert_eq!(preferred_wait(&prefer(&["waiting=3"]), 60), None);
        // Waits switched off.
        assert_eq!(preferred_wait(&prefer(&["wait=10"]), 0), None);
    }
}
