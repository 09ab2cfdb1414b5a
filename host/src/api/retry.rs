//! Retrying ended tasks over HTTP: one by its pid, or many by filters (see `host::retry` for
//! what a retry runs and why asking twice runs nothing twice).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::actors::task_pid;
use super::error::{AnyRoute, ApiError, ErrorBody};
use super::tasks::{Spawned, json_body, spawn_error};
use super::{AppState, wait};
use crate::host::{MAX_BULK_RETRY, RetryError, RetryFilter, SpawnError};
use crate::model::{Outcome, Pid, Status};
use crate::store::StoreError;

/// Tasks a bulk retry runs again when its body names no `limit`.
const DEFAULT_BULK_LIMIT: usize = 100;

/// What a bulk retry matches (`POST /api/tasks/retry`): every filter given, newest first.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the body `parse_filter` reads, for the document"
)]
pub(super) struct RetryRequest {
    /// `failed`, `killed` or `exited`; `failed` when neither this nor `outcome` is given.
    #[schema(value_type = Option<Status>)]
    status: Option<String>,
    /// How the tasks ended, e.g. `out_of_fuel`.
    #[schema(value_type = Option<Outcome>)]
    outcome: Option<String>,
    worker: Option<String>,
    name: Option<String>,
    /// Only tasks that ended after this (RFC 3339).
    #[schema(format = DateTime)]
    ended_after: Option<String>,
    /// At most this many, 1 to 10,000 (100 when absent).
    #[schema(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// One task a bulk retry ran again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RetriedTask {
    /// The ended task.
    #[schema(value_type = String)]
    of: Pid,
    /// Its retry (the same as before, for a task retried already).
    #[schema(value_type = String)]
    pid: Pid,
}

/// One task a bulk retry could not run again, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RefusedRetry {
    #[schema(value_type = String)]
    of: Pid,
    error: String,
}

/// How a bulk retry went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct BulkRetried {
    /// How many tasks were retried (`pids.len()`).
    count: usize,
    /// The retries' pids, in the order of `retried`.
    #[schema(value_type = Vec<String>)]
    pids: Vec<Pid>,
    retried: Vec<RetriedTask>,
    /// Matching tasks that could not be retried (their worker is gone, or their limits no
    /// longer fit it).
    refused: Vec<RefusedRetry>,
    /// Why the retry stopped before every matching task was retried (the host is full or
    /// shutting down); absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

/// Run an ended task again.
///
/// Starts a new task from the ended task's stored submission (name, worker, duration, payload,
/// deadline, restart and loss policies, priority), on the worker's current version, now. The
/// new record's `retry_of` names the ended task. Idempotent: a task is retried at most once
/// per `--idempotency-ttl`, and asking again answers the same new pid; retry the retry to run
/// it once more.
#[utoipa::path(post, path = "/api/tasks/{pid}/retry", tag = "tasks",
    params(("pid" = String, Path, description = "The ended task's pid, or `name:<name>`")),
    responses(
        (status = 202, description = "The retry is accepted; `Location` names it", body = Spawned,
            headers(("Location" = String, description = "The retry's path"))),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has not ended, or a retry of it is being answered", body = ErrorBody),
        (status = 422, description = "Its worker is gone, or its limits no longer fit it",
            body = ErrorBody),
        (status = 429, description = "Every place and the queue are full", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
        AnyRoute))]
pub(super) async fn retry_task(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (_, of) = task_pid(&state, path).await?;
    let pid = retry(&state, of).await.map_err(|error| match error {
        RetryError::NotFound(_) => ApiError::NotFound(error.to_string()),
        RetryError::NotEnded { .. } => ApiError::Conflict(error.to_string()),
        RetryError::Spawn(error) => refused(error),
    })?;
    let record = state.host.get_async(pid).await?;
    let body = Spawned {
        pid,
        message: format!("Process {pid} runs task {of} again"),
        name: record.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
        status: record.map_or(Status::Spawned, |r| r.status),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, wait::location(pid));
    Ok(response)
}

