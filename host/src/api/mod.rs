//! The HTTP API, at the top of the host: the router and its state here, the handlers by
//! resource in the files beside it (`tasks`, `events`, `workers`, `observability`), the tokens
//! and the API's guard in `auth`, the admin guard in `admin` and the one mapping of errors to
//! answers in `error`.
//!
//! `POST /api/tasks` validates, asks admission for a place, records the task and hands it to
//! the scheduler, and answers `202` at once; nothing here waits on a guest.

mod actors;
mod admin;
mod auth;
mod browser;
mod calls;
mod cluster;
mod error;
mod events;
mod limits;
mod observability;
mod retry;
pub mod schedules;
mod session;
mod submission;
mod tasks;
mod wait;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use tower_http::trace::TraceLayer;
use utoipa::{IntoResponses as _, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use browser::BrowserPolicy;
pub use error::ApiError;
pub use submission::parse_submission;
pub use tasks::is_json;

use crate::config::Config;
use crate::host::Host;
use admin::require_admin;
use auth::{ApiAccess, ApiRefusal, BearerSchemes, PageRefusal, Tokens, require_api_token};
use error::ErrorBody;

/// What a request may ask for.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    /// Largest module an upload may carry.
    pub max_module_bytes: usize,
    pub max_name_bytes: usize,
    pub max_duration_secs: u32,
    pub max_deadline_secs: u32,
    /// Largest request head; past it, 431.
    pub max_header_bytes: usize,
    /// Most of a refused request's body read and thrown away.
    pub max_discard_bytes: usize,
    /// Longest pause while a body is sent.
    pub read_timeout: Duration,
    /// Largest message into a mailbox.
    pub max_message_bytes: usize,
    /// How long an event stream may go without an event.
    pub event_stream_idle: Duration,
    /// The longest a request may wait for a task's end, in seconds.
    pub max_wait_secs: u32,
    /// How far ahead a task may be scheduled.
    pub max_schedule_ahead: Duration,
}

impl RequestLimits {
    /// The limits `config` sets. Durations are bounded here by the most any worker allows;
    /// the host holds each task to its own worker's limit.
    pub fn from_config(config: &Config) -> Self {
        let max_duration_secs = config.longest_duration_secs();
        Self {
            max_body_bytes: config.max_body_bytes,
            max_module_bytes: config.max_module_bytes,
            max_name_bytes: crate::model::MAX_TASK_NAME_BYTES,
            event_stream_idle: config.event_stream_idle,
            max_duration_secs,
            max_deadline_secs: max_duration_secs.saturating_add(config.deadline_grace_secs),
            max_header_bytes: config.max_header_bytes,
            max_discard_bytes: config.max_discard_bytes,
            read_timeout: Duration::from_secs(config.read_timeout_secs),
            max_message_bytes: config.max_message_bytes,
            max_wait_secs: config.max_wait_secs,
            max_schedule_ahead: config.max_schedule_ahead,
        }
    }
}

/// The handlers' shared state: a cheap handle, cloned per request.
#[derive(Debug, Clone)]
pub struct AppState {
    host: Arc<Host>,
    limits: Arc<RequestLimits>,
    /// The admin token; `None` switches the admin endpoints off.
    admin: Option<Arc<Tokens>>,
    /// The API tokens, any of which opens the API and the dashboard, and the sign-in sessions
    /// they open; `None` leaves them open.
    api: Option<Arc<ApiAccess>>,
    /// Which `Host` values are served, and whether browsers' cross-site writes are refused.
    browsers: BrowserPolicy,
}

/// The API's routes. `admin_token`, when set, opens the admin endpoints to requests that
/// carry it as a bearer token; `api_tokens`, when any, are required by every other route but
/// `/metrics`, `/api/health` and `/api/openapi.json` (see `auth`).
pub fn router(
    host: Arc<Host>,
    limits: RequestLimits,
    admin_token: Option<&str>,
    api_tokens: &[String],
    session_ttl: Duration,
    browsers: BrowserPolicy,
) -> Router {
    let max_body_bytes = limits.max_body_bytes;
    let max_module_bytes = limits.max_module_bytes;
    let max_message_bytes = limits.max_message_bytes;
    let state = AppState {
        host,
        limits: Arc::new(limits),
        admin: admin_token.map(|token| Arc::new(Tokens::new([token]))),
        api: (!api_tokens.is_empty()).then(|| Arc::new(ApiAccess::new(api_tokens, session_ttl))),
        browsers,
    };
    let (router, openapi) =
        api_routes(&state, max_module_bytes, max_message_bytes).split_for_parts();
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
    modifiers(&BearerSchemes),
)]
struct ApiDoc;

