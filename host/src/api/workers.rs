//! `/api/workers`: the registry's workers, and (admin) a new version or a rollback.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;

use super::AppState;
use super::admin::AdminRefusal;
use super::error::{AnyRoute, ApiError, ErrorBody};
use crate::config::FlowLimits;
use crate::host::PauseError;
use crate::registry::{InstallError, RollbackError, VersionSource, WorkerInfo};
use crate::runtime::LoadError;

/// `info` with whether its worker is paused here, and how many tasks wait for it.
async fn shown(state: &AppState, mut info: WorkerInfo) -> WorkerInfo {
    (info.paused, info.held) = state.host.worker_paused(&info.name);
    if let Ok((limits, set)) = state.host.worker_limits(&info.name) {
        info.max_running = limits.max_running;
        info.per_key_running = limits.per_key_running;
        info.rate = limits.rate.map(|rate| rate.text());
        info.limits_from = if set { "api" } else { "file" };
    }
    info.limited = state
        .host
        .worker_limited(&info.name)
        .await
        .map(|(running, waiting)| crate::registry::Limited { running, waiting });
    info
}

fn worker_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(name)| name)
        .map_err(|_| ApiError::NotFound("no worker at that path".into()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WorkerList {
    workers: Vec<WorkerInfo>,
}

/// `GET /api/workers`: every worker with its current and previous module versions.
#[utoipa::path(get, path = "/api/workers", tag = "workers",
    responses((status = 200, body = WorkerList,
        links(
            ("GetWorker" = (operation_id = "get_worker",
                parameters(("name" = "$response.body#/workers/0/name")))),
            ("InstallWorker" = (operation_id = "install_worker",
                parameters(("name" = "$response.body#/workers/0/name")))),
            ("RollbackWorker" = (operation_id = "rollback_worker",
                parameters(("name" = "$response.body#/workers/0/name")))))),
        AnyRoute))]
pub(super) async fn list_workers(State(state): State<AppState>) -> Json<WorkerList> {
    let mut workers = Vec::new();
    for info in state.host.workers().list() {
        workers.push(shown(&state, info).await);
    }
    Json(WorkerList { workers })
}

/// `GET /api/workers/{name}`.
#[utoipa::path(get, path = "/api/workers/{name}", tag = "workers",
    params(("name" = String, Path, description = "The worker's name", example = "default")),
    responses((status = 200, body = WorkerInfo),
        (status = 404, description = "No such worker", body = ErrorBody), AnyRoute))]
pub(super) async fn get_worker(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let name = worker_path(path)?;
    let info = state
        .host
        .workers()
        .get(Some(&name))
        .map_err(|unknown| ApiError::NotFound(unknown.to_string()))?
        .info();
    Ok(Json(shown(&state, info).await))
}

/// An upload's body as the document shows it: raw bytes, not a JSON array of them.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(
    dead_code,
    reason = "describes the body `install_worker` reads, for the document"
)]
pub(super) struct ModuleBytes(Vec<u8>);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct InstalledBody {
    /// False when the upload is the version already current.
    changed: bool,
    worker: WorkerInfo,
}

/// `PUT /api/workers/{name}` (admin): a new module version for the worker's new tasks,
/// published only once it compiled, fits the `worker` world and passed a smoke run.
#[utoipa::path(put, path = "/api/workers/{name}", tag = "workers",
    params(("name" = String, Path, description = "The worker's name", example = "default")),
    request_body(content((ModuleBytes = "application/wasm"),
            (ModuleBytes = "application/octet-stream")),
        description = "A WebAssembly component of the `worker` world"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Installed, or unchanged", body = InstalledBody),
        (status = 400, description = "Not a component", body = ErrorBody),
        AdminRefusal,
        (status = 413, description = "Over --max-module-bytes", body = ErrorBody),
        (status = 415, description = "Not sent as application/wasm (or application/octet-stream)",
            body = ErrorBody),
        (status = 422, description = "Refused by its checks", body = ErrorBody),
        AnyRoute))]
pub(super) async fn install_worker(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<InstalledBody>, ApiError> {
    let name = worker_path(path)?;
    if !is_wasm(&headers) {
        return Err(ApiError::UnsupportedBody(
            "the body must be a WebAssembly component, sent with Content-Type: \
             application/wasm"
                .into(),
        ));
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: state.limits.max_module_bytes,
        },
        _ => ApiError::BadRequest(rejection.body_text()),
    })?;
    let workers = Arc::clone(state.host.workers());
    // Compiling takes a while: off the async threads.
    let installed =
        tokio::task::spawn_blocking(move || workers.install(&name, &body, VersionSource::Upload))
            .await
            .map_err(|error| ApiError::Internal(format!("install task failed: {error}")))?;
    match installed {
        Ok(installed) => Ok(Json(InstalledBody {
            changed: installed.changed,
            worker: shown(&state, installed.worker).await,
        })),
        Err(InstallError::Unknown(error)) => Err(ApiError::NotFound(error.to_string())),
        Err(InstallError::Refused(error @ LoadError::NotComponent(_))) => {
            Err(ApiError::BadRequest(error.to_string()))
        }
        Err(InstallError::Refused(error)) => Err(ApiError::Unprocessable(error.to_string())),
        Err(InstallError::Store(error)) => Err(error.into()),
    }
}

/// Whether the request says its body is wasm: `application/wasm`, or the generic
/// `application/octet-stream` that `curl --data-binary` users reach for.
fn is_wasm(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|mime| {
            mime.eq_ignore_ascii_case("application/wasm")
                || mime.eq_ignore_ascii_case("application/octet-stream")
        })
}

