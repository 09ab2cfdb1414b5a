//! Who may use the API: bearer tokens, kept as SHA-256 digests and compared in constant time
//! (the admin guard in `admin` uses them too), the guard of the API routes, and the sign-in
//! session (see `session`) that stands for an API token in the dashboard, whose page and event
//! streams cannot send an `Authorization` header.
//!
//! With API tokens configured (`--api-token`), every `/api` route but the health probe and
//! this document, and the dashboard page, need one of them: `Authorization: Bearer <token>`,
//! or the session cookie `POST /api/session` sets from that header, on a request from the
//! host's own origin. `/metrics`, `/api/health` and
//! `/api/openapi.json` stay open: probes and scrapers carry no token, and none of them shows a
//! task or runs anything. The admin endpoints take the admin token alone (a request carries one
//! bearer token, and the admin token is the stronger secret), so they sit outside this guard.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::AppState;
use super::error::{AnyRoute, ApiError, ErrorBody};
use super::session::{self, Invalid, Sessions};
/// The challenge of a `401` from the API guard.
pub(super) const API_CHALLENGE: &str = "Bearer realm=\"http-spawn\"";
/// The challenge of a `401` whose token was presented and refused (RFC 6750, section 3.1).
const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"http-spawn\", error=\"invalid_token\"";

/// Secrets kept only as their SHA-256 digests, so that comparing a guess with them takes the
/// same time whatever the guess, its length included.
pub(super) struct Tokens(Vec<[u8; 32]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Tokens").field(&self.0.len()).finish()
    }
}

impl Tokens {
    pub(super) fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            tokens
                .into_iter()
                .map(|token| Sha256::digest(token.as_bytes()).into())
                .collect(),
        )
    }

    /// Whether `presented` is one of the tokens. Every token is compared, whole, so the time
    /// taken says neither where a guess differs nor which token matched.
    pub(super) fn accept(&self, presented: &str) -> bool {
        self.find(presented).is_some()
    }

    /// Which of the tokens `presented` is, compared as [`Tokens::accept`] does.
    fn find(&self, presented: &str) -> Option<usize> {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let found = self
            .0
            .iter()
            .enumerate()
            .fold(usize::MAX, |found, (i, token)| {
                let difference = token
                    .iter()
                    .zip(presented)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b));
                // All ones where this token matched: chosen by a mask, not a branch.
                let equal = usize::from(std::hint::black_box(difference) == 0).wrapping_neg();
                (found & !equal) | (i & equal)
            });
        (found != usize::MAX).then_some(found)
    }
}

/// What opens the API: its tokens, and the sign-in sessions they open.
#[derive(Debug)]
pub(super) struct ApiAccess {
    pub(super) tokens: Tokens,
    pub(super) sessions: Sessions,
}

impl ApiAccess {
    /// Access for `tokens`, with sign-in sessions lasting `session_ttl`.
    pub(super) fn new(tokens: &[String], session_ttl: std::time::Duration) -> Self {
        let tokens = Tokens::new(tokens.iter().map(String::as_str));
        let sessions = Sessions::new(&tokens.0, session_ttl);
        Self { tokens, sessions }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a request without an accepted API token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Neither a bearer token nor the cookie.
    Missing,
    /// A bearer token that is none of the host's.
    WrongToken,
    /// The session cookie is not one of this host's (or its token was rotated out since), or
    /// it is the cookie of an earlier version, which held the token itself.
    WrongCookie,
    /// The session expired, or was signed out.
    Expired,
    /// The session cookie came with a request from another origin's page.
    Foreign,
}

/// Lets a request in when it carries one of the tokens in its `Authorization` header, which
/// alone decides when present, or else a live session cookie, from the host's own origin.
pub(super) fn check(access: &ApiAccess, headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.contains_key(header::AUTHORIZATION) {
        return match bearer(headers) {
            None => Err(Refusal::Missing),
            Some(token) if access.tokens.accept(token) => Ok(()),
            Some(_) => Err(Refusal::WrongToken),
        };
    }
    let Some(value) = session::cookie(headers) else {
        return Err(if session::legacy_cookie(headers) {
            Refusal::WrongCookie
        } else {
            Refusal::Missing
        });
    };
    if super::browser::foreign(headers) {
        return Err(Refusal::Foreign);
    }
    match access.sessions.check(value) {
        Ok(()) => Ok(()),
        Err(Invalid::Unknown) => Err(Refusal::WrongCookie),
        Err(Invalid::Expired) => Err(Refusal::Expired),
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let (message, challenge) = match refusal {
            Refusal::Missing => (
                "this host needs an API token: Authorization: Bearer <token> (in a browser, \
                 sign in at /)",
                API_CHALLENGE,
            ),
            Refusal::WrongToken => (
                "the API token presented is not one this host accepts",
                INVALID_TOKEN_CHALLENGE,
            ),
            Refusal::WrongCookie => (
                "the sign-in cookie is not one this host accepts (its token may have been \
                 rotated out): sign in again at /",
                INVALID_TOKEN_CHALLENGE,
            ),
            Refusal::Expired => (
                "the sign-in session has expired or was signed out: sign in again at /",
                INVALID_TOKEN_CHALLENGE,
            ),
            Refusal::Foreign => {
                return Self::Forbidden(
                    "the sign-in cookie is taken only from the host's own pages: this request \
                     came from another origin's"
                        .into(),
                );
            }
        };
        Self::Unauthorized {
            message: message.into(),
            challenge,
        }
    }
}

/// Lets a request through to an API route only with an accepted token (see [`check`]); `401`
/// otherwise. Runs before the body is read, so an unauthorised request costs nothing. Layered
/// only when the host has tokens: an open host pays nothing for it.
pub(super) async fn require_api_token(
    State(access): State<Arc<ApiAccess>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&access, request.headers())?;
    Ok(next.run(request).await)
}