/// Every route, registered together with its OpenAPI description so that the two cannot
/// drift apart: a handler is routed only through `routes!`, which also documents it. Three
/// groups: the admin routes behind the admin token, the API and the dashboard behind the API
/// tokens (when the host has any), and the open routes.
fn api_routes(
    state: &AppState,
    max_module_bytes: usize,
    max_message_bytes: usize,
) -> OpenApiRouter<AppState> {
    let (schemas, paths, install) = routes!(workers::install_worker);
    let install = install.layer(DefaultBodyLimit::max(max_module_bytes));
    let admin = OpenApiRouter::new()
        .routes((schemas, paths, install))
        .routes(routes!(workers::rollback_worker))
        .routes(routes!(workers::pause_worker))
        .routes(routes!(workers::resume_worker))
        .routes(routes!(workers::set_limits, workers::unset_limits))
        .routes(routes!(cluster::drain_node))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let mut guarded = OpenApiRouter::new()
        .routes(routes!(tasks::spawn_task, tasks::list_tasks))
        .routes(routes!(tasks::get_task, tasks::kill_task))
        .routes(routes!(tasks::get_logs))
        .routes(routes!(retry::retry_task))
        .routes(routes!(retry::retry_tasks))
        .routes(routes!(
            schedules::create_schedule,
            schedules::list_schedules
        ))
        .routes(routes!(schedules::get_schedule, schedules::delete_schedule))
        .routes(routes!(schedules::pause_schedule))
        .routes(routes!(schedules::resume_schedule))
        .routes(routes!(wait::task_result))
        .routes({
            let (schemas, paths, post) = routes!(actors::post_message);
            (
                schemas,
                paths,
                post.layer(DefaultBodyLimit::max(max_message_bytes)),
            )
        })
        .routes({
            let (schemas, paths, post) = routes!(calls::post_call);
            (
                schemas,
                paths,
                post.layer(DefaultBodyLimit::max(max_message_bytes)),
            )
        })
        .routes(routes!(actors::list_names))
        .routes(routes!(actors::get_name))
        .routes(routes!(events::task_events))
        .routes(routes!(events::all_events))
        .routes(routes!(workers::list_workers))
        .routes(routes!(workers::get_worker))
        .routes(routes!(cluster::get_cluster))
        .routes(routes!(auth::sign_in));
    // The dashboard checks the token itself: a browser without one gets the sign-in page.
    let mut page = OpenApiRouter::new()
        .routes(routes!(observability::dashboard))
        .routes(routes!(observability::task_list_page))
        .routes(routes!(observability::task_page));
    if let Some(tokens) = &state.api {
        auth::require_in_document(guarded.get_openapi_mut(), &ApiRefusal::responses());
        auth::require_in_document(page.get_openapi_mut(), &PageRefusal::responses());
        guarded = guarded.route_layer(middleware::from_fn_with_state(
            Arc::clone(tokens),
            require_api_token,
        ));
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin)
        .merge(guarded)
        .merge(page)
        .routes(routes!(observability::health))
        .routes(routes!(observability::metrics))
        .routes(routes!(observability::openapi_document))
        .routes(routes!(auth::sign_out))
}

/// Refuses what browsers must not ask (see `browser`), holds every request to its limits (see
/// `limits`) and counts every answer by method, matched route (never the raw path, whose pids
/// would make a metric per task) and status: one middleware for all, as each costs a boxed
/// future per request.
async fn count_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let begun = std::time::Instant::now();
    let mut response = match browser::refusal(&state.browsers, &request) {
        Some(refusal) => refusal.into_response(),
        None => limits::hold_to_limits(&state.limits, request, next).await,
    };
    browser::mark(&mut response);
    state.host.metrics().http_request(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
        begun.elapsed(),
    );
    response
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