/// `POST /api/workers/{name}/rollback` (admin): the previous version becomes current again.
#[utoipa::path(post, path = "/api/workers/{name}/rollback", tag = "workers",
    params(("name" = String, Path, description = "The worker's name", example = "default")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Rolled back", body = WorkerInfo),
        AdminRefusal,
        (status = 409, description = "No previous version", body = ErrorBody),
        AnyRoute))]
pub(super) async fn rollback_worker(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let name = worker_path(path)?;
    let workers = Arc::clone(state.host.workers());
    // The store keeps the change before it is answered: off the async threads.
    let rolled_back = tokio::task::spawn_blocking(move || workers.rollback(&name))
        .await
        .map_err(|error| ApiError::Internal(format!("rollback task failed: {error}")))?;
    let info = rolled_back.map_err(|error| match error {
        RollbackError::Unknown(_) => ApiError::NotFound(error.to_string()),
        RollbackError::NoPrevious(_) => ApiError::Conflict(error.to_string()),
        RollbackError::Store(error) => error.into(),
    })?;
    Ok(Json(shown(&state, info).await))
}

/// `POST /api/workers/{name}/pause` (admin): the worker's new tasks are accepted but do not
/// start, holding no place, until it is resumed; its running tasks go on. On every host of a
/// cluster, and across a restart.
#[utoipa::path(post, path = "/api/workers/{name}/pause", tag = "workers",
    params(("name" = String, Path, description = "The worker's name", example = "default")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Paused", body = WorkerInfo),
        AdminRefusal,
        (status = 404, description = "No such worker", body = ErrorBody),
        AnyRoute))]
pub(super) async fn pause_worker(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    set_paused(&state, path, true).await
}

/// `POST /api/workers/{name}/resume` (admin): the tasks a paused worker held start, in the
/// order they were held, as places free.
#[utoipa::path(post, path = "/api/workers/{name}/resume", tag = "workers",
    params(("name" = String, Path, description = "The worker's name", example = "default")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Resumed", body = WorkerInfo),
        AdminRefusal,
        (status = 404, description = "No such worker", body = ErrorBody),
        AnyRoute))]
pub(super) async fn resume_worker(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    set_paused(&state, path, false).await
}

async fn set_paused(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Json<WorkerInfo>, ApiError> {
    let name = worker_path(path)?;
    state
        .host
        .pause_worker(&name, paused)
        .map_err(|error| match error {
            PauseError::Unknown(_) => ApiError::NotFound(error.to_string()),
            PauseError::Store(error) => error.into(),
        })?;
    let worker = state
        .host
        .workers()
        .get(Some(&name))
        .map_err(|unknown| ApiError::NotFound(unknown.to_string()))?;
    Ok(Json(shown(state, worker.info()).await))
}

/// What `PUT /api/workers/{name}/limits` takes: each limit, or null (or left out) for none.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the body, which is read as JSON and checked by hand"
)]
pub(super) struct LimitsRequest {
    /// At most this many of the worker's tasks run at once (in a cluster, on all hosts
    /// together); at least 1.
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_running: Option<u32>,
    /// At most this many of its tasks of one `concurrency_key` run at once; at least 1.
    #[schema(minimum = 1, maximum = 1_000_000)]
    per_key_running: Option<u32>,
    /// At most this many starts per period (per key for tasks with one): `N/period`.
    #[schema(example = "100/1s")]
    rate: Option<String>,
}

/// `PUT /api/workers/{name}/limits` (admin): sets the worker's concurrency and rate limits,
/// all three at once (one left out or null: none), over those of its registry file. On every
/// host of a cluster, and across a restart. Tasks held that the new limits leave room for
/// start; tasks already running go on and are counted.
#[utoipa::path(put, path = "/api/workers/{name}/limits", tag = "workers",
    params(("name" = String, Path, description = "The worker's name", example = "default")),
    request_body = LimitsRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Set", body = WorkerInfo),
        (status = 400, description = "A bad field: the message names it", body = ErrorBody),
        AdminRefusal,
        (status = 404, description = "No such worker", body = ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        AnyRoute))]
pub(super) async fn set_limits(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let name = worker_path(path)?;
    let body = super::tasks::json_body(&headers, body, state.limits.max_body_bytes)?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::BadRequest(format!("invalid JSON: {error}")))?;
    let limits = FlowLimits::from_value(&value).map_err(ApiError::BadRequest)?;
    change_limits(&state, &name, Some(limits)).await
}

/// `DELETE /api/workers/{name}/limits` (admin): the worker's limits are its registry file's
/// again, on every host of a cluster.
#[utoipa::path(delete, path = "/api/workers/{name}/limits", tag = "workers",
    params(("name" = String, Path, description = "The worker's name", example = "default")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Back to the registry file's", body = WorkerInfo),
        AdminRefusal,
        (status = 404, description = "No such worker", body = ErrorBody),
        AnyRoute))]
pub(super) async fn unset_limits(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let name = worker_path(path)?;
    change_limits(&state, &name, None).await
}

async fn change_limits(
    state: &AppState,
    name: &str,
    limits: Option<FlowLimits>,
) -> Result<Json<WorkerInfo>, ApiError> {
    state
        .host
        .set_worker_limits(name, limits)
        .map_err(|error| match error {
            PauseError::Unknown(_) => ApiError::NotFound(error.to_string()),
            PauseError::Store(error) => error.into(),
        })?;
    let worker = state
        .host
        .workers()
        .get(Some(name))
        .map_err(|unknown| ApiError::NotFound(unknown.to_string()))?;
    Ok(Json(shown(state, worker.info()).await))
}