/// Declares the bearer tokens in the document: the admin token's and the API's.
pub(super) struct BearerSchemes;

impl utoipa::Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "admin_token",
            scheme("The admin token (--admin-token), for worker uploads and rollbacks."),
        );
        components.add_security_scheme(
            "api_token",
            scheme(&format!(
                "One of the host's API tokens (--api-token), when it has any. The session \
                 cookie `{}` that POST /api/session sets is taken in its place from the \
                 host's own pages.",
                session::COOKIE
            )),
        );
    }
}

/// What a guarded API route answers a request without an accepted API token.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "describes the answer `require_api_token` gives, for the document"
)]
pub(super) enum ApiRefusal {
    /// No API token presented, or not one the host accepts.
    #[response(status = 401, headers(
        ("WWW-Authenticate" = String, description = "The scheme to use: `Bearer`")))]
    Unauthorized(ErrorBody),
}

/// What the dashboard answers a browser without an accepted API token.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "describes the answer `dashboard` gives, for the document"
)]
pub(super) enum PageRefusal {
    /// The sign-in page instead of the dashboard.
    #[response(status = 401, content_type = "text/html", headers(
        ("WWW-Authenticate" = String, description = "The scheme to use: `Bearer`")))]
    SignIn(String),
}

/// Marks every operation of `openapi` (one part of the API, before it is merged) as needing
/// an API token, answering `refusal` without one. Only a host with tokens says so: an open
/// host's document describes an open API, and a fuzzer checking that declared auth is
/// enforced finds nothing declared.
pub(super) fn require_in_document(
    openapi: &mut utoipa::openapi::OpenApi,
    refusal: &std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    >,
) {
    use utoipa::openapi::security::SecurityRequirement;
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![SecurityRequirement::new("api_token", [] as [&str; 0])]);
            operation
                .responses
                .responses
                .extend(refusal.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

/// The page a browser gets at `/` without an accepted API token: a form that sends the token
/// once to `POST /api/session`, in a header, never in a URL.
const SIGN_IN_HTML: &str = include_str!("dashboard/sign-in.html");

/// The sign-in page, answered `401` in the dashboard's place.
pub(super) fn sign_in_page(refusal: Refusal) -> Response {
    let challenge = match refusal {
        Refusal::Missing => API_CHALLENGE,
        Refusal::WrongToken | Refusal::WrongCookie | Refusal::Expired | Refusal::Foreign => {
            INVALID_TOKEN_CHALLENGE
        }
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, challenge),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        super::browser::PAGE_HEADERS,
        SIGN_IN_HTML,
    )
        .into_response()
}

/// `POST /api/session`: trades the bearer token for a sign-in session (see `session`): a
/// cookie holding a random, expiring session id, `HttpOnly` (the page's scripts never see it)
/// and `SameSite=Strict`, which the dashboard's requests and event streams then carry. Without
/// API tokens on the host, or when the request came in with the cookie alone, nothing is set.
#[utoipa::path(post, path = "/api/session", tag = "auth",
    responses(
        (status = 204, description = "Signed in: the cookie is set when the host has API tokens",
            headers(("Set-Cookie" = String,
                description = "`http_spawn_session` (`__Host-http_spawn_session` over HTTPS): \
                               a session id, `HttpOnly; SameSite=Strict; Path=/; Max-Age` \
                               (--session-ttl)"))),
        (status = 503, description = "The system gave no randomness for a session id",
            body = ErrorBody),
        AnyRoute))]
