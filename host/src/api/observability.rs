//! What operators look at: health, Prometheus metrics, the live dashboard and this API's own
//! OpenAPI document. All but the dashboard are open whether or not the host has API tokens
//! (see `auth`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

use super::AppState;
use super::auth;
use super::error::AnyRoute;
use crate::ledger::Totals;

/// This API's OpenAPI 3 document, generated from the handlers themselves.
#[utoipa::path(get, path = "/api/openapi.json", tag = "observability",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json",
        body = Object), AnyRoute))]
pub(super) async fn openapi_document(
    Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<Arc<utoipa::openapi::OpenApi>> {
    Json(document)
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain",
        body = String), AnyRoute))]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.host.render_metrics(),
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    status: &'static str,
    live: u32,
    capacity: u32,
    queued: usize,
    tasks: Totals,
}

/// Live tasks, capacity and totals.
#[utoipa::path(get, path = "/api/health", tag = "observability",
    responses((status = 200, body = Health), AnyRoute))]
pub(super) async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        live: state.host.live(),
        capacity: state.host.capacity(),
        queued: state.host.queued(),
        tasks: state.host.totals(),
    })
}

/// The live dashboard: one self-contained page, embedded in the binary so it works offline.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");

/// The sign-out button as the page has it, hidden, and as a host with API tokens shows it.
const SIGN_OUT_HIDDEN: &str = r#"data-testid="sign-out" style="margin-left: auto" hidden>"#;
const SIGN_OUT_SHOWN: &str = r#"data-testid="sign-out" style="margin-left: auto">"#;

/// The live dashboard; on a host with API tokens, to a browser that signed in, and the
/// sign-in page (`401`) to one that did not.
#[utoipa::path(get, path = "/", tag = "observability",
    responses((status = 200, description = "The dashboard page", content_type = "text/html",
        body = String), AnyRoute))]
pub(super) async fn dashboard(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let page = match &state.api {
        Some(access) => {
            if let Err(refusal) = auth::check(access, &headers) {
                return auth::sign_in_page(refusal);
            }
            // A signed-in browser may sign out.
            DASHBOARD_HTML
                .replacen(SIGN_OUT_HIDDEN, SIGN_OUT_SHOWN, 1)
                .into()
        }
        None => std::borrow::Cow::Borrowed(DASHBOARD_HTML),
    };
    html(page)
}

/// A page of the dashboard as it is sent: HTML, checked again at every load.
fn html(page: std::borrow::Cow<'static, str>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        super::browser::PAGE_HEADERS,
        page,
    )
        .into_response()
}

/// The dashboard's task pages (the list and one task), one self-contained page that reads the
/// address it was loaded at.
const TASK_HTML: &str = include_str!("dashboard/task.html");

/// The task pages, guarded as the dashboard is: the sign-in page (`401`) to a browser that
/// did not sign in on a host with API tokens.
fn task_html(state: &AppState, headers: &HeaderMap) -> Response {
    if let Some(access) = &state.api
        && let Err(refusal) = auth::check(access, headers)
    {
        return auth::sign_in_page(refusal);
    }
    html(std::borrow::Cow::Borrowed(TASK_HTML))
}

/// The dashboard's list of tasks, with the API's filters and paging.
#[utoipa::path(get, path = "/tasks", tag = "observability",
    responses((status = 200, description = "The task list page", content_type = "text/html",
        body = String), AnyRoute))]
pub(super) async fn task_list_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    task_html(&state, &headers)
}

/// The dashboard's page of one task: its record, attempts, actor state, children, its log
/// followed live and its events.
#[utoipa::path(get, path = "/tasks/{pid}", tag = "observability",
    params(("pid" = String, Path, description = "The task's pid, or `name:<name>`")),
    responses((status = 200, description = "The task page", content_type = "text/html",
        body = String), AnyRoute))]
pub(super) async fn task_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    task_html(&state, &headers)
}
