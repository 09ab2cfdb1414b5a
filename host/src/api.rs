//! The HTTP API: the router, its handlers and their request and response bodies.
//!
//! `POST /api/tasks` validates, asks admission for a place, records the task and hands it to
//! the scheduler, and answers `202` at once; nothing here waits on a guest.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tower_http::trace::TraceLayer;

use crate::capture::LogLine;
use crate::config::{
    Config, DEFAULT_DURATION_SECS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_NAME_BYTES,
    DEFAULT_RETRY_AFTER_SECS, MAX_ATTEMPTS_LIMIT, is_worker_name,
};
use crate::error::ApiError;
use crate::events::{Subscription, exit_data};
use crate::host::{Host, KillError, NewTask, SpawnError, Totals};
use crate::sandbox::LoadError;
use crate::table::{ListQuery, Page, Pid, Status, TaskRecord};
use crate::workers::{InstallError, RollbackError, Source, WorkerInfo};

/// What a request may ask for.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    /// Largest module an upload may carry.
    pub max_module_bytes: usize,
    pub max_name_bytes: usize,
    pub max_duration_secs: u32,
    pub max_deadline_secs: u32,
}

impl RequestLimits {
    /// The limits `config` sets. Durations are bounded here by the most any worker allows;
    /// the host holds each task to its own worker's limit.
    pub fn from_config(config: &Config) -> Self {
        let max_duration_secs = config
            .workers
            .iter()
            .map(|worker| worker.max_duration_secs)
            .chain([config.max_duration_secs])
            .max()
            .unwrap_or(config.max_duration_secs);
        Self {
            max_body_bytes: config.max_body_bytes,
            max_module_bytes: config.max_module_bytes,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_duration_secs,
            max_deadline_secs: max_duration_secs.saturating_add(config.deadline_grace_secs),
        }
    }
}

/// The handlers' shared state: a cheap handle, cloned per request.
#[derive(Debug, Clone)]
pub struct AppState {
    host: Arc<Host>,
    limits: Arc<RequestLimits>,
    /// The SHA-256 of the admin token; `None` switches the admin endpoints off.
    admin: Option<Arc<AdminToken>>,
}

/// The API's routes. `admin_token`, when set, opens the admin endpoints to requests that
/// carry it as a bearer token.
pub fn router(host: Arc<Host>, limits: RequestLimits, admin_token: Option<&str>) -> Router {
    let max_body_bytes = limits.max_body_bytes;
    let max_module_bytes = limits.max_module_bytes;
    let state = AppState {
        host,
        limits: Arc::new(limits),
        admin: admin_token.map(|token| Arc::new(AdminToken::new(token))),
    };
    let admin = Router::new()
        .route(
            "/api/workers/{name}",
            put(install_worker).layer(DefaultBodyLimit::max(max_module_bytes)),
        )
        .route("/api/workers/{name}/rollback", post(rollback_worker))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .merge(admin)
        .route("/api/workers", get(list_workers))
        .route("/api/workers/{name}", get(get_worker))
        .route("/api/tasks", post(spawn_task).get(list_tasks))
        .route("/api/tasks/{pid}", get(get_task).delete(kill_task))
        .route("/api/tasks/{pid}/logs", get(get_logs))
        .route("/api/tasks/{pid}/events", get(task_events))
        .route("/api/events", get(all_events))
        .route("/api/health", get(health))
        .route("/", get(dashboard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Spawned {
    pid: Pid,
    name: String,
    status: Status,
    message: String,
}

async fn spawn_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: state.limits.max_body_bytes,
        },
        _ => ApiError::BadRequest(rejection.body_text()),
    })?;
    let task = parse_submission(&body, &state.limits)?;
    let (name, duration) = (task.name.clone(), task.duration);
    let pid = state.host.spawn(task).map_err(|error| match error {
        SpawnError::Full { .. } => ApiError::Full {
            message: error.to_string(),
            retry_after: DEFAULT_RETRY_AFTER_SECS,
        },
        SpawnError::ShuttingDown => ApiError::Unavailable {
            message: error.to_string(),
            retry_after: DEFAULT_RETRY_AFTER_SECS,
        },
        SpawnError::UnknownWorker { .. } | SpawnError::TooLong { .. } => {
            ApiError::BadRequest(error.to_string())
        }
    })?;
    let body = Spawned {
        pid,
        message: format!("Process {pid} will run for {duration} seconds"),
        name,
        status: Status::Spawned,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/tasks/{pid}"))],
        Json(body),
    )
        .into_response())
}

/// Whether the request says its body is JSON: `application/json` or `application/<x>+json`,
/// parameters such as `charset` allowed.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

