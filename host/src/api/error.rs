//! The API's errors: each maps to a status code and a JSON body `{"error": "..."}`. Internal
//! detail is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::store::StoreError;

/// How long a client refused an event stream is asked to wait.
const SUBSCRIBER_RETRY_AFTER_SECS: u32 = 5;
/// How long a client refused for capacity, a shutdown or a store that cannot write is asked
/// to wait.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The body of every error answer, for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    error: String,
}

/// What any route may answer whatever its handler does, for the document: the head is
/// checked before routing, and a host out of connections or with a store that cannot answer
/// refuses any request.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "describes answers `ApiError`, the limits and the server give, for the document"
)]
pub(super) enum AnyRoute {
    /// A change asked by a browser's page of another site (its `Origin` or `Sec-Fetch-Site`).
    #[response(status = 403)]
    CrossSite(ErrorBody),
    /// The request's `Host` is not one this host serves: without API tokens, a loopback name or
    /// `--advertise-address`.
    #[response(status = 421)]
    Misdirected(ErrorBody),
    /// The request's head is over --max-header-bytes.
    #[response(status = 431)]
    HeadTooLarge(ErrorBody),
    /// The host cannot answer now: its store cannot, it is shutting down, or it holds
    /// --max-connections connections.
    #[response(status = 503, headers(
        ("Retry-After" = u32, description = "Seconds to wait before trying again")))]
    Unavailable(ErrorBody),
}

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: the message says how.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the resource's state, such as killing an ended task.
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request headers are larger than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("request body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is not of a type this endpoint takes: the message names the right one.
    #[error("{0}")]
    UnsupportedBody(String),
    /// The request needs credentials it did not carry, or carried wrong ones.
    #[error("{message}")]
    Unauthorized {
        message: String,
        /// The `WWW-Authenticate` challenge: the scheme and realm to use.
        challenge: &'static str,
    },
    /// The credentials are wrong, the endpoint is switched off, or a browser's page of another
    /// site asked for a change.
    #[error("{0}")]
    Forbidden(String),
    /// The request names a host this one does not serve (its `Host`).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// The request is well-formed but its content was refused: the message says why.
    #[error("{0}")]
    Unprocessable(String),
    /// Too many of something the client holds open (event streams).
    #[error("{0}")]
    TooManyRequests(String),
    /// Every place is taken and the wait queue is full.
    #[error("{message}")]
    Full { message: String, retry_after: u32 },
    /// The host is full or stopping; the client may retry after this many seconds.
    #[error("{message}")]
    Unavailable { message: String, retry_after: u32 },
    /// Something on our side broke; the detail goes to the log, not to the client.
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType | Self::UnsupportedBody(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests(_) | Self::Full { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let Self::Unauthorized { challenge, .. } = &self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        let retry_after = match self {
            Self::Unavailable { retry_after, .. } | Self::Full { retry_after, .. } => {
                Some(retry_after)
            }
            Self::TooManyRequests(_) => Some(SUBSCRIBER_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A store that cannot answer now: the client may retry.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::KeyTaken | StoreError::NotDelivered => Self::Conflict(error.to_string()),
            // The request's own content: the same request will never be taken.
            StoreError::Refused(_) => Self::Unprocessable(error.to_string()),
            StoreError::Unavailable(_) | StoreError::Fenced => {
                tracing::warn!(%error, "the task store could not answer a request");
                Self::Unavailable {
                    message: error.to_string(),
                    retry_after: RETRY_AFTER_SECS,
                }
            }
        }
    }
}