pub(super) async fn sign_in(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = (
        StatusCode::NO_CONTENT,
        [(header::CACHE_CONTROL, "no-store")],
    )
        .into_response();
    // The guard has accepted the bearer token.
    if let Some(access) = &state.api
        && let Some(index) = bearer(&headers).and_then(|token| access.tokens.find(token))
    {
        let Some(value) = access.sessions.open(index) else {
            return ApiError::Unavailable {
                message: "the system gave no randomness for a session id: try again".into(),
                retry_after: 1,
            }
            .into_response();
        };
        for cookie in access.sessions.set_cookies(&value, &headers) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// `DELETE /api/session`: signs the browser out. Its session cookie is cleared, and the
/// session is refused from now on. Open to any request (it can only end the session it
/// carries); a browser's cross-origin `DELETE` is refused as any cross-origin write.
#[utoipa::path(delete, path = "/api/session", tag = "auth",
    responses(
        (status = 204, description = "Signed out: the sign-in cookies are cleared",
            headers(("Set-Cookie" = String, description = "The sign-in cookies, `Max-Age=0`"))),
        AnyRoute))]
pub(super) async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(access) = &state.api
        && let Some(value) = session::cookie(&headers)
    {
        access.sessions.close(value);
    }
    let mut response = (
        StatusCode::NO_CONTENT,
        [(header::CACHE_CONTROL, "no-store")],
    )
        .into_response();
    for cookie in session::clear_cookies(&headers) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    name.clone(),
                    HeaderValue::from_str(value).expect("a header value"),
                )
            })
            .collect()
    }

    #[test]
    fn any_token_of_the_set_is_accepted_and_nothing_else() {
        let tokens = Tokens::new(["0123456789abcdef", "fedcba9876543210"]);
        assert!(tokens.accept("0123456789abcdef"));
        assert!(tokens.accept("fedcba9876543210"));
        assert!(!tokens.accept("0123456789abcde"));
        assert!(!tokens.accept(""));
        assert!(!Tokens::new([]).accept(""));
    }

    #[test]
    fn the_header_decides_when_present_else_a_session_from_the_hosts_own_origin() {
        let access = ApiAccess::new(
            &["0123456789abcdef".to_owned()],
            std::time::Duration::from_secs(60),
        );
        let session = access.sessions.open(0).expect("randomness");
        let good_cookie = format!("theme=dark; {}={session}", session::COOKIE);
        let bad_cookie = format!("{}=v1.1.00.00", session::COOKIE);
        let legacy_cookie = "http_spawn_token=0123456789abcdef";
        for (request, expected) in [
            (headers(&[]), Err(Refusal::Missing)),
            (
                headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef")]),
                Ok(()),
            ),
            (
                headers(&[(header::AUTHORIZATION, "bearer  0123456789abcdef ")]),
                Ok(()),
            ),
            (
                headers(&[(header::AUTHORIZATION, "Basic MDEyMzQ1Njc4OWFiY2RlZg==")]),
                Err(Refusal::Missing),
            ),
            (
                headers(&[(header::AUTHORIZATION, "Bearer nope")]),
                Err(Refusal::WrongToken),
            ),
            (
                headers(&[
                    (header::AUTHORIZATION, "Bearer nope"),
                    (header::COOKIE, &good_cookie),
                ]),
                Err(Refusal::WrongToken),
            ),
            (headers(&[(header::COOKIE, &good_cookie)]), Ok(())),
            (
                headers(&[
                    (header::COOKIE, &good_cookie),
                    (header::HOST, "127.0.0.1:8080"),
                    (header::ORIGIN, "http://127.0.0.1:3000"),
                ]),
                Err(Refusal::Foreign),
            ),
            (
                headers(&[(header::COOKIE, &bad_cookie)]),
                Err(Refusal::WrongCookie),
            ),
            (
                headers(&[(header::COOKIE, legacy_cookie)]),
                Err(Refusal::WrongCookie),
            ),
            (
                headers(&[(header::COOKIE, "other=0123456789abcdef")]),
                Err(Refusal::Missing),
            ),
        ] {
            assert_eq!(check(&access, &request), expected, "{request:?}");
        }
        access.sessions.close(&session);
        assert_eq!(
            check(&access, &headers(&[(header::COOKIE, &good_cookie)])),
            Err(Refusal::Expired)
        );
    }
}
