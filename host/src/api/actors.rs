//! Tasks as actors over HTTP: a message into a task's mailbox, and the names tasks register.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{AnyRoute, ErrorBody, RETRY_AFTER_SECS};
use super::tasks::{json_body, task_path};
use super::{ApiError, AppState};
use crate::actor::SendError;
use crate::model::Pid;

/// The answer to a message put in a mailbox.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Delivered {
    /// The receiving task.
    #[schema(value_type = String, example = "6f1c2a9e-1")]
    pid: Pid,
    /// Bytes of the message.
    bytes: usize,
}

/// A registered name and the live task holding it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Named {
    name: String,
    #[schema(value_type = String, example = "6f1c2a9e-1")]
    pid: Pid,
}

/// Every registered name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Names {
    names: Vec<Named>,
}

/// The task a `{pid}` path segment names: a pid, or `name:<name>` for the live task holding
/// that name. Anything else names no task (404).
pub(super) async fn task_pid(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<(String, Pid), ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::NotFound("no task at that path".into()))?;
    if !raw.starts_with("name:") {
        return task_path(Ok(Path(raw)));
    }
    match state.host.resolve_async(&raw).await {
        Ok(pid) => Ok((raw, pid)),
        Err(unresolved) => Err(ApiError::NotFound(unresolved.to_string())),
    }
}

/// Put a message in a task's mailbox.
///
/// The body, any JSON value, reaches the task as the next entry of its mailbox, with no
/// sender: a task waiting in `receive` wakes at once; others find it when they next receive.
/// Messages from one client to one task arrive in the order they were accepted. A full mailbox
/// refuses with `429`; nothing is dropped.
#[utoipa::path(post, path = "/api/tasks/{pid}/messages", tag = "actors",
    params(("pid" = String, Path, description = "The task's pid, or `name:<name>`")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "The message: any JSON value, at most --max-message-bytes"),
    responses(
        (status = 202, description = "In the task's mailbox", body = Delivered),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "No such task, or no live task holds that name", body = ErrorBody),
        (status = 409, description = "The task has ended", body = ErrorBody),
        (status = 413, description = "The message is larger than --max-message-bytes", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 429, description = "The task's mailbox is full (in a cluster: with as many \
            messages again waiting for it in the store)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
        AnyRoute))]
pub(super) async fn post_message(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (raw, pid) = task_pid(&state, path).await?;
    let limit = state.limits.max_message_bytes;
    let text = message_text(&headers, body, limit, "message")?;
    let bytes = text.len();
    match state.host.send_async(pid, text).await {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(Delivered { pid, bytes })).into_response()),
        Err(error) => Err(sent_error(error, &raw, pid, limit)),
    }
}

/// A message's (or a call's, as `what` says) body: JSON sent as JSON, at most `limit` bytes.
pub(super) fn message_text(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<String, ApiError> {
    let body = json_body(headers, body, limit)?;
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    std::str::from_utf8(&body)
        .ok()
        .filter(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest(format!("the {what} must be JSON")))
}

/// The answer to a message (or a call) that did not reach task `pid` (asked for as `raw`).
pub(super) fn sent_error(error: SendError, raw: &str, pid: Pid, limit: usize) -> ApiError {
    match error {
        SendError::NoSuchProcess | SendError::BadPid => {
            ApiError::NotFound(format!("no task with pid {raw:?}"))
        }
        SendError::Ended => {
            ApiError::Conflict(format!("task {pid} has ended: nobody reads its mailbox"))
        }
        SendError::TooLarge => ApiError::PayloadTooLarge { limit },
        SendError::MailboxFull => ApiError::Full {
            message: format!("the mailbox of task {pid} is full; retry later"),
            retry_after: RETRY_AFTER_SECS,
        },
        SendError::Unavailable => ApiError::Unavailable {
            message: format!(
                "task {pid} cannot be reached now: it runs on another host and the task store \
                 cannot carry this there, or it waits in the cluster's shared queue; retry later"
            ),
            retry_after: RETRY_AFTER_SECS,
        },
        SendError::Elsewhere => ApiError::Conflict(format!(
            "task {pid} is held by another host of the cluster now, which a relayed call does \
             not follow; call through any host again"
        )),
    }
}

/// List registered names.
///
/// Names that live tasks registered for themselves (the `register` host call), sorted. A name
/// is released when its task ends.
#[utoipa::path(get, path = "/api/names", tag = "actors",
    responses((status = 200, description = "Every registered name", body = Names), AnyRoute))]
pub(super) async fn list_names(State(state): State<AppState>) -> Json<Names> {
    let names = state
        .host
        .names()
        .await
        .into_iter()
        .map(|(name, pid)| Named {
            name: name.to_string(),
            pid,
        })
        .collect();
    Json(Names { names })
}

/// Look up a name.
///
/// The live task holding `name`. Every `/api/tasks/{pid}` route also takes `name:<name>` in
/// place of the pid.
#[utoipa::path(get, path = "/api/names/{name}", tag = "actors",
    params(("name" = String, Path, description = "A registered name")),
    responses(
        (status = 200, description = "The task holding the name", body = Named),
        (status = 404, description = "No live task holds the name", body = ErrorBody),
        AnyRoute))]
pub(super) async fn get_name(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Named>, ApiError> {
    let Path(name) = path.map_err(|_| ApiError::NotFound("no name at that path".into()))?;
    let pid = state
        .host
        .resolve_async(&format!("name:{name}"))
        .await
        .map_err(|unresolved| ApiError::NotFound(unresolved.to_string()))?;
    Ok(Json(Named { name, pid }))
}