/// Validates a `POST /api/tasks` body: every rule of the API, with a message naming the field.
pub fn parse_submission(body: &[u8], limits: &RequestLimits) -> Result<NewTask, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let name = match fields.remove("name") {
        None | Some(Value::Null) => return Err(bad("name is required".into())),
        Some(Value::String(name)) => name,
        Some(_) => return Err(bad("name must be a string".into())),
    };
    if name.trim().is_empty() {
        return Err(bad("name must not be empty".into()));
    }
    if name.len() > limits.max_name_bytes {
        return Err(bad(format!(
            "name must be at most {} bytes",
            limits.max_name_bytes
        )));
    }
    let duration = match fields.remove("duration") {
        None | Some(Value::Null) => DEFAULT_DURATION_SECS,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) if secs <= u64::from(limits.max_duration_secs) => secs as u32,
            Some(_) => {
                return Err(bad(format!(
                    "duration must be at most {} seconds",
                    limits.max_duration_secs
                )));
            }
            None => return Err(bad(DURATION_TYPE.into())),
        },
        Some(_) => return Err(bad(DURATION_TYPE.into())),
    };
    let deadline = match fields.remove("deadline") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) if secs <= u64::from(limits.max_deadline_secs) => Some(secs as u32),
            Some(_) => {
                return Err(bad(format!(
                    "deadline must be at most {} seconds",
                    limits.max_deadline_secs
                )));
            }
            None => return Err(bad(DEADLINE_TYPE.into())),
        },
        Some(_) => return Err(bad(DEADLINE_TYPE.into())),
    };
    let max_attempts = match (fields.remove("restart"), fields.remove("max_attempts")) {
        // The worker's own policy.
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        (Some(Value::String(policy)), attempts) if policy == "on-failure" => match attempts {
            None | Some(Value::Null) => Some(DEFAULT_MAX_ATTEMPTS),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if (2..=u64::from(MAX_ATTEMPTS_LIMIT)).contains(&n) => Some(n as u32),
                _ => return Err(bad(MAX_ATTEMPTS_RANGE.into())),
            },
            Some(_) => return Err(bad(MAX_ATTEMPTS_RANGE.into())),
        },
        (Some(Value::String(policy)), None | Some(Value::Null)) if policy == "never" => Some(1),
        (Some(Value::String(policy)), Some(_)) if policy == "never" => {
            return Err(bad("max_attempts goes with restart: \"on-failure\"".into()));
        }
        (None | Some(Value::Null), Some(_)) => {
            return Err(bad("max_attempts goes with restart: \"on-failure\"".into()));
        }
        (Some(_), _) => {
            return Err(bad("restart must be \"never\" or \"on-failure\"".into()));
        }
    };
    let worker = match fields.remove("worker") {
        None | Some(Value::Null) => None,
        Some(Value::String(worker)) if is_worker_name(&worker) => Some(worker),
        Some(_) => return Err(bad(WORKER_TYPE.into())),
    };
    let payload = match fields.remove("payload") {
        None | Some(Value::Null) => None,
        Some(payload) => Some(payload.to_string()),
    };
    Ok(NewTask {
        name,
        worker,
        duration,
        payload,
        deadline,
        max_attempts,
    })
}

const DURATION_TYPE: &str = "duration must be a non-negative integer number of seconds";
const DEADLINE_TYPE: &str = "deadline must be a non-negative integer number of seconds";
const WORKER_TYPE: &str = "worker must be a worker's name (A-Z, a-z, 0-9, '_', '-')";
const MAX_ATTEMPTS_RANGE: &str = "max_attempts must be an integer from 2 to 10";

/// The `{pid}` of a task path: a path that is not even text names no task.
fn task_path(path: Result<Path<String>, PathRejection>) -> Result<(String, Pid), ApiError> {
    let Path(pid) = path.map_err(|_| ApiError::NotFound("no task at that path".into()))?;
    let id = pid
        .parse()
        .map_err(|()| ApiError::NotFound(format!("no task with pid {pid:?}")))?;
    Ok((pid, id))
}