/// Run ended tasks again, by filters.
///
/// Retries, as `POST /api/tasks/{pid}/retry` does, each ended task that matches every filter
/// given, newest first, up to `limit`. A task retried before is not run twice: its entry
/// names its first retry. Stops early, saying why, if the host fills or shuts down.
#[utoipa::path(post, path = "/api/tasks/retry", tag = "tasks", request_body = RetryRequest,
    responses(
        (status = 200, description = "How many were retried, with their pids", body = BulkRetried),
        (status = 400, description = "A bad filter", body = ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        AnyRoute))]
pub(super) async fn retry_tasks(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, state.limits.max_body_bytes)?;
    let filter = parse_filter(&body)?;
    let matching = state.host.ended_matching(&filter).await?;
    let mut answer = BulkRetried {
        count: 0,
        pids: Vec::new(),
        retried: Vec::new(),
        refused: Vec::new(),
        stopped: None,
    };
    for of in matching {
        match retry(&state, of).await {
            Ok(pid) => {
                answer.pids.push(pid);
                answer.retried.push(RetriedTask { of, pid });
            }
            // Pruned, or retried and ended meanwhile: nothing to say of it.
            Err(RetryError::NotFound(_) | RetryError::NotEnded { .. }) => {}
            Err(RetryError::Spawn(
                error @ (SpawnError::UnknownWorker(_)
                | SpawnError::TooLong { .. }
                | SpawnError::KeyInFlight),
            )) => answer.refused.push(RefusedRetry {
                of,
                error: error.to_string(),
            }),
            Err(RetryError::Spawn(error)) => {
                answer.stopped = Some(error.to_string());
                break;
            }
        }
    }
    answer.count = answer.pids.len();
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// Retries `of`, once its retry's acceptance is recorded: its pid. A retry of the same task
/// accepted at the same moment on another host of a cluster is answered as a repeat.
async fn retry(state: &AppState, of: Pid) -> Result<Pid, RetryError> {
    match state.host.retry(of).await?.recorded().await {
        Err(SpawnError::Store(StoreError::KeyTaken)) => {
            Ok(state.host.retry(of).await?.recorded().await?)
        }
        answer => Ok(answer?),
    }
}

/// A retry the host refused to accept: a stored submission that no longer fits its worker is
/// `422`, the rest as for a submission.
fn refused(error: SpawnError) -> ApiError {
    match error {
        SpawnError::UnknownWorker(_) | SpawnError::TooLong { .. } => {
            ApiError::Unprocessable(error.to_string())
        }
        error => spawn_error(error),
    }
}

/// Validates a bulk retry's body, with a message naming the field.
fn parse_filter(body: &[u8]) -> Result<RetryFilter, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let mut text = |field: &str| match fields.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad(format!("{field} must be a string"))),
    };
    let status = text("status")?
        .map(|name| {
            Status::parse(&name)
                .filter(|status| status.is_terminal())
                .ok_or_else(|| bad("status must be \"failed\", \"killed\" or \"exited\"".into()))
        })
        .transpose()?;
    let outcome = text("outcome")?
        .map(|name| {
            Outcome::parse(&name).ok_or_else(|| bad(format!("outcome {name:?} is not an outcome")))
        })
        .transpose()?;
    let worker = text("worker")?;
    let name = text("name")?;
    let ended_after =
        text("ended_after")?
            .map(|at| {
                crate::model::time::parse_rfc3339(&at).ok_or_else(|| {
                bad("ended_after must be an RFC 3339 date and time, e.g. \"2026-12-24T18:00:00Z\""
                    .into())
            })
            })
            .transpose()?;
    let limit = match fields.remove("limit") {
        None | Some(Value::Null) => DEFAULT_BULK_LIMIT,
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_BULK_RETRY).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "limit must be an integer from 1 to {MAX_BULK_RETRY}"
                ))
            })?,
    };
    Ok(RetryFilter {
        status,
        outcome,
        worker,
        name,
        ended_after,
        limit,
    })
}
