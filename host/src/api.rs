//! The HTTP API: the router, its handlers and their request and response bodies.
//!
//! `POST /api/tasks` validates, asks admission for a place, records the task and hands it to
//! the scheduler, and answers `202` at once; nothing here waits on a guest.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::MatchedPath;
use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
        let max_duration_secs = config.longest_duration_secs();
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
    let (router, openapi) = api_routes(&state, max_module_bytes).split_for_parts();
    router
        .layer(Extension(Arc::new(openapi)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "http-spawn",
        description = "A WebAssembly-sandboxed task host: every task runs in its own wasmtime \
                       instance, driven step by step.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&AdminBearer),
)]
struct ApiDoc;

/// Declares the admin endpoints' bearer token in the document.
struct AdminBearer;

impl utoipa::Modify for AdminBearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route, registered together with its OpenAPI description so that the two cannot
/// drift apart: a handler is routed only through `routes!`, which also documents it.
fn api_routes(state: &AppState, max_module_bytes: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, install) = routes!(install_worker);
    let install = install.layer(DefaultBodyLimit::max(max_module_bytes));
    let admin = OpenApiRouter::new()
        .routes((schemas, paths, install))
        .routes(routes!(rollback_worker))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin)
        .routes(routes!(spawn_task, list_tasks))
        .routes(routes!(get_task, kill_task))
        .routes(routes!(get_logs))
        .routes(routes!(task_events))
        .routes(routes!(all_events))
        .routes(routes!(health))
        .routes(routes!(list_workers))
        .routes(routes!(get_worker))
        .routes(routes!(metrics))
        .routes(routes!(dashboard))
        .routes(routes!(openapi_document))
}

/// This API's OpenAPI 3 document, generated from the handlers themselves.
#[utoipa::path(get, path = "/api/openapi.json", tag = "observability",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json",
        body = Object)))]
async fn openapi_document(
    Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<Arc<utoipa::openapi::OpenApi>> {
    Json(document)
}

/// What an admin endpoint answers a request that may not use it, or that names no worker.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "describes answers `require_admin` and the handlers give"
)]
enum AdminRefusal {
    /// No admin token presented.
    #[response(status = 401)]
    NoToken(ErrorBody),
    /// Wrong token, or admin endpoints disabled.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such worker.
    #[response(status = 404)]
    UnknownWorker(ErrorBody),
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ErrorBody {
    /// What went wrong, for people.
    error: String,
}

/// Counts every answered request by method, matched route (never the raw path, whose pids
/// would make a metric per task) and status.
async fn count_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let begun = std::time::Instant::now();
    let response = next.run(request).await;
    state.host.metrics().http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        begun.elapsed(),
    );
    response
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain",
        body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.host.render_metrics(),
    )
}

/// A task as a client submits it (`POST /api/tasks`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the body `parse_submission` reads, for the document"
)]
struct TaskRequest {
    /// 1 to 256 bytes.
    #[schema(example = "generate-report")]
    name: String,
    /// The worker to run; the `default` worker when absent.
    worker: Option<String>,
    /// Seconds, at most the worker's `max_duration_secs`; 3 when absent.
    #[schema(example = 5)]
    duration: Option<u32>,
    /// Wall-clock limit in seconds from start; the duration plus the grace when absent.
    deadline: Option<u32>,
    /// `never` or `on-failure`; the worker's policy when absent.
    restart: Option<String>,
    /// With `on-failure`: attempts in all, 2 to 10 (default 3).
    max_attempts: Option<u32>,
    /// Any JSON, handed to the worker as JSON text.
    payload: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Spawned {
    #[schema(value_type = String)]
    pid: Pid,
    name: String,
    status: Status,
    message: String,
}

/// Accepts a task and answers at once; the task runs in its own instance.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = TaskRequest,
    responses(
        (status = 202, description = "Accepted; `Location` names the task", body = Spawned),
        (status = 400, description = "A bad field, or an unknown worker", body = ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 429, description = "Every place and the queue are full", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody)))]
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
    let duration = seconds(
        "duration",
        fields.remove("duration"),
        limits.max_duration_secs,
    )?
    .unwrap_or(DEFAULT_DURATION_SECS);
    let deadline = seconds(
        "deadline",
        fields.remove("deadline"),
        limits.max_deadline_secs,
    )?;
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

/// The optional whole number of seconds in `field`, at most `max`.
fn seconds(field: &str, value: Option<Value>, max: u32) -> Result<Option<u32>, ApiError> {
    let secs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(_) => None,
    }
    .ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{field} must be a non-negative integer number of seconds"
        ))
    })?;
    match u32::try_from(secs) {
        Ok(secs) if secs <= max => Ok(Some(secs)),
        _ => Err(ApiError::BadRequest(format!(
            "{field} must be at most {max} seconds"
        ))),
    }
}

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

