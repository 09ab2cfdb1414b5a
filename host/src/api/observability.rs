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