async fn get_task(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskRecord>, ApiError> {
    let (pid, id) = task_path(path)?;
    state
        .host
        .get(id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no task with pid {pid:?}")))
}

/// Tasks per page when the client names no `limit`, and the most it may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `GET /api/tasks` query parameters.
#[derive(Debug, Deserialize)]
struct ListParams {
    status: Option<Status>,
    name: Option<String>,
    worker: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/tasks?status=&name=&before=&limit=`: tasks newest first; `next` is the cursor
/// for the following page.
async fn list_tasks(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; status is one of spawned, running, exited, failed, killed, limit is 1 to {MAX_PAGE}",
            rejection.body_text()
        ))
    })?;
    let before = params
        .before
        .map(|pid| {
            pid.parse::<Pid>()
                .map_err(|()| ApiError::BadRequest(format!("before: {pid:?} is not a pid")))
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(Json(state.host.list(&ListQuery {
        status: params.status,
        name: params.name,
        worker: params.worker,
        before,
        limit,
    })))
}

/// How long `DELETE` waits for the kill to be recorded before it answers `202` instead.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `DELETE /api/tasks/{pid}`: kills the task; answers its record once the kill is recorded
/// (`200`), or `202` if a running step has not returned yet.
async fn kill_task(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (pid, id) = task_path(path)?;
    state.host.kill(id).map_err(|error| match error {
        KillError::NotFound(_) => ApiError::NotFound(error.to_string()),
        KillError::AlreadyEnded { .. } => ApiError::Conflict(error.to_string()),
    })?;
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    let mut last = None;
    loop {
        // A record evicted from the history meanwhile has ended: answer with the last seen.
        let Some(record) = state.host.get(id).or_else(|| last.take()) else {
            return Err(ApiError::NotFound(format!("no task with pid {pid:?}")));
        };
        if record.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            let status = if record.status.is_terminal() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            return Ok((status, Json(record)).into_response());
        }
        last = Some(record);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[derive(Debug, Serialize)]
struct Logs {
    pid: Pid,
    status: Status,
    lines: Vec<LogLine>,
    dropped_bytes: u64,
}

async fn get_logs(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Logs>, ApiError> {
    let (pid, id) = task_path(path)?;
    let record = state
        .host
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no task with pid {pid:?}")))?;
    Ok(Json(Logs {
        pid: record.pid,
        status: record.status,
        lines: record.logs,
        dropped_bytes: record.logs_dropped_bytes,
    }))
}

/// An open event stream's state.
struct EventStream {
    subscription: Subscription,
    host: Arc<Host>,
    /// Only this task's events, and end after its exit; all tasks' otherwise.
    pid: Option<Pid>,
    /// Events to send before anything from the channel.
    queued: VecDeque<Event>,
    done: bool,
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
        loop {
            let received = tokio::select! {
                received = stream.subscription.receiver.recv() => received,
                // The host is shutting down: end the stream so the server can stop.
                _ = stream.subscription.closed.wait_for(|closed| *closed) => return None,
            };
            match received {
                Ok(published) if stream.pid.is_none_or(|pid| pid == published.pid) => {
                    stream.done = stream.pid.is_some() && published.kind == "exit";
                    return Some((Ok(sse(published.kind, &published.data)), stream));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(skipped)) => {
                    // The skipped events may have held this task's exit: look at its record.
                    if let Some(record) = stream.pid.and_then(|pid| stream.host.get(pid))
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

fn subscribe(state: &AppState) -> Result<Subscription, ApiError> {
    state.host.subscribe().ok_or_else(|| {
        ApiError::TooManyRequests("too many event streams are open; retry later".into())
    })
}

/// `GET /api/tasks/{pid}/events`: the task's state now, then its events as they happen,
/// ending with its exit. For an ended task: its state and its exit, then the stream closes.
async fn task_events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (pid, id) = task_path(path)?;
    // Subscribe first, then read the record: nothing can happen unseen in between.
    let subscription = subscribe(&state)?;
    let record = state
        .host
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no task with pid {pid:?}")))?;
    let snapshot =
        serde_json::to_string(&record).map_err(|error| ApiError::Internal(error.to_string()))?;
    let mut queued = VecDeque::from([sse("state", &snapshot)]);
    let done = record.status.is_terminal();
    if done {
        queued.push_back(sse("exit", &exit_data(&record).to_string()));
    }
    let stream = EventStream {
        subscription,
        host: Arc::clone(&state.host),
        pid: Some(id),
        queued,
        done,
    };
    Ok(Sse::new(event_stream(stream)).keep_alive(KeepAlive::default()))
}

/// `GET /api/events`: every task's events as they happen, until the client goes away.
async fn all_events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = EventStream {
        subscription: subscribe(&state)?,
        host: Arc::clone(&state.host),
        pid: None,
        queued: VecDeque::new(),
        done: false,
    };
    Ok(Sse::new(event_stream(stream)).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    live: u32,
    capacity: u32,
    queued: usize,
    tasks: Totals,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        live: state.host.live(),
        capacity: state.host.capacity(),
        queued: state.host.queued(),
        tasks: state.host.totals(),
    })
}

/// The admin token, kept only as its SHA-256 so that comparing takes the same time whatever
/// the guess, its length included.
#[derive(Debug)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = self
            .0
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Lets a request through to an admin endpoint only with the right bearer token: `403` when
/// no token is configured or the token is wrong, `401` when none is presented. Runs before the
/// body is read, so an unauthorised upload costs nothing.
async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = &state.admin else {
        return Err(ApiError::Forbidden(
            "admin endpoints are disabled: start the host with HTTP_SPAWN_ADMIN_TOKEN (or \
             --admin-token) to enable them"
                .into(),
        ));
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        None => Err(ApiError::Unauthorized(
            "this endpoint needs the admin token: Authorization: Bearer <token>".into(),
        )),
        Some(presented) if token.matches(presented) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::Forbidden("wrong admin token".into())),
    }
}

fn worker_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(name)| name)
        .map_err(|_| ApiError::NotFound("no worker at that path".into()))
}

#[derive(Debug, Serialize)]
struct WorkerList {
    workers: Vec<WorkerInfo>,
}

/// `GET /api/workers`: every worker with its current and previous module versions.
async fn list_workers(State(state): State<AppState>) -> Json<WorkerList> {
    Json(WorkerList {
        workers: state.host.workers().list(),
    })
}

/// `GET /api/workers/{name}`.
async fn get_worker(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let name = worker_path(path)?;
    let workers = state.host.workers();
    workers
        .get(Some(&name))
        .map(|worker| Json(worker.info()))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no worker named {name:?}; the workers are: {}",
                workers.names()
            ))
        })
}

#[derive(Debug, Serialize)]
struct InstalledBody {
    /// False when the upload is the version already current.
    changed: bool,
    worker: WorkerInfo,
}

/// `PUT /api/workers/{name}` (admin): a new module version for the worker's new tasks,
/// published only once it compiled, fits the `worker` world and passed a smoke run.
async fn install_worker(
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
        tokio::task::spawn_blocking(move || workers.install(&name, &body, Source::Upload))
            .await
            .map_err(|error| ApiError::Internal(format!("install task failed: {error}")))?;
    match installed {
        Ok(installed) => Ok(Json(InstalledBody {
            changed: installed.changed,
            worker: installed.worker,
        })),
        Err(error @ InstallError::Unknown { .. }) => Err(ApiError::NotFound(error.to_string())),
        Err(InstallError::Refused(error @ LoadError::NotComponent(_))) => {
            Err(ApiError::BadRequest(error.to_string()))
        }
        Err(InstallError::Refused(error)) => Err(ApiError::Unprocessable(error.to_string())),
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
async fn rollback_worker(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let name = worker_path(path)?;
    state
        .host
        .workers()
        .rollback(&name)
        .map(Json)
        .map_err(|error| match error {
            RollbackError::Unknown { .. } => ApiError::NotFound(error.to_string()),
            RollbackError::NoPrevious(_) => ApiError::Conflict(error.to_string()),
        })
}

/// The live dashboard: one self-contained page, embedded in the binary so it works offline.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DASHBOARD_HTML,
    )
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            max_body_bytes: 1024,
            max_module_bytes: 1024,
            max_name_bytes: 8,
            max_duration_secs: 60,
            max_deadline_secs: 90,
        }
    }

    fn parse(body: &str) -> Result<NewTask, String> {
        parse_submission(body.as_bytes(), &limits()).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_seed_body_and_defaults_the_duration() {
        assert_eq!(
            parse(r#"{"name":"report","duration":5}"#),
            Ok(NewTask {
                name: "report".into(),
                worker: None,
                duration: 5,
                payload: None,
                deadline: None,
                max_attempts: None,
            })
        );
        assert_eq!(parse(r#"{"name":"report"}"#).map(|s| s.duration), Ok(3));
        assert_eq!(
            parse(r#"{"name":"r","payload":{"a":[1]}}"#).map(|s| s.payload),
            Ok(Some(r#"{"a":[1]}"#.into()))
        );
    }

    #[test]
    fn rejects_each_bad_field_with_its_reason() {
        for (body, reason) in [
            ("{", "invalid JSON"),
            ("[]", "JSON object"),
            ("{}", "name is required"),
            (r#"{"name":7}"#, "name must be a string"),
            (r#"{"name":"  "}"#, "must not be empty"),
            (r#"{"name":"much too long"}"#, "at most 8 bytes"),
            (r#"{"name":"a","duration":-1}"#, "non-negative integer"),
            (r#"{"name":"a","duration":1.5}"#, "non-negative integer"),
            (r#"{"name":"a","duration":"5"}"#, "non-negative integer"),
            (r#"{"name":"a","duration":61}"#, "at most 60 seconds"),
            (
                r#"{"name":"a","deadline":-2}"#,
                "deadline must be a non-negative",
            ),
            (
                r#"{"name":"a","deadline":91}"#,
                "deadline must be at most 90",
            ),
        ] {
            let error = parse(body).expect_err(body);
            assert!(error.contains(reason), "{body}: {error}");
        }
    }

    #[test]
    fn recognises_json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header value"));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
