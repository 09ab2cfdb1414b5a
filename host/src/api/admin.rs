//! The admin endpoints' guard: a bearer token, compared in constant time, checked before the
//! body is read.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest as _, Sha256};

use super::AppState;
use super::error::{ApiError, ErrorBody};

/// Declares the admin endpoints' bearer token in the document.
pub(super) struct AdminBearer;

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

/// The admin token, kept only as its SHA-256 so that comparing takes the same time whatever
/// the guess, its length included.
#[derive(Debug)]
pub(super) struct AdminToken([u8; 32]);

impl AdminToken {
    pub(super) fn new(token: &str) -> Self {
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