/// A task's record.
#[utoipa::path(get, path = "/api/tasks/{pid}", tag = "tasks",
    params(("pid" = String, Path, description = "The task's pid")),
    responses((status = 200, body = TaskRecord), (status = 404, description = "No such task", body = ErrorBody)))]
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only tasks in this state.
    status: Option<Status>,
    /// Only tasks with this name.
    name: Option<String>,
    /// Only tasks of this worker.
    worker: Option<String>,
    /// Only tasks older than this pid: the previous page's `next`.
    before: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// `GET /api/tasks?status=&name=&before=&limit=`: tasks newest first; `next` is the cursor
/// for the following page.
/// Tasks, newest first, a page at a time.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(ListParams),
    responses((status = 200, body = Page),
        (status = 400, description = "A bad query parameter", body = ErrorBody)))]
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
/// Kills a task.
#[utoipa::path(delete, path = "/api/tasks/{pid}", tag = "tasks",
    params(("pid" = String, Path, description = "The task's pid")),
    responses(
        (status = 200, description = "Killed; the record shows it", body = TaskRecord),
        (status = 202, description = "A running step has not returned yet", body = TaskRecord),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has already ended", body = ErrorBody)))]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Logs {
    #[schema(value_type = String)]
    pid: Pid,
    status: Status,
    lines: Vec<LogLine>,
    dropped_bytes: u64,
}

/// What a task logged and printed, capped per task.
#[utoipa::path(get, path = "/api/tasks/{pid}/logs", tag = "tasks",
    params(("pid" = String, Path, description = "The task's pid")),
    responses((status = 200, body = Logs), (status = 404, description = "No such task", body = ErrorBody)))]
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
/// One task's events as Server-Sent Events: `state`, then `started`, `progress`, `log`,
/// `restart`, `exit`; the stream ends after `exit`.
#[utoipa::path(get, path = "/api/tasks/{pid}/events", tag = "events",
    params(("pid" = String, Path, description = "The task's pid")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream",
            body = String),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 429, description = "Too many event streams are open", body = ErrorBody)))]
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
/// Every task's events as Server-Sent Events (`spawned` too), until the client leaves.
#[utoipa::path(get, path = "/api/events", tag = "events",
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream",
            body = String),
        (status = 429, description = "Too many event streams are open", body = ErrorBody)))]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    live: u32,
    capacity: u32,
    queued: usize,
    tasks: Totals,
}

/// Live tasks, capacity and totals.
#[utoipa::path(get, path = "/api/health", tag = "observability",
    responses((status = 200, body = Health)))]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct WorkerList {
    workers: Vec<WorkerInfo>,
}

/// `GET /api/workers`: every worker with its current and previous module versions.
#[utoipa::path(get, path = "/api/workers", tag = "workers",
    responses((status = 200, body = WorkerList)))]
async fn list_workers(State(state): State<AppState>) -> Json<WorkerList> {
    Json(WorkerList {
        workers: state.host.workers().list(),
    })
}

/// `GET /api/workers/{name}`.
#[utoipa::path(get, path = "/api/workers/{name}", tag = "workers",
    params(("name" = String, Path, description = "The worker's name")),
    responses((status = 200, body = WorkerInfo), (status = 404, description = "No such worker", body = ErrorBody)))]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct InstalledBody {
    /// False when the upload is the version already current.
    changed: bool,
    worker: WorkerInfo,
}

/// `PUT /api/workers/{name}` (admin): a new module version for the worker's new tasks,
/// published only once it compiled, fits the `worker` world and passed a smoke run.
#[utoipa::path(put, path = "/api/workers/{name}", tag = "workers",
    params(("name" = String, Path, description = "The worker's name")),
    request_body(content = Vec<u8>, content_type = "application/wasm",
        description = "A WebAssembly component of the `worker` world"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Installed, or unchanged", body = InstalledBody),
        (status = 400, description = "Not a component", body = ErrorBody),
        AdminRefusal,
        (status = 413, description = "Over --max-module-bytes", body = ErrorBody),
        (status = 415, description = "Not sent as application/wasm", body = ErrorBody),
        (status = 422, description = "Refused by its checks", body = ErrorBody)))]
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
        Err(InstallError::Unknown(error)) => Err(ApiError::NotFound(error.to_string())),
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
#[utoipa::path(post, path = "/api/workers/{name}/rollback", tag = "workers",
    params(("name" = String, Path, description = "The worker's name")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Rolled back", body = WorkerInfo),
        AdminRefusal,
        (status = 409, description = "No previous version", body = ErrorBody)))]
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
            RollbackError::Unknown(_) => ApiError::NotFound(error.to_string()),
            RollbackError::NoPrevious(_) => ApiError::Conflict(error.to_string()),
        })
}

/// The live dashboard: one self-contained page, embedded in the binary so it works offline.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");

/// The live dashboard.
#[utoipa::path(get, path = "/", tag = "observability",
    responses((status = 200, description = "The dashboard page", content_type = "text/html",
        body = String)))]
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
