//! The admin endpoints' guard: the admin token as a bearer token, compared in constant time
//! (see `auth`), checked before the body is read. The API tokens do not open these endpoints,
//! and the admin token alone does, whether or not the host has API tokens.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::auth::bearer;
use super::error::{ApiError, ErrorBody};

/// The challenge of a `401` from an admin endpoint.
const ADMIN_CHALLENGE: &str = "Bearer realm=\"http-spawn admin\"";

/// What an admin endpoint answers a request that may not use it, or that names no worker.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "describes answers `require_admin` and the handlers give"
)]
pub(super) enum AdminRefusal {
    /// No admin token presented.
    #[response(status = 401, headers(
        ("WWW-Authenticate" = String, description = "The scheme to use: `Bearer`")))]
    NoToken(ErrorBody),
    /// Wrong token, or admin endpoints disabled.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such worker.
    #[response(status = 404)]
    UnknownWorker(ErrorBody),
}

/// Lets a request through to an admin endpoint only with the right bearer token: `403` when
/// no token is configured or the token is wrong, `401` when none is presented. Runs before the
/// body is read, so an unauthorised upload costs nothing.
pub(super) async fn require_admin(
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
    match bearer(request.headers()) {
        None => Err(ApiError::Unauthorized {
            message: "this endpoint needs the admin token: Authorization: Bearer <token>".into(),
            challenge: ADMIN_CHALLENGE,
        }),
        Some(presented) if token.accept(presented) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::Forbidden("wrong admin token".into())),
    }
}
